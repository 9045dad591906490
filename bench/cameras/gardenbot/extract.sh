#!/bin/bash
# usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR
# Extract the gardenbot plant-camera frames (2,823 JPEGs, 640x480) into OUT_DIR/frames from a
# snapshot (a bare git directory) of github:surendranb/gardenbot, as of the commit the labels
# were made on: archive/YYYY-MM-DD/garden_HHMMSS.jpg (local time, Asia/Kolkata) becomes
# gardenbot-YYYYMMDDHHMMSS.jpg. The images are not ours to publish: keep them out of every
# repository.
source "$(dirname "$0")/../snapshot.sh"
snapshot_args "$@"
commit=adcff3269f077248445381cc6b400ca6fa868228 # main on 2026-06-02 12:20 +0530, labelled
check_snapshot surendranb/gardenbot "$commit"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$m" archive --format=tar "$commit:archive" | tar -x -C "$tmp"
mkdir -p "$out/frames"
for f in "$tmp"/[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]/garden_[0-9][0-9][0-9][0-9][0-9][0-9].jpg; do
  day=$(basename "$(dirname "$f")") clock=$(basename "$f" .jpg)
  mv "$f" "$out/frames/gardenbot-${day//-/}${clock#garden_}.jpg"
done
check_frames 2823
