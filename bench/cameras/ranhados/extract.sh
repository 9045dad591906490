#!/bin/bash
# usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR
# Extract the Ranhados weather-station webcam frames (2,032 JPEGs, 1600x1200) into OUT_DIR/frames
# from a snapshot (a bare git directory) of github:meteoranhados/meteoranhados.github.io. Each
# frame is one version of camera/latest.jpg up to the commit the labels were made on, named
# ranhados-YYYYMMDDHHMMSS.jpg after its commit time in the commit's own zone (+0100, Lisbon
# summer time). The images are not ours to publish: keep them out of every repository.
source "$(dirname "$0")/../snapshot.sh"
snapshot_args "$@"
commit=0d939af17bcbe5fc4b2013f1cc673c1ce363868a # main on 2026-08-22 20:56 +0100, labelled
check_snapshot meteoranhados/meteoranhados.github.io "$commit"
mkdir -p "$out/frames"
git -C "$m" log --format='%H %cd' --date=format:%Y%m%d%H%M%S "$commit" -- camera/latest.jpg |
  while read -r sha when; do
    git -C "$m" cat-file blob "$sha:camera/latest.jpg" >"$out/frames/ranhados-$when.jpg"
  done
check_frames 2032
