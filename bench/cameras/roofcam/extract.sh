#!/bin/bash
# usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR
# Extract the roofcam frames (2,075 JPEGs, 640x480) into OUT_DIR/frames from a snapshot (a bare
# git directory) of github:jorisroovers/roofcam: every image in samples/ at the commit the labels
# were made on. File names are kept: snapshot-YYYY-MM-DD_HH-MM-SS.jpg, the camera's local time
# (CEST, UTC+2). The repository is MIT-licensed; the frames are treated as the other cameras'
# all the same: local measurement only, never commit the images.
source "$(dirname "$0")/../snapshot.sh"
snapshot_args "$@"
commit=a4a516579f002827b83261cca987a5908bc2cfd9 # master on 2018-03-14 23:34 +0100, labelled
check_snapshot jorisroovers/roofcam "$commit"
mkdir -p "$out/frames"
git -C "$m" ls-tree "$commit" samples/ | while read -r _ _ blob path; do
  [[ $path == *.jpg ]] || continue
  git -C "$m" cat-file blob "$blob" >"$out/frames/${path#samples/}"
done
check_frames 2075
