#!/usr/bin/env bash
# bench.sh — compare wasm-callout running plugins/bin/basic.wasm with the
# native Go baseline (internal/baseline) under the same Envoy-shaped load.
#
# Both servers run as separate processes on 127.0.0.1. For each scenario
# (headers-only, buffered body) the same load (16 requests in flight, one
# ext_proc stream per request, one gRPC connection) is run against each
# server in interleaved rounds (baseline, wasm, baseline, wasm, ...) to
# spread machine noise over both, and the medians over rounds are compared:
#
#   cpu/request ratio = wasm-callout server CPU µs per request ÷ baseline's
#   throughput ratio  = wasm-callout req/s ÷ baseline's
#
# Server CPU comes from /proc/PID/stat (utime+stime) around each run. If
# wasm-callout cannot be built or does not become ready, only the baseline
# is measured and the script says so.
#
# Environment (defaults in brackets):
#   ROUNDS [3]  DURATION [3s]  WARMUP [1s]  CONCURRENCY [16]  CONNS [1]
#   BODY_BYTES [4096]  BASELINE_PORT [19101]  WASM_PORT [19102]
#   WASM_HEALTH_PORT [19103]  OUT [bench-out]  GO [go]
#   WASM [1] — WASM=0 measures the baseline only.
set -euo pipefail

cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-1s}
CONCURRENCY=${CONCURRENCY:-16}
CONNS=${CONNS:-1}
BODY_BYTES=${BODY_BYTES:-4096}
BASELINE_PORT=${BASELINE_PORT:-19101}
WASM_PORT=${WASM_PORT:-19102}
WASM_HEALTH_PORT=${WASM_HEALTH_PORT:-19103}
OUT=${OUT:-bench-out}
GO=${GO:-go}

case $ROUNDS in ''|*[!0-9]*) echo "bench: ROUNDS must be a number" >&2; exit 2;; esac
if (( ROUNDS < 1 || ROUNDS > 20 )); then echo "bench: ROUNDS must be in [1, 20]" >&2; exit 2; fi

BIN=$OUT/bin
RESULTS=$OUT/results.jsonl
mkdir -p "$BIN"
: > "$RESULTS"

log() { printf 'bench: %s\n' "$*" >&2; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building binaries into $BIN"
"$GO" build -o "$BIN/" ./cmd/extproc-load ./cmd/extproc-baseline
LOAD=$BIN/extproc-load

for p in "$BASELINE_PORT" "$WASM_PORT" "$WASM_HEALTH_PORT"; do
	port_free "$p" || { log "port $p on 127.0.0.1 is in use (set *_PORT)"; exit 1; }
done

# --- baseline ---------------------------------------------------------------
"$BIN/extproc-baseline" -addr "127.0.0.1:$BASELINE_PORT" >"$OUT/baseline.log" 2>&1 &
BASELINE_PID=$!
PIDS+=("$BASELINE_PID")
"$LOAD" wait -addr "127.0.0.1:$BASELINE_PORT" -timeout 10s >/dev/null || {
	log "baseline did not become ready; see $OUT/baseline.log"; exit 1; }
log "baseline ready (pid $BASELINE_PID)"

# --- wasm-callout (optional until the server exists) -------------------------
WASM_PID=
WASM_WHY=
if [[ ${WASM:-1} == 0 ]]; then
	WASM_WHY="WASM=0"
elif ! "$GO" build -o "$BIN/" ./cmd/wasm-callout 2>"$OUT/wasm-build.log"; then
	WASM_WHY="cmd/wasm-callout does not build (see $OUT/wasm-build.log)"
elif [[ ! -f plugins/bin/basic.wasm ]] && ! "$BIN/wasm-callout" build ./plugins/basic -o plugins/bin/basic.wasm >"$OUT/plugin-build.log" 2>&1; then
	WASM_WHY="plugins/bin/basic.wasm is missing and could not be built (see $OUT/plugin-build.log)"
else
	"$BIN/wasm-callout" --plugin plugins/bin/basic.wasm --addr "127.0.0.1:$WASM_PORT" \
		--health-addr "127.0.0.1:$WASM_HEALTH_PORT" --tls-addr "" >"$OUT/wasm-callout.log" 2>&1 &
	WASM_PID=$!
	PIDS+=("$WASM_PID")
	ready=
	for _ in $(seq 1 100); do
		if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$WASM_HEALTH_PORT/readyz" 2>/dev/null; then
			ready=1
			break
		fi
		kill -0 "$WASM_PID" 2>/dev/null || break
		sleep 0.1
	done
	if [[ -z $ready ]]; then
		WASM_WHY="wasm-callout did not become ready on :$WASM_HEALTH_PORT/readyz (see $OUT/wasm-callout.log)"
		kill "$WASM_PID" 2>/dev/null || true
		WASM_PID=
	else
		log "wasm-callout ready (pid $WASM_PID)"
	fi
fi
if [[ -n $WASM_WHY ]]; then
	log "NOTE: measuring the baseline only: $WASM_WHY"
fi

# --- rounds --------------------------------------------------------------------
run_load() { # label port pid scenario-args...
	local label=$1 port=$2 pid=$3
	shift 3
	local line
	if ! line=$("$LOAD" -addr "127.0.0.1:$port" -label "$label" -server-pid "$pid" \
		-concurrency "$CONCURRENCY" -conns "$CONNS" -duration "$DURATION" -warmup "$WARMUP" \
		-expect-header x-wasm-callout "$@" | tee -a "$OUT/runs.log" | tail -n 1); then
		log "$label run failed (see $OUT/runs.log)"
		return 0
	fi
	printf '%s\n' "$line" >>"$RESULTS"
}

: > "$OUT/runs.log"
for round in $(seq 1 "$ROUNDS"); do
	for scenario in headers buffered; do
		args=(-scenario "$scenario")
		[[ $scenario == buffered ]] && args+=(-body-bytes "$BODY_BYTES")
		log "round $round/$ROUNDS: $scenario"
		run_load baseline "$BASELINE_PORT" "$BASELINE_PID" "${args[@]}"
		if [[ -n $WASM_PID ]]; then
			run_load wasm-callout "$WASM_PORT" "$WASM_PID" "${args[@]}"
		fi
	done
done

echo
echo "Envoy-shaped ext_proc load: $CONCURRENCY in flight, one stream per request, $CONNS connection(s),"
echo "$DURATION per run after $WARMUP warm-up, medians of $ROUNDS interleaved round(s); buffered body $BODY_BYTES B."
"$LOAD" report -baseline baseline "$RESULTS"
if [[ -n $WASM_WHY ]]; then
	echo
	echo "wasm-callout not measured: $WASM_WHY"
fi
