# Sourced by the load scripts: the repository's root, a scratch directory
# and the processes they start in the background, the last two gone when
# the script exits, however it exits. Sets ROOT, WORK and PIDS; a script
# appends each background process's pid to PIDS.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
