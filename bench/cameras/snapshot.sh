# Sourced by each camera's extract.sh: the arguments, the snapshot check and the frame count
# every extraction shares.
#   source "$(dirname "$0")/../snapshot.sh"
#   snapshot_args "$@"                 # sets out (OUT_DIR) and m (SNAPSHOT_GIT_DIR), or exits
#   check_snapshot OWNER/NAME COMMIT   # m is a git snapshot holding COMMIT, or exit 1
#   check_frames N [NOTE]              # OUT_DIR/frames holds N files (says so), or exit 1
set -euo pipefail

snapshot_args() {
  local usage="usage: extract.sh OUT_DIR SNAPSHOT_GIT_DIR"
  out=${1:?$usage} m=${2:?$usage}
}

check_snapshot() {
  git -C "$m" rev-parse --git-dir >/dev/null 2>&1 || { echo "no git snapshot at $m" >&2; exit 1; }
  git -C "$m" cat-file -e "$2^{commit}" 2>/dev/null ||
    { echo "$m is not $1 with commit ${2:0:12}" >&2; exit 1; }
}

check_frames() {
  local n
  n=$(ls "$out/frames" | wc -l)
  [[ $n -eq $1 ]] || { echo "$out/frames has $n frames, expected $1" >&2; exit 1; }
  echo "$n frames in $out/frames${2:+ $2}"
}
