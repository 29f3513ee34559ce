#!/usr/bin/env bash
# What issuing keys costs the verifications of the same account: KEYS keys
# verified in turn at the maximum rate (wrk, closed loop), DURATION seconds
# without issuing and DURATION seconds while another client issues
# ISSUE_RATE keys per second into the same workspace. Prints, for each
# run, req/s, p50 and p99 (ms) and the key-cache misses the server counted
# (each one a store read), then the rate with issuing as a ratio to the
# rate without, measured in the same run.
#
#   scripts/issue_under_load.sh                             # this tree
#   KEYWARD_BIN=/tmp/keyward-old scripts/issue_under_load.sh
#
# Loopback only; bounded by DURATION (default 8) per run. SQLite, a fresh
# file (set KEYWARD_DATABASE_URL for PostgreSQL). Environment: KEYS
# (default 1000), ISSUE_RATE (default 10).
set -euo pipefail

DURATION=${DURATION:-8}
KEYS=${KEYS:-1000}
ISSUE_RATE=${ISSUE_RATE:-10}
ADDR=127.0.0.1:18084
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in wrk curl jq; do
  command -v "$tool" >/dev/null || apt-get install -y "$tool" >/dev/null
done
if [ -z "${KEYWARD_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p keyward-cli --bin keyward)
fi
BIN=${KEYWARD_BIN:-$ROOT/target/release/keyward}
export KEYWARD_DATABASE_URL=${KEYWARD_DATABASE_URL:-sqlite://$WORK/keyward.db}
export KEYWARD_LOG=warn

created=$(echo "correct horse battery staple" | "$BIN" init --email issue@example.com --password-stdin --json)
TOKEN=$(jq -r .management_token <<<"$created")
WS=$(jq -r .workspace_id <<<"$created")
"$BIN" serve --listen "$ADDR" & PIDS+=($!)
for _ in $(seq 1 200); do curl -s -o /dev/null "http://$ADDR/healthz" && break; sleep 0.05; done
api() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
issue() { # name
  api -d "{\"name\":\"$1\",\"environment\":\"production\"}" "http://$ADDR/v1/workspaces/$WS/keys"
}

echo "issuing $KEYS keys to verify…" >&2
for n in $(seq 1 "$KEYS"); do issue "verified-$n" | jq -r .secret; done > "$WORK/secrets"

# Each request verifies the next key of the list (each wrk thread its own turn).
{
  echo 'local secrets = {}'
  echo "for line in io.lines(\"$WORK/secrets\") do secrets[#secrets + 1] = line end"
  cat <<LUA
local next_key = 0
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer $TOKEN"}
function request()
  next_key = next_key % #secrets + 1
  return wrk.format("POST", "/v1/verify", headers,
    '{"key":"' .. secrets[next_key] .. '","environment":"production"}')
end
LUA
} > "$WORK/verify.lua"

misses() {
  curl -sf "http://$ADDR/metrics" |
    awk '$1 == "keyward_cache_lookups_total{cache=\"key\",result=\"miss\"}" {print $2}'
}

# Verifications whose verdict was anything but valid, so far.
not_valid() {
  curl -sf "http://$ADDR/metrics" |
    awk '/^keyward_verifications_total\{/ && !/code="valid"/ {n += $2} END {print n + 0}'
}

# Prints "req/s p50 p99 misses" for one wrk run of $1 seconds; fails on
# any answer but a 200 with a valid verdict.
run() {
  local before refused out rps p50 p99
  before=$(misses)
  refused=$(not_valid)
  out=$(timeout $(($1 + 30)) wrk -t2 -c16 -d"$1s" --latency -s "$WORK/verify.lua" "http://$ADDR")
  if grep -q "Non-2xx" <<<"$out" || [ "$(not_valid)" != "$refused" ]; then
    echo "answers other than valid: $out" >&2; exit 1
  fi
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  echo "$rps $p50 $p99 $(($(misses) - before))"
}

run 2 >/dev/null # every key cached
read -r quiet_rps quiet_p50 quiet_p99 quiet_misses <<<"$(run "$DURATION")"

# Issues ISSUE_RATE keys per second until killed; counts them in a file.
issuer() {
  local n=0
  while true; do
    issue "issued-$n" >/dev/null
    n=$((n + 1))
    echo "$n" > "$WORK/issued"
    sleep "$(awk -v r="$ISSUE_RATE" 'BEGIN {printf "%.3f", 1 / r}')"
  done
}
issuer & ISSUER=$!
PIDS+=("$ISSUER")
read -r busy_rps busy_p50 busy_p99 busy_misses <<<"$(run "$DURATION")"
kill "$ISSUER"; wait "$ISSUER" 2>/dev/null || true
issued=$(cat "$WORK/issued")

printf '%-28s %10s %8s %8s %14s\n' "run ($KEYS keys in turn)" "req/s" "p50" "p99" "key misses"
printf '%-28s %10s %8s %8s %14s\n' "no keys issued" "$quiet_rps" "$quiet_p50" "$quiet_p99" "$quiet_misses"
printf '%-28s %10s %8s %8s %14s\n' "$issued keys issued" "$busy_rps" "$busy_p50" "$busy_p99" "$busy_misses"
awk -v b="$busy_rps" -v q="$quiet_rps" 'BEGIN {printf "rate while issuing ÷ rate without: %.2f\n", b / q}'
