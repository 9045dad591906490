#!/bin/bash
# usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR
# Extract the Ranhados weather-station webcam frames (2,032 JPEGs, 1600x1200) into OUT_DIR/frames
# from a snapshot (a bare git directory) of github:meteoranhados/meteoranhados.github.io. Each
# frame is one version of camera/latest.jpg up to the commit the labels were made on, named
# ranhados-YYYYMMDDHHMMSS.jpg after its commit time in the commit's own zone (+0100, Lisbon
# summer time). The images are not ours to publish: keep them out of every repository.
set -euo pipefail
usage="usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR"
out=${1:?$usage} m=${2:?$usage}
commit=0d939af17bcbe5fc4b2013f1cc673c1ce363868a # main on 2026-08-22 20:56 +0100, labelled
git -C "$m" rev-parse --git-dir >/dev/null 2>&1 || { echo "no git snapshot at $m" >&2; exit 1; }
git -C "$m" cat-file -e "$commit^{commit}" 2>/dev/null ||
  { echo "$m is not meteoranhados/meteoranhados.github.io with commit ${commit:0:12}" >&2; exit 1; }
mkdir -p "$out/frames"
git -C "$m" log --format='%H %cd' --date=format:%Y%m%d%H%M%S "$commit" -- camera/latest.jpg |
  while read -r sha when; do
    git -C "$m" cat-file blob "$sha:camera/latest.jpg" >"$out/frames/ranhados-$when.jpg"
  done
n=$(ls "$out/frames" | wc -l)
[[ $n -eq 2032 ]] || { echo "$out/frames has $n frames, expected 2032" >&2; exit 1; }
echo "$n frames in $out/frames"
