#!/usr/bin/env bash
# Load test of POST /v1/verify against a bare hyper reference server, on
# loopback only. Starts the reference server and `keyward serve` in turn,
# and for each scenario:
#   1. finds the maximum rate: wrk, closed loop, for DURATION seconds (and
#      at most MAX_REQUESTS requests per wrk thread) — req/s, p50, p99;
#   2. holds half of that rate: oha at a constant rate (`-q`, with
#      `--latency-correction`, so a stalled server cannot hide its queue by
#      slowing the client down), for DURATION seconds — p50 and p99.
# The scenarios:
#   valid        a valid key with every check on (environment, permission,
#                IP allowlist, customer, rate limit), request logs and
#                last-used on;
#   invalid      a well-formed key that does not exist (negative cache);
#   ratelimited  a key over its limit;
#   metered      the valid key's checks on a key with usage credits: each
#                request also draws one credit in the store (committed
#                together with the draws queued beside it: the price of a
#                balance exact across nodes). Its half-rate row is no
#                latency figure: 16 connections make batches of at most 16
#                and fall behind a schedule set by what 64 reached;
#   private      the valid key again, on the private verify listener
#                (`--verify-listen`: no management token to check);
#   gateway      `keyward proxy` in front of the reference server: a key
#                with a permission, a customer and a rate limit (no IP
#                allowlist: the client is 127.0.0.1) in `X-API-Key`,
#                verified against a routes file and forwarded — the
#                reference runs beside it as its upstream, and its CPU
#                figure is the proxy's alone;
# each maximum as a ratio to the reference server's, and the server's CPU
# time per request during the half-rate run (user + system, from /proc: a
# figure that, unlike the rates, does not depend on how the two cores are
# shared with the load generator). The reference's own
# half-rate run, and a last one at the rate keyward's valid run was held
# at, show what this machine and load generator allow for the latencies.
# Those two half-rate runs (valid key, reference) record every request
# (oha --db-url), and scripts/slow_by_phase.py says where in the second
# their requests slower than 1 ms fell: bunched in one window of each
# second is keyward's once-a-second request-log flush.
#
#   scripts/load.sh                       # 10 s per run
#   DURATION=3 scripts/load.sh            # a quick pass
#
# Environment: DURATION (s, default 10), CONNECTIONS (default 64), THREADS
# (wrk threads, default 2), MAX_REQUESTS (per wrk thread, default 2000000),
# RATE_CONNECTIONS (oha connections at half rate, default 16), HOLD_RATE
# (req/s: every constant-rate run holds this rate instead of half its
# maximum, so that two builds' latencies compare at one rate),
# KEYWARD_DATABASE_URL (default: a fresh SQLite file), KEYWARD_BIN (a
# `keyward` binary to measure instead of this tree's release build: to
# compare builds, alternate runs of each). Installs wrk with apt
# and oha with `cargo install oha --locked` (into ~/.cargo/bin, a few
# minutes once) when missing.
set -euo pipefail

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
MAX_REQUESTS=${MAX_REQUESTS:-2000000}
REF_ADDR=127.0.0.1:18090
KW_ADDR=127.0.0.1:18080
PRIVATE_ADDR=127.0.0.1:18081
GATEWAY_ADDR=127.0.0.1:18082
# shellcheck source=lib/background.sh
source "$(dirname "$0")/lib/background.sh"

if ! command -v wrk >/dev/null; then
  echo "installing wrk…" >&2
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
for tool in curl jq; do
  command -v "$tool" >/dev/null || apt-get install -y "$tool" >/dev/null
done
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v oha >/dev/null; then
  echo "installing oha (cargo install, once)…" >&2
  cargo install -q oha --locked
fi
RATE_CONNECTIONS=${RATE_CONNECTIONS:-16}

cd "$ROOT"
cargo build --release -q -p keyward-server --example reference_server
if [ -z "${KEYWARD_BIN:-}" ]; then
  cargo build --release -q -p keyward-cli --bin keyward
