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
#   WASM_HEALTH_PORT [19103]  WASM_ADMIN_PORT [19110]  OUT [bench-out]  GO [go]
#   WASM [1] — WASM=0 measures the baseline only.
#   WASM_FLAGS [] — extra flags for every wasm-callout server, for example
#   WASM_FLAGS="--call-timeout 0" to measure with deadlines off (trusted
#   plugins; see RATIONALE.md).
#
# L4 (L4=1, the default): the l4 scenario plays TCP connections through
# Envoy's network ext_proc filter (L4_FRAMES frames of L4_FRAME_BYTES each
# way, pipelined, one network_ext_proc stream per connection). The baseline
# is the native echo extproc-baseline serves on the same port
# (internal/baseline NetworkServer); wasm-callout runs a second process,
# with plugins/bin/tcp-count.wasm, which does the same (passes data and
# counts bytes per direction). Its ratios are reported with the others.
#   L4 [1]  L4_FRAMES [4]  L4_FRAME_BYTES [1024]
#   WASM_L4_PORT [19106]  WASM_L4_HEALTH_PORT [19107]
#
# Zero-work plugin (ZERO=1, the default): a third wasm-callout process runs
# host/testdata/zero.wasm, which only adds one response header and enters
# the guest twice per stream, in the headers scenario ("wasm-zero"): what
# the host and server cost apart from any guest runtime.
#   ZERO [1]  WASM_ZERO_PORT [19108]  WASM_ZERO_HEALTH_PORT [19109]
#
# Concurrency sweep (SWEEP="1 4 16 64", off by default): after the rounds
# above, the headers scenario again at each of these in-flight counts, in
# interleaved rounds, for the baseline and every wasm-callout server.
#   SWEEP []
#
# Hot swap under load (SWAP=1, the default, needs wasm-callout): the same
# headers load runs against wasm-callout while extproc-load POSTs
# /reload every SWAP_INTERVAL (one reload at a time), in interleaved rounds
# with a steady-state run on the same server, once on the server above
# (no compilation cache) and once on a second one started with
# --compilation-cache. It reports the time from each reload request to the
# switch, the failed requests (must be 0: the script fails otherwise) and
# the throughput during swaps relative to steady state.
#   SWAP [1]  SWAP_ROUNDS [ROUNDS]  SWAP_DURATION [5s]  SWAP_INTERVAL [500ms]
#   WASM_CACHE_PORT [19104]  WASM_CACHE_HEALTH_PORT [19105]  WASM_CACHE_ADMIN_PORT [19111]
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
WASM_ADMIN_PORT=${WASM_ADMIN_PORT:-19110}
read -r -a WASM_EXTRA <<<"${WASM_FLAGS:-}"
L4=${L4:-1}
L4_FRAMES=${L4_FRAMES:-4}
L4_FRAME_BYTES=${L4_FRAME_BYTES:-1024}
WASM_L4_PORT=${WASM_L4_PORT:-19106}
WASM_L4_HEALTH_PORT=${WASM_L4_HEALTH_PORT:-19107}
ZERO=${ZERO:-1}
WASM_ZERO_PORT=${WASM_ZERO_PORT:-19108}
WASM_ZERO_HEALTH_PORT=${WASM_ZERO_HEALTH_PORT:-19109}
SWEEP=${SWEEP:-}
OUT=${OUT:-bench-out}
GO=${GO:-go}

case $ROUNDS in ''|*[!0-9]*) echo "bench: ROUNDS must be a number" >&2; exit 2;; esac
if (( ROUNDS < 1 || ROUNDS > 20 )); then echo "bench: ROUNDS must be in [1, 20]" >&2; exit 2; fi

BIN=$OUT/bin
RESULTS=$OUT/results.jsonl
mkdir -p "$BIN"
: > "$RESULTS"

log() { printf 'bench: %s\n' "$*" >&2; }

. scripts/lib.sh

log "building binaries into $BIN"
"$GO" build -o "$BIN/" ./cmd/extproc-load ./cmd/extproc-baseline
LOAD=$BIN/extproc-load

