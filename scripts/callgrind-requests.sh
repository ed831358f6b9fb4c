#!/usr/bin/env bash
# Instructions per passthrough request, counted by callgrind (stable on a loaded machine, unlike
# wall-clock CPU time). Runs the gateway under `valgrind --tool=callgrind --separate-threads=yes`
# with one worker in front of the load harness's mock, sends N1 then (on a fresh process) N2
# keep-alive requests, and prints (instructions(N2) - instructions(N1)) / (N2 - N1) for the whole
# process and for each thread, so start-up and shutdown cancel out.
#
#   scripts/callgrind-requests.sh <aigw binary> <log_level> [N1 N2]
#
# The mock is the load bench binary (`cargo build --bench load`, or AIGW_LOAD_BIN=path).
set -euo pipefail

BIN=${1:?aigw binary}
LEVEL=${2:?log level, e.g. info or warn}
N1=${3:-200}
N2=${4:-1200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD_BIN=${AIGW_LOAD_BIN:-$(ls -t "$ROOT"/target/debug/deps/load-* 2>/dev/null | grep -v '\.d$' | head -1)}
[ -x "$LOAD_BIN" ] || { echo "no load bench binary: cargo build --bench load" >&2; exit 2; }
DIR=$(mktemp -d /tmp/aigw-callgrind.XXXXXX)
MOCK_PID=
cleanup() {
  [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null || true
  # AIGW_CALLGRIND_KEEP=1 keeps the profiles for callgrind_annotate.
  if [ -n "${AIGW_CALLGRIND_KEEP:-}" ]; then echo "profiles kept in $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

# The mock prints `port N` on stdout.
AIGW_BENCH_ROLE=mock AIGW_BENCH_MOCK_WORKERS=1 "$LOAD_BIN" >"$DIR/mock.out" 2>/dev/null &
MOCK_PID=$!
for _ in $(seq 100); do grep -q '^port ' "$DIR/mock.out" 2>/dev/null && break; sleep 0.1; done
MOCK_PORT=$(sed -n 's/^port //p' "$DIR/mock.out")

KEY_HASH=$(printf %s sk-gw-bench | sha256sum | cut -d' ' -f1)
cat >"$DIR/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:0"
workers = 1

[observability]
log_level = "$LEVEL"

[request_log]
path = "$DIR/requests.sqlite"

[[auth.keys]]
name = "bench"
secret_sha256 = "$KEY_HASH"

[[providers]]
name = "anthropic-fast"
kind = "anthropic"
base_url = "http://127.0.0.1:$MOCK_PORT/fast"
api_key_env = "AIGW_BENCH_UPSTREAM_KEY"

[[models]]
id = "anthropic-fast"
deployments = [{ provider = "anthropic-fast", model = "claude-bench" }]
EOF

# run N: one gateway under callgrind, N requests, SIGTERM; leaves $DIR/cg.N.* (one per thread).
run() {
  local n=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  AIGW_BENCH_UPSTREAM_KEY=sk-upstream-bench env -u RUST_LOG \
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$DIR/cg.$n" \
    "$BIN" --config "$DIR/gateway.toml" --listen "127.0.0.1:$port" \
    >/dev/null 2>"$DIR/gateway.$n.log" &
  local gw=$!
  python3 - "$port" "$n" <<'PY'
import http.client, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
deadline = time.time() + 120
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/healthz"); c.getresponse().read(); break
    except OSError:
        if time.time() > deadline: sys.exit("gateway did not start")
        time.sleep(0.2)
body = b'{"model":"anthropic-fast","max_tokens":64,"messages":[{"role":"user","content":"Hello!"}]}'
h = {"x-api-key": "sk-gw-bench", "anthropic-version": "2023-06-01", "content-type": "application/json"}
for _ in range(n):
    c.request("POST", "/v1/messages", body, h)
    r = c.getresponse(); r.read()
    if r.status != 200: sys.exit(f"status {r.status}")
PY
  kill -TERM "$gw"
  wait "$gw" || true
  local lines
  lines=$(grep -c ' request ' "$DIR/gateway.$n.log" || true)
  echo "N=$n: $lines request lines in the log" >&2
}

# Instructions (Ir) per thread of one run, as "thread total" lines.
threads() {
  for f in "$DIR"/cg."$1"-*; do
    printf '%s %s\n' "${f##*-}" "$(sed -n 's/^summary: //p' "$f" | cut -d' ' -f1)"
  done | sort -n
}

run "$N1"
run "$N2"
echo "log_level=$LEVEL binary=$BIN: instructions per request, ($N2 - $N1 requests)"
join <(threads "$N1") <(threads "$N2") | awk -v d=$((N2 - N1)) '
  { per = ($3 - $2) / d; total += per; printf "  thread %s: %10.0f\n", $1, per }
  END { printf "  process:  %10.0f\n", total }'
