#!/bin/bash
# usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR
# Extract the growlab windowsill plant camera's frames (2,568 JPEGs, 1296x972) into OUT_DIR/frames
# from a snapshot (a bare git directory) of github:JakWai01/growlab. Each frame is one version of
# docs/preview.jpg committed by JakWai01 on branch master up to the commit the labels were made
# on (the file's earlier versions are another camera's, Alex Ellis's, before the fork), named
# growlab-YYYYMMDDHHMMSS.jpg after its commit time in the commit's own zone (+0100, London
# summer time). MIT licence (the repository's); keep the images out of every repository anyway.
source "$(dirname "$0")/../snapshot.sh"
snapshot_args "$@"
commit=f1d17d6233791babf2154e2db43c31873fa670e5 # master on 2021-08-08 15:31 +0100, labelled
check_snapshot JakWai01/growlab "$commit"
mkdir -p "$out/frames"
git -C "$m" log --author=JakWai01 --format='%H %cd' --date=format:%Y%m%d%H%M%S "$commit" \
  -- docs/preview.jpg |
  while read -r sha when; do
    git -C "$m" cat-file blob "$sha:docs/preview.jpg" >"$out/frames/growlab-$when.jpg"
  done
check_frames 2568
