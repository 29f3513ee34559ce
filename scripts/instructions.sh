#!/usr/bin/env bash
# User-space instructions per `POST /v1/verify` request, counted by
# callgrind: a figure that does not move with the machine's load, unlike
# times and rates on shared cores (this one's VM has no hardware counters
# for `perf stat`). For each binary given (default: this tree's release
# `keyward`): a fresh SQLite file, a key with every check on (as in
# scripts/load.sh), `keyward serve` under callgrind, WARMUP requests
# uncounted, then REQUESTS counted plus two seconds for the request-log
# flush they cause. Loopback only; bounded by the request counts.
#
#   scripts/instructions.sh                          # this tree
#   scripts/instructions.sh /tmp/keyward-old target/release/keyward
#
# A binary with a private verify listener (`serve --verify-listen`) is
# measured twice: through the API listener with a management token, and
# through the private listener without one.
#
# SHA-256 runs without the CPU's SHA extensions under valgrind, so the
# counts include two software SHA-256s (token and key, ~3,500 each).
# Environment: REQUESTS (default 3000), WARMUP (default 500), PROFILE (a
# directory: each binary's callgrind profile is kept there, for
# `callgrind_annotate --inclusive=yes` to say where the instructions go).
set -euo pipefail

REQUESTS=${REQUESTS:-3000}
WARMUP=${WARMUP:-500}
ADDR=127.0.0.1:18082
PRIVATE_ADDR=127.0.0.1:18083
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
SERVER=
cleanup() {
  [ -z "$SERVER" ] || { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in valgrind curl jq; do
  command -v "$tool" >/dev/null || apt-get install -y "$tool" >/dev/null
done
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
command -v oha >/dev/null || cargo install -q oha --locked

if [ $# -eq 0 ]; then
  (cd "$ROOT" && cargo build --release -q -p keyward-cli --bin keyward)
  set -- "$ROOT/target/release/keyward"
fi

wait_up() {
  for _ in $(seq 1 600); do curl -s -o /dev/null "http://$ADDR/healthz" && return 0; sleep 0.1; done
  echo "server did not come up" >&2; exit 1
}

stop() {
  kill -INT "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
}

measure() { # binary mode (token | private)
  local bin=$1 mode=$2 db=$WORK/$RANDOM created token ws key body out serve url auth
  export KEYWARD_DATABASE_URL=sqlite://$db.db KEYWARD_LOG=warn
  created=$(echo "correct horse battery staple" | "$bin" init --email ins@example.com --password-stdin --json)
  token=$(jq -r .management_token <<<"$created")
  ws=$(jq -r .workspace_id <<<"$created")
  serve=(serve --listen "$ADDR") url=http://$ADDR/v1/verify auth=(-H "Authorization: Bearer $token")
  if [ "$mode" = private ]; then
    serve+=(--verify-listen "$PRIVATE_ADDR" --verify-account "$(jq -r .account_id <<<"$created")")
    url=http://$PRIVATE_ADDR/v1/verify auth=()
  fi
  "$bin" serve --listen "$ADDR" & SERVER=$!
  wait_up
  api() { curl -sf -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
  api -d '{"name":"customers:read"}' "http://$ADDR/v1/permissions" >/dev/null
  api -d "{\"address\":\"203.0.113.0/24\",\"workspace_ids\":[\"$ws\"]}" "http://$ADDR/v1/ip-allowlist" >/dev/null
  key=$(api -d '{"name":"counted","environment":"production","permissions":["customers:read"],
                 "customer_id":"cus_1","allowed_ips":["203.0.113.0/24"],
                 "rate_limit":{"limit":1000000000,"window_seconds":1}}' \
        "http://$ADDR/v1/workspaces/$ws/keys" | jq -r .secret)
  stop
  body="{\"key\":\"$key\",\"environment\":\"production\",\"permissions\":[\"customers:read\"],\"ip\":\"203.0.113.7\",\"customer_id\":\"cus_1\"}"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$db.cg" \
    "$bin" "${serve[@]}" >"$db.log" 2>&1 & SERVER=$!
  wait_up
  hit() { oha --no-tui --output-format json -n "$1" -c 4 -m POST "${auth[@]}" \
            -T application/json -d "$body" "$url"; }
  hit "$WARMUP" >/dev/null
  callgrind_control -i on "$SERVER" >/dev/null 2>&1
  out=$(hit "$REQUESTS")
  sleep 2
  callgrind_control -i off "$SERVER" >/dev/null 2>&1
  stop
  if [ "$(jq -r '.statusCodeDistribution["200"]' <<<"$out")" != "$REQUESTS" ]; then
    echo "answers other than 200: $(jq -c .statusCodeDistribution <<<"$out")" >&2; exit 1
  fi
  if [ -n "${PROFILE:-}" ]; then
    mkdir -p "$PROFILE" && cat "$db.cg"* >"$PROFILE/$(basename "$bin").$mode.callgrind"
  fi
  callgrind_annotate "$db.cg"* 2>/dev/null |
    awk -v n="$REQUESTS" -v bin="$bin ($mode)" '/PROGRAM TOTALS/ {gsub(",", "", $1); printf "%-50s %8.0f instructions/request\n", bin, $1 / n}'
}

for bin in "$@"; do
  measure "$bin" token
  if "$bin" serve --help | grep -q -- --verify-listen; then measure "$bin" private; fi
done
