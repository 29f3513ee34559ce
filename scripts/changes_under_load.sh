#!/usr/bin/env bash
# What everyday admin calls cost the verifications of the same account:
# KEYS keys verified in turn at the maximum rate (wrk, closed loop), for
# DURATION seconds each: with no other calls, while another client issues
# keys into the same workspace, and while it disables and re-enables one
# other key, CHANGE_RATE calls per second. Prints, for each run, req/s,
# p50 and p99 and the key-cache misses the server counted (each one a
# store read), then each busy run's rate as a ratio to the quiet run's,
# all measured in the same run.
#
#   scripts/changes_under_load.sh                             # this tree
#   KEYWARD_BIN=/tmp/keyward-old scripts/changes_under_load.sh
#
# Loopback only; bounded by DURATION (default 8) per run. SQLite, a fresh
# file (set KEYWARD_DATABASE_URL for PostgreSQL). Environment: KEYS
# (default 1000), CHANGE_RATE (default 10).
set -euo pipefail

DURATION=${DURATION:-8}
KEYS=${KEYS:-1000}
CHANGE_RATE=${CHANGE_RATE:-10}
ADDR=127.0.0.1:18084
# shellcheck source=lib/background.sh
source "$(dirname "$0")/lib/background.sh"

for tool in wrk curl jq; do
  command -v "$tool" >/dev/null || apt-get install -y "$tool" >/dev/null
done
if [ -z "${KEYWARD_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p keyward-cli --bin keyward)
fi
BIN=${KEYWARD_BIN:-$ROOT/target/release/keyward}
export KEYWARD_DATABASE_URL=${KEYWARD_DATABASE_URL:-sqlite://$WORK/keyward.db}
export KEYWARD_LOG=warn

created=$(echo "correct horse battery staple" | "$BIN" init --email changes@example.com --password-stdin --json)
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
TOGGLED=$(issue toggled | jq -r .key.id)

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

# Makes CHANGE_RATE calls per second of kind $1 until killed (issue: a new
# key; toggle: disable, then enable, the key TOGGLED); counts them in a file.
changer() {
  local n=0 pause
  pause=$(awk -v r="$CHANGE_RATE" 'BEGIN {printf "%.3f", 1 / r}')
  while true; do
    case $1 in
      issue) issue "issued-$n" >/dev/null ;;
      toggle) api -X POST "http://$ADDR/v1/keys/$TOGGLED/$([ $((n % 2)) = 0 ] && echo disable || echo enable)" >/dev/null ;;
    esac
    n=$((n + 1))
    echo "$n" > "$WORK/calls"
    sleep "$pause"
  done
}

# Prints "req/s p50 p99 misses calls" for one run beside changer $1.
busy_run() {
  local pid result
  echo 0 > "$WORK/calls"
  changer "$1" & pid=$!
  PIDS+=("$pid")
  result=$(run "$DURATION")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$result $(cat "$WORK/calls")"
}
read -r issue_rps issue_p50 issue_p99 issue_misses issued <<<"$(busy_run issue)"
read -r toggle_rps toggle_p50 toggle_p99 toggle_misses toggled <<<"$(busy_run toggle)"

row() { printf '%-34s %10s %8s %8s %12s\n' "$@"; }
row "run ($KEYS keys in turn)" "req/s" "p50" "p99" "key misses"
row "no other calls" "$quiet_rps" "$quiet_p50" "$quiet_p99" "$quiet_misses"
row "$issued keys issued" "$issue_rps" "$issue_p50" "$issue_p99" "$issue_misses"
row "another key disabled/enabled ×$toggled" "$toggle_rps" "$toggle_p50" "$toggle_p99" "$toggle_misses"
awk -v i="$issue_rps" -v t="$toggle_rps" -v q="$quiet_rps" \
  'BEGIN {printf "rate ÷ the quiet rate: issuing %.2f, disabling/enabling %.2f\n", i / q, t / q}'
