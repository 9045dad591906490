#!/bin/bash
# usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR
# Extract the gardenbot plant-camera frames (2,823 JPEGs, 640x480) into OUT_DIR/frames from a
# snapshot (a bare git directory) of github:surendranb/gardenbot, as of the commit the labels
# were made on: archive/YYYY-MM-DD/garden_HHMMSS.jpg (local time, Asia/Kolkata) becomes
# gardenbot-YYYYMMDDHHMMSS.jpg. The images are not ours to publish: keep them out of every
# repository.
set -euo pipefail
usage="usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR"
out=${1:?$usage} m=${2:?$usage}
commit=adcff3269f077248445381cc6b400ca6fa868228 # main on 2026-06-02 12:20 +0530, labelled
git -C "$m" rev-parse --git-dir >/dev/null 2>&1 || { echo "no git snapshot at $m" >&2; exit 1; }
git -C "$m" cat-file -e "$commit^{commit}" 2>/dev/null ||
  { echo "$m is not surendranb/gardenbot with commit ${commit:0:12}" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$m" archive --format=tar "$commit:archive" | tar -x -C "$tmp"
mkdir -p "$out/frames"
for f in "$tmp"/[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]/garden_[0-9][0-9][0-9][0-9][0-9][0-9].jpg; do
  day=$(basename "$(dirname "$f")") clock=$(basename "$f" .jpg)
  mv "$f" "$out/frames/gardenbot-${day//-/}${clock#garden_}.jpg"
done
n=$(ls "$out/frames" | wc -l)
[[ $n -eq 2823 ]] || { echo "$out/frames has $n frames, expected 2823" >&2; exit 1; }
echo "$n frames in $out/frames"
