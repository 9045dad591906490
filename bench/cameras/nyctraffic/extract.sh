#!/bin/bash
# usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR
# Extract the NYC traffic-camera frames (2,349 JPEGs, 352x240) into OUT_DIR/frames from a
# snapshot (a bare git directory) of github:paulschreiber/nyc-traffic-cams at the commit the
# labels were made on: the five days the camera faced west over one crosswalk, every third
# frame in name order from the first at or after 2025-05-10 14:30:00 and before 2025-05-15
# 14:00:00 (local time, America/New_York). data/YYYY/MM/DD/YYYY-MM-DD HH:MM:SS.jpg becomes
# nyc-YYYYMMDDHHMMSS.jpg. The images are not ours to publish: keep them out of every repository.
source "$(dirname "$0")/../snapshot.sh"
snapshot_args "$@"
commit=263c8cf2e8e8f9645b1954310db33187f250e410 # main on 2025-05-16 17:16 -0400, labelled
check_snapshot paulschreiber/nyc-traffic-cams "$commit"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$m" archive --format=tar "$commit" data/2025/05/1{0,1,2,3,4,5} | tar -x -C "$tmp"
mkdir -p "$out/frames"
i=0
while IFS= read -r f; do
  name=$(basename "$f" .jpg)
  [[ "$name" < "2025-05-10 14:30:00" || ! "$name" < "2025-05-15 14:00:00" ]] && continue
  if (( i % 3 == 0 )); then
    stamp=${name//[-: ]/}
    mv "$f" "$out/frames/nyc-$stamp.jpg"
  fi
  i=$((i + 1))
done < <(find "$tmp/data" -name '*.jpg' | LC_ALL=C sort -t/ -k1)
check_frames 2349