fi
BIN=${KEYWARD_BIN:-$ROOT/target/release/keyward}
REF=$ROOT/target/release/examples/reference_server
export KEYWARD_DATABASE_URL=${KEYWARD_DATABASE_URL:-sqlite://$WORK/keyward.db}
export KEYWARD_LOG=warn

wait_up() { # url
  for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "server at $1 did not come up" >&2; exit 1
}

# Stops each wrk thread after MAX_REQUESTS answers.
count_responses() {
  cat <<LUA
local count = 0
function response(status, headers, body)
  count = count + 1
  if count >= $MAX_REQUESTS then wrk.thread:stop() end
end
LUA
}

# The request body and the management token (none if empty), for wrk.
write_lua() { # file key token
  { cat <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
${3:+wrk.headers[\"Authorization\"] = \"Bearer $3\"}
wrk.body = '{"key":"$2","environment":"production","permissions":["customers:read"],"ip":"203.0.113.7","customer_id":"cus_1"}'
LUA
    count_responses; } > "$1"
}

# A gateway request: POST with the key in X-API-Key and no body.
write_gateway_lua() { # file key
  { cat <<LUA
wrk.method = "POST"
wrk.headers["X-API-Key"] = "$2"
wrk.body = ''
LUA
    count_responses; } > "$1"
}

# Prints "req/s p50 p99" (latencies in ms) for one wrk run.
run_wrk() { # url lua
  local out
  out=$(timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$2" "$1")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx answers: $out" >&2; exit 1; fi
  echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}

# The CPU time (user + system, in clock ticks) process $1 has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Prints "req/s p50 p99 cpu" (latencies in ms; cpu: the server's CPU time
# per request, in µs) for one oha run at a constant rate against the server
# whose pid is $4; fails on any answer but 200.
run_oha() { # url lua rate server-pid
  local body out before after apikey
  local auth=()
  body=$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$2")
  grep -q Authorization "$2" && auth=(-H "Authorization: Bearer $TOKEN")
  apikey=$(sed -n 's/^wrk.headers\["X-API-Key"\] = "\(.*\)"$/\1/p' "$2")
  [ -z "$apikey" ] || auth=(-H "X-API-Key: $apikey")
  before=$(cpu_ticks "$4")
  out=$(timeout $((DURATION + 30)) oha --no-tui --output-format json -z "${DURATION}s" \
    -c "$RATE_CONNECTIONS" -q "$3" --latency-correction -w -m POST \
    ${RECORD:+--db-url "$RECORD"} "${auth[@]}" -T application/json -d "$body" "$1" \
    2> >(grep -v '^Storing results' >&2))
  after=$(cpu_ticks "$4")
  if [ "$(jq -r '[.statusCodeDistribution | keys[] | select(. != "200")] | length' <<<"$out")" != 0 ] ||
     [ "$(jq -r '.errorDistribution | length' <<<"$out")" != 0 ]; then
    echo "oha: answers other than 200, or errors: $(jq -c '{statusCodeDistribution, errorDistribution}' <<<"$out")" >&2
    exit 1
  fi
  jq -r --argjson ticks "$((after - before))" --argjson hz "$(getconf CLK_TCK)" \
    '"\(.summary.requestsPerSec) \(.latencyPercentiles.p50 * 1000) \(.latencyPercentiles.p99 * 1000) \($ticks / $hz * 1e6 / ([.statusCodeDistribution[]] | add))"' <<<"$out"
}

to_ms() { # wrk latency such as 512.00us / 1.20ms / 1.01s
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else print v }'
}

# ── Set-up: an account, a key with every check on, an exhausted key ──────
created=$(echo "correct horse battery staple" | "$BIN" init --email load@example.com --password-stdin --json)
TOKEN=$(jq -r .management_token <<<"$created")
WS=$(jq -r .workspace_id <<<"$created")
SERVE=(serve --listen "$KW_ADDR" --verify-listen "$PRIVATE_ADDR" --verify-account "$(jq -r .account_id <<<"$created")")
"$BIN" "${SERVE[@]}" & PIDS+=($!)
wait_up "http://$KW_ADDR/healthz"
api() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
api -d '{"name":"customers:read"}' "http://$KW_ADDR/v1/permissions" >/dev/null
api -d "{\"address\":\"203.0.113.0/24\",\"workspace_ids\":[\"$WS\"]}" "http://$KW_ADDR/v1/ip-allowlist" >/dev/null
issue() { # name rate-limit [credits]
  api -d "{\"name\":\"$1\",\"environment\":\"production\",\"permissions\":[\"customers:read\"],
           \"customer_id\":\"cus_1\",\"allowed_ips\":[\"203.0.113.0/24\"],\"rate_limit\":$2,
           \"credits\":${3:-null}}" \
    "http://$KW_ADDR/v1/workspaces/$WS/keys" | jq -r .secret
}
VALID=$(issue valid '{"limit":1000000000,"window_seconds":1}')
LIMITED=$(issue limited '{"limit":1,"window_seconds":3600}')
METERED=$(issue metered '{"limit":1000000000,"window_seconds":1}' '{"remaining":1000000000000000}')
# The gateway's client is 127.0.0.1, so its key lives in a workspace
# without an allowlist.
WS3=$(api -d '{"name":"gateway"}' "http://$KW_ADDR/v1/workspaces" | jq -r .id)
GATEWAY_KEY=$(api -d '{"name":"gateway","environment":"production","permissions":["customers:read"],
  "customer_id":"cus_1","rate_limit":{"limit":1000000000,"window_seconds":1}}' \
  "http://$KW_ADDR/v1/workspaces/$WS3/keys" | jq -r .secret)
cat > "$WORK/routes.toml" <<TOML
environment = "production"
[[route]]
method = "POST"
path = "/v1/verify"
permissions = ["customers:read"]
TOML
write_gateway_lua "$WORK/gateway.lua" "$GATEWAY_KEY"
PROXY=(proxy --listen "$GATEWAY_ADDR" --upstream "http://$REF_ADDR" --routes "$WORK/routes.toml"
       --account "$(jq -r .account_id <<<"$created")")
# Well-formed (prefix, tag, checksum) but unknown to the store: a key
# minted in a workspace that is then deleted.
WS2=$(api -d '{"name":"gone"}' "http://$KW_ADDR/v1/workspaces" | jq -r .id)
INVALID=$(api -d '{"name":"gone","environment":"production"}' "http://$KW_ADDR/v1/workspaces/$WS2/keys" | jq -r .secret)
api -X DELETE "http://$KW_ADDR/v1/workspaces/$WS2" >/dev/null

url_of() { # scenario
  if [ "$1" = private ]; then echo "http://$PRIVATE_ADDR/v1/verify"; else echo "http://$KW_ADDR/v1/verify"; fi
}
for scenario in valid invalid ratelimited metered private; do
  token=$TOKEN
  case $scenario in
    valid) key=$VALID; want=valid ;;
    invalid) key=$INVALID; want=unknown_key ;;
    ratelimited) key=$LIMITED; want=rate_limited ;;
    metered) key=$METERED; want=valid ;;
    private) key=$VALID; want=valid; token= ;;
  esac
  write_lua "$WORK/$scenario.lua" "$key" "$token"
  body=$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$WORK/$scenario.lua")
  # The first use of the limited key spends its one token.
  code=$(api -d "$body" "$(url_of "$scenario")" | jq -r .code)
  [ "$scenario" = ratelimited ] && code=$(api -d "$body" "$(url_of "$scenario")" | jq -r .code)
  [ "$code" = "$want" ] || { echo "$scenario: expected $want, got $code" >&2; exit 1; }
