#!/bin/bash
# usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR
# Extract the aquarium camera's frames (1,504 JPEGs, 2304x1296) into OUT_DIR/frames from a
# snapshot (a bare git directory) of github:amithgc/aquarium-photos: every image in images/ at
# the commit the labels were made on (1,460), and every image named by its time (Unix epoch in
# milliseconds, as the camera's script names them) that the owner deleted from images/ since
# the first frame of that tree, 2022-08-02 (44: "deleted dark pics", "removed bad pics", ...),
# from the commit before its deletion. File names are kept: <epoch ms>.jpg, UTC. No licence:
# local measurement only; never commit the images.
source "$(dirname "$0")/../snapshot.sh"
snapshot_args "$@"
commit=4e7688efe772ae8dec286dc494b16a3910b49b42 # main on 2025-12-10 17:40 +0530, labelled
first=1659427802906                            # the tree's first frame, 2022-08-02 08:10 UTC
check_snapshot amithgc/aquarium-photos "$commit"
mkdir -p "$out/frames"
git -C "$m" ls-tree "$commit" images/ | while read -r _ _ blob path; do
  git -C "$m" cat-file blob "$blob" >"$out/frames/${path#images/}"
done
git -C "$m" log --diff-filter=D --format='%H' "$commit" -- images | while read -r sha; do
  git -C "$m" diff-tree --no-commit-id --name-only --diff-filter=D -r "$sha" -- images |
    while read -r path; do
      name=${path#images/}
      [[ $name =~ ^1[0-9]{12}\.jpg$ && ${name%.jpg} -ge $first ]] || continue
      git -C "$m" cat-file blob "$sha^:$path" >"$out/frames/$name"
      echo "$name" >>"$out/deleted-by-owner.txt"
    done
done
check_frames 1504 "($(wc -l <"$out/deleted-by-owner.txt") deleted by the owner)"
