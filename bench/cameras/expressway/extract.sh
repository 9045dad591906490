#!/bin/bash
# usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR
# Extract the expressway-camera frames (1,856 JPEGs, 1471x985, 2020-02-01..29, 08:00 to about
# 11:40 each morning) into OUT_DIR/frames from a snapshot (a bare git directory) of
# github:Z-H-XU/Benchmark-Visibility at the commit the labels were made on, names as they are
# (PublishedData/VideoFrame/DataYYYYMMDD/YYYY-MM-DD-HH-MM.jpg becomes YYYY-MM-DD-HH-MM.jpg), and
# the benchmark's own visibility measurements (one per frame, metres, PublishedData/GroundTruth)
# into OUT_DIR/visibility.csv, and as labels bench/realcam.py reads (fog: under 1,000 m) into
# OUT_DIR/visibility-labels.csv. The images are not ours to publish: keep them out of every
# repository.
source "$(dirname "$0")/../snapshot.sh"
snapshot_args "$@"
commit=8b95faf04bc69e3dada80c6d52e0fe7a42cd3c7a # main on 2026-04-03 18:01 +0800, labelled
here=$(cd "$(dirname "$0")" && pwd)
check_snapshot Z-H-XU/Benchmark-Visibility "$commit"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$m" archive --format=tar "$commit" PublishedData | tar -x -C "$tmp"
mkdir -p "$out/frames"
find "$tmp/PublishedData/VideoFrame" -name '*.jpg' -exec mv -t "$out/frames" {} +
n=1856
check_frames "$n" >/dev/null
py=${PYTHON:-python3}
"$py" "$here/visibility.py" "$tmp/PublishedData/GroundTruth" "$out/frames" > "$out/visibility.csv"
"$py" "$here/visibility.py" "$tmp/PublishedData/GroundTruth" "$out/frames" --fog-below 1000 \
  > "$out/visibility-labels.csv"
echo "$n frames in $out/frames; visibility in $out/visibility.csv (as labels: visibility-labels.csv)"