for p in "$BASELINE_PORT" "$WASM_PORT" "$WASM_HEALTH_PORT" "$WASM_ADMIN_PORT" "$WASM_L4_PORT" "$WASM_L4_HEALTH_PORT" \
	"$WASM_ZERO_PORT" "$WASM_ZERO_HEALTH_PORT"; do
	port_free "$p" || { log "port $p on 127.0.0.1 is in use (set *_PORT)"; exit 1; }
done

# --- baseline ---------------------------------------------------------------
"$BIN/extproc-baseline" -addr "127.0.0.1:$BASELINE_PORT" >"$OUT/baseline.log" 2>&1 &
BASELINE_PID=$!
PIDS+=("$BASELINE_PID")
"$LOAD" wait -addr "127.0.0.1:$BASELINE_PORT" -timeout 10s >/dev/null || {
	log "baseline did not become ready; see $OUT/baseline.log"; exit 1; }
log "baseline ready (pid $BASELINE_PID)"


# start_wasm NAME PLUGIN PORT HEALTH_PORT [flags...] starts a wasm-callout
# server and sets STARTED_PID, or leaves it empty and sets START_WHY. The
# compilation cache is off unless the flags turn it on, so that reloads
# measure compiling.
start_wasm() {
	local name=$1 plugin=$2 port=$3 health=$4
	shift 4
	STARTED_PID= START_WHY=
	"$BIN/wasm-callout" --plugin "$plugin" --addr "127.0.0.1:$port" --health-addr "127.0.0.1:$health" --admin-addr "" --tls-addr "" \
		--compilation-cache "" "$@" ${WASM_EXTRA[@]+"${WASM_EXTRA[@]}"} >"$OUT/$name.log" 2>&1 &
	local pid=$!
	PIDS+=("$pid")
	if ! wait_ready "$health" "$pid"; then
		START_WHY="$name did not become ready on :$health/readyz (see $OUT/$name.log)"
		kill "$pid" 2>/dev/null || true
		return 0
	fi
	STARTED_PID=$pid
	log "$name ready (pid $pid)"
}

# plugin NAME: plugins/bin/NAME.wasm, built if missing.
plugin() {
	[[ -f plugins/bin/$1.wasm ]] || "$BIN/wasm-callout" build "./plugins/$1" -o "plugins/bin/$1.wasm" >"$OUT/plugin-build.log" 2>&1
}

# --- wasm-callout (optional until the server exists) -------------------------
WASM_PID=
WASM_WHY=
if [[ ${WASM:-1} == 0 ]]; then
	WASM_WHY="WASM=0"
elif ! "$GO" build -o "$BIN/" ./cmd/wasm-callout 2>"$OUT/wasm-build.log"; then
	WASM_WHY="cmd/wasm-callout does not build (see $OUT/wasm-build.log)"
elif ! plugin basic; then
	WASM_WHY="plugins/bin/basic.wasm is missing and could not be built (see $OUT/plugin-build.log)"
else
	start_wasm wasm-callout plugins/bin/basic.wasm "$WASM_PORT" "$WASM_HEALTH_PORT" --admin-addr "127.0.0.1:$WASM_ADMIN_PORT"
	WASM_PID=$STARTED_PID WASM_WHY=$START_WHY
fi
if [[ -n $WASM_WHY ]]; then
	log "NOTE: measuring the baseline only: $WASM_WHY"
fi

# --- wasm-callout with plugins/tcp-count, for the l4 scenario ------------------
WASM_L4_PID=
L4_WHY=
if [[ $L4 == 0 ]]; then
	L4_WHY="L4=0"
elif [[ -z $WASM_PID ]]; then
	L4_WHY="wasm-callout is not running"
elif ! plugin tcp-count; then
	L4_WHY="plugins/bin/tcp-count.wasm is missing and could not be built (see $OUT/plugin-build.log)"
else
	start_wasm wasm-callout-l4 plugins/bin/tcp-count.wasm "$WASM_L4_PORT" "$WASM_L4_HEALTH_PORT"
	WASM_L4_PID=$STARTED_PID L4_WHY=$START_WHY
fi