done
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

# ── The runs, one server at a time ────────────────────────────────────────
# Each row: the maximum (wrk), then half of it held constant (oha).
HEADER=$(printf '%-12s %10s %8s %8s %7s │ %9s %8s %8s %9s' scenario 'max req/s' 'p50 ms' 'p99 ms' ratio 'half req/s' 'p50 ms' 'p99 ms' 'CPU µs/req')
row() { # url lua name server-pid
  local rps p50 p99 half hrps hp50 hp99 cpu ratio
  read -r rps p50 p99 < <(run_wrk "$1" "$2")
  half=${HOLD_RATE:-$(awk -v r="$rps" 'BEGIN {printf "%d", r / 2}')}
  # The valid run's requests are recorded, to say where its slow ones fell.
  read -r hrps hp50 hp99 cpu < <(
    if [ "$3" = valid ]; then RECORD=$WORK/valid-half.db; fi
    run_oha "$1" "$2" "$half" "$4")
  ratio=$(awk -v a="$rps" -v b="${REF_RPS:-$rps}" 'BEGIN {printf "%.2f", a / b}')
  [ -n "${REF_RPS:-}" ] || REF_RPS=$rps
  [ "$3" != valid ] || { VALID_HALF=$half; VALID_CPU=$cpu; }
  printf '%-12s %10.0f %8s %8s %7s │ %9.0f %8.3f %8.3f %9.1f\n' "$3" "$rps" "$p50" "$p99" "$ratio" "$hrps" "$hp50" "$hp99" "$cpu"
}

