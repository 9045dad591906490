#!/bin/bash
# usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR
# Extract the growlab windowsill plant camera's frames (2,568 JPEGs, 1296x972) into OUT_DIR/frames
# from a snapshot (a bare git directory) of github:JakWai01/growlab. Each frame is one version of
# docs/preview.jpg committed by JakWai01 on branch master up to the commit the labels were made
# on (the file's earlier versions are another camera's, Alex Ellis's, before the fork), named
# growlab-YYYYMMDDHHMMSS.jpg after its commit time in the commit's own zone (+0100, London
# summer time). MIT licence (the repository's); keep the images out of every repository anyway.
set -euo pipefail
usage="usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR"
out=${1:?$usage} m=${2:?$usage}
commit=f1d17d6233791babf2154e2db43c31873fa670e5 # master on 2021-08-08 15:31 +0100, labelled
git -C "$m" rev-parse --git-dir >/dev/null 2>&1 || { echo "no git snapshot at $m" >&2; exit 1; }
git -C "$m" cat-file -e "$commit^{commit}" 2>/dev/null ||
  { echo "$m is not JakWai01/growlab with commit ${commit:0:12}" >&2; exit 1; }
mkdir -p "$out/frames"
git -C "$m" log --author=JakWai01 --format='%H %cd' --date=format:%Y%m%d%H%M%S "$commit" \
  -- docs/preview.jpg |
  while read -r sha when; do
    git -C "$m" cat-file blob "$sha:docs/preview.jpg" >"$out/frames/growlab-$when.jpg"
  done
n=$(ls "$out/frames" | wc -l)
[[ $n -eq 2568 ]] || { echo "$out/frames has $n frames, expected 2568" >&2; exit 1; }
echo "$n frames in $out/frames"