# --- wasm-callout with the zero-work plugin ----------------------------------------
WASM_ZERO_PID=
if [[ $ZERO != 0 && -n $WASM_PID ]]; then
	start_wasm wasm-zero host/testdata/zero.wasm "$WASM_ZERO_PORT" "$WASM_ZERO_HEALTH_PORT"
	WASM_ZERO_PID=$STARTED_PID
	[[ -n $START_WHY ]] && log "NOTE: $START_WHY"
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
	for scenario in headers buffered l4; do
		if [[ $scenario == l4 && $L4 == 0 ]]; then
			continue
		fi
		args=(-scenario "$scenario")
		[[ $scenario == buffered ]] && args+=(-body-bytes "$BODY_BYTES")
		[[ $scenario == l4 ]] && args+=(-chunks "$L4_FRAMES" -chunk-bytes "$L4_FRAME_BYTES")
		log "round $round/$ROUNDS: $scenario"
		run_load baseline "$BASELINE_PORT" "$BASELINE_PID" "${args[@]}"
		if [[ $scenario == l4 ]]; then
			if [[ -n $WASM_L4_PID ]]; then
				run_load wasm-callout "$WASM_L4_PORT" "$WASM_L4_PID" "${args[@]}"
			fi
		elif [[ -n $WASM_PID ]]; then
			run_load wasm-callout "$WASM_PORT" "$WASM_PID" "${args[@]}"
		fi
		if [[ $scenario == headers && -n $WASM_ZERO_PID ]]; then
			run_load wasm-zero "$WASM_ZERO_PORT" "$WASM_ZERO_PID" "${args[@]}"
		fi
	done
done
for round in $(seq 1 "$ROUNDS"); do
	for c in $SWEEP; do
		log "sweep round $round/$ROUNDS: headers, $c in flight"
		run_load baseline "$BASELINE_PORT" "$BASELINE_PID" -scenario headers -concurrency "$c"
		[[ -n $WASM_PID ]] && run_load wasm-callout "$WASM_PORT" "$WASM_PID" -scenario headers -concurrency "$c"
		[[ -n $WASM_ZERO_PID ]] && run_load wasm-zero "$WASM_ZERO_PORT" "$WASM_ZERO_PID" -scenario headers -concurrency "$c"
	done
done

echo
echo "Envoy-shaped ext_proc load: $CONCURRENCY in flight, one stream per request, $CONNS connection(s),"
echo "$DURATION per run after $WARMUP warm-up, medians of $ROUNDS interleaved round(s); buffered body $BODY_BYTES B."
if [[ $L4 != 0 ]]; then
	echo "l4: one network_ext_proc stream per TCP connection, $L4_FRAMES frames of $L4_FRAME_BYTES B each way;"
	echo "wasm-callout runs plugins/tcp-count.wasm, the baseline its native echo."
fi
"$LOAD" report -baseline baseline "$RESULTS"
if [[ -n $WASM_WHY ]]; then
	echo
	echo "wasm-callout not measured: $WASM_WHY"
elif [[ -n $L4_WHY && $L4 != 0 ]]; then
	echo
	echo "wasm-callout l4 not measured: $L4_WHY"
fi

# --- hot swap under load -------------------------------------------------------
SWAP=${SWAP:-1}
SWAP_ROUNDS=${SWAP_ROUNDS:-$ROUNDS}
SWAP_DURATION=${SWAP_DURATION:-5s}
SWAP_INTERVAL=${SWAP_INTERVAL:-500ms}
WASM_CACHE_PORT=${WASM_CACHE_PORT:-19104}
WASM_CACHE_HEALTH_PORT=${WASM_CACHE_HEALTH_PORT:-19105}
WASM_CACHE_ADMIN_PORT=${WASM_CACHE_ADMIN_PORT:-19111}
case $SWAP_ROUNDS in ''|*[!0-9]*) echo "bench: SWAP_ROUNDS must be a number" >&2; exit 2;; esac
if [[ $SWAP == 0 ]]; then
	exit 0
fi
if [[ -z $WASM_PID ]]; then
	echo
	echo "hot swap not measured: wasm-callout is not running"
	exit 0
fi