"$REF" "$REF_ADDR" 2>/dev/null & PIDS+=($!)
wait_up "http://$REF_ADDR/"
REF_ROW=$(row "http://$REF_ADDR/v1/verify" "$WORK/valid.lua" reference "${PIDS[0]}")
REF_RPS=$(awk '{print $2}' <<<"$REF_ROW")
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

"$BIN" "${SERVE[@]}" & PIDS+=($!)
wait_up "http://$KW_ADDR/healthz"
echo "$HEADER"
echo "$REF_ROW"
for scenario in valid invalid ratelimited metered private; do
  row "$(url_of "$scenario")" "$WORK/$scenario.lua" "$scenario" "${PIDS[0]}"
done
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

# The gateway, with the reference as its upstream.
"$REF" "$REF_ADDR" 2>/dev/null & PIDS+=($!)
"$BIN" "${PROXY[@]}" & PIDS+=($!)
wait_up "http://$REF_ADDR/"
for _ in $(seq 1 200); do curl -s -o /dev/null "http://$GATEWAY_ADDR/" && break; sleep 0.05; done
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "X-API-Key: $GATEWAY_KEY" "http://$GATEWAY_ADDR/v1/verify")
[ "$status" = 200 ] || { echo "gateway: expected 200, got $status" >&2; exit 1; }
row "http://$GATEWAY_ADDR/v1/verify" "$WORK/gateway.lua" gateway "${PIDS[1]}"
for pid in "${PIDS[@]}"; do kill "$pid"; wait "$pid" 2>/dev/null || true; done; PIDS=()

# The reference again, at the rate keyward's valid run was held at: what
# this machine and load generator allow at that rate, for its p99.
"$REF" "$REF_ADDR" 2>/dev/null & PIDS+=($!)
wait_up "http://$REF_ADDR/"
read -r hrps hp50 hp99 cpu < <(RECORD=$WORK/reference-half.db run_oha "http://$REF_ADDR/v1/verify" "$WORK/valid.lua" "$VALID_HALF" "${PIDS[0]}")
printf '%-12s %10s %8s %8s %7s │ %9.0f %8.3f %8.3f %9.1f\n' 'reference' '' '' '' '' "$hrps" "$hp50" "$hp99" "$cpu"
echo "(last row: the reference held at the valid run's half rate;"
echo " CPU µs/req: the server process's user + system time per request during the half-rate run)"
# CPU per request moves with the machine's speed less than rates do, and
# this ratio (both servers at one rate, minutes apart) less still.
echo "valid key's CPU per request ÷ the reference's at the same rate: $(awk -v a="$VALID_CPU" -v b="$cpu" 'BEGIN {printf "%.2f", a / b}')"
echo "where the slow requests of the runs at $VALID_HALF req/s fell (scripts/slow_by_phase.py):"
echo "  valid:     $("$ROOT/scripts/slow_by_phase.py" "$WORK/valid-half.db")"
echo "  reference: $("$ROOT/scripts/slow_by_phase.py" "$WORK/reference-half.db")"
echo "($(date -u +%FT%TZ), $(nproc) cores; max: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s;" \
  "half: oha -c$RATE_CONNECTIONS -z${DURATION}s -q ${HOLD_RATE:-<max/2>} --latency-correction -w; store ${KEYWARD_DATABASE_URL%%:*})"