for p in "$WASM_CACHE_PORT" "$WASM_CACHE_HEALTH_PORT" "$WASM_CACHE_ADMIN_PORT"; do
	port_free "$p" || { log "port $p on 127.0.0.1 is in use (set WASM_CACHE_*PORT)"; exit 1; }
done
rm -rf "$OUT/compilation-cache"
"$BIN/wasm-callout" --plugin plugins/bin/basic.wasm --addr "127.0.0.1:$WASM_CACHE_PORT" \
	--health-addr "127.0.0.1:$WASM_CACHE_HEALTH_PORT" --admin-addr "127.0.0.1:$WASM_CACHE_ADMIN_PORT" --tls-addr "" --compilation-cache "$OUT/compilation-cache" ${WASM_EXTRA[@]+"${WASM_EXTRA[@]}"} \
	>"$OUT/wasm-callout-cache.log" 2>&1 &
CACHE_PID=$!
PIDS+=("$CACHE_PID")
wait_ready "$WASM_CACHE_HEALTH_PORT" "$CACHE_PID" || {
	log "wasm-callout --compilation-cache did not become ready (see $OUT/wasm-callout-cache.log)"; exit 1; }
log "wasm-callout with a compilation cache ready (pid $CACHE_PID)"

SWAP_RESULTS_NOCACHE=$OUT/swap-nocache.jsonl
SWAP_RESULTS_CACHE=$OUT/swap-cache.jsonl
: > "$SWAP_RESULTS_NOCACHE"
: > "$SWAP_RESULTS_CACHE"
swap_load() { # results label port pid [extra args]
	local results=$1 label=$2 port=$3 pid=$4
	shift 4
	local line
	if ! line=$("$LOAD" -addr "127.0.0.1:$port" -label "$label" -server-pid "$pid" -scenario headers \
		-concurrency "$CONCURRENCY" -conns "$CONNS" -duration "$SWAP_DURATION" -warmup "$WARMUP" \
		-expect-header x-wasm-callout "$@" | tee -a "$OUT/runs.log" | tail -n 1); then
		log "$label run failed (see $OUT/runs.log)"
		return 0
	fi
	printf '%s\n' "$line" >>"$results"
}
for round in $(seq 1 "$SWAP_ROUNDS"); do
	log "swap round $round/$SWAP_ROUNDS"
	swap_load "$SWAP_RESULTS_NOCACHE" steady "$WASM_PORT" "$WASM_PID"
	swap_load "$SWAP_RESULTS_NOCACHE" swap-nocache "$WASM_PORT" "$WASM_PID" \
		-reload-url "http://127.0.0.1:$WASM_ADMIN_PORT/reload" -reload-interval "$SWAP_INTERVAL"
	swap_load "$SWAP_RESULTS_CACHE" steady "$WASM_CACHE_PORT" "$CACHE_PID"
	swap_load "$SWAP_RESULTS_CACHE" swap-cache "$WASM_CACHE_PORT" "$CACHE_PID" \
		-reload-url "http://127.0.0.1:$WASM_CACHE_ADMIN_PORT/reload" -reload-interval "$SWAP_INTERVAL"
done

echo
echo "Hot swap under load: headers scenario, $CONCURRENCY in flight, POST /reload every $SWAP_INTERVAL (one at a time),"
echo "$SWAP_DURATION per run after $WARMUP warm-up, medians of $SWAP_ROUNDS round(s) interleaved with steady state on the same server."
echo
echo "Without a compilation cache (every reload compiles):"
"$LOAD" report -baseline steady "$SWAP_RESULTS_NOCACHE"
echo
echo "With --compilation-cache:"
"$LOAD" report -baseline steady "$SWAP_RESULTS_CACHE"

failed=0
for f in "$SWAP_RESULTS_NOCACHE" "$SWAP_RESULTS_CACHE"; do
	for n in $(grep '"label":"swap-' "$f" | grep -o '"errors":[0-9]*' | cut -d: -f2); do
		failed=$((failed + n))
	done
done
echo
if (( failed > 0 )); then
	echo "FAIL: $failed request(s) failed during hot swaps (see $OUT/runs.log)"
	exit 1
fi
echo "failed requests during hot swaps: 0"
