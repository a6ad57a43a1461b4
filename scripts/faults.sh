#!/usr/bin/env bash
# faults.sh — fault containment under load: how plugin faults in a few
# requests affect the good traffic around them, how fast the faulting
# requests get the failure policy, how long the instance pool takes to be
# fully healthy again, and what the server's memory peaks at.
#
# wasm-callout serves host/testdata/faults.wasm on 127.0.0.1 (fail-closed,
# --failure-status 500, the defaults). HTTP requests carrying the header
# "x-fault: KIND", and TCP connections whose first frame is "KIND", make the
# plugin misbehave in on_request_headers / on_downstream_data:
#
#   trap  hits unreachable          oom   grows memory to the limit, then traps
#   loop  spins until --call-timeout exit  calls proc_exit
#
# For each kind and service (http: the headers scenario, -expect-header x-ok;
# tcp: the l4 scenario) a fresh server is started (so that its peak RSS is
# the run's), then extproc-load keeps CONCURRENCY requests in flight for
# FAULTS×EVERY requests, every EVERY-th a fault one, while "extproc-load
# watch" polls GET /plugin every POLL to time each dip of healthy_instances
# below instances until it is back to full (instance recovery; a dip shorter
# than POLL may go unseen). The server's VmHWM is read at the end. The kind
# "none" is the same load without faults, for reference.
#
# The loop kind costs --call-timeout per fault, and the emulated Envoy's
# message_timeout (200 ms by default) would answer it with a 504 before the
# server's failure policy at the default 1 s. So:
#   loop      default --call-timeout (1s), extproc-load -message-timeout 3s
#             (the filter configured to outwait the plugin deadline),
#             LOOP_FAULTS faults, one every LOOP_EVERY requests;
#   loop150   --call-timeout 150ms, below Envoy's default message_timeout,
#             FAULTS faults, one every EVERY requests.
#
# Environment (defaults in brackets):
#   KINDS ["none trap loop loop150 oom exit"]  SERVICES ["http tcp"]
#   FAULTS [50]  EVERY [800]  LOOP_FAULTS [20]  LOOP_EVERY [2000]
#   CONCURRENCY [16]  POLL [10ms]  SETTLE [1.5] (seconds after each load,
#   for the last fault's instance to recover before the watch stops)
#   RUN_TIMEOUT [60] (seconds, one load)  MAX_SECONDS [360] (the whole
#   script; kinds still to run then are skipped and said so)
#   PORT [19201]  HEALTH_PORT [19202]  ADMIN_PORT [19203]  OUT [a temporary directory, kept]
#   WASM_FLAGS [] extra wasm-callout flags for every server
#   LOAD_FLAGS [] extra extproc-load flags for every run, e.g.
#   LOAD_FLAGS="-message-timeout 3s" to see when the server itself answers a
#   fault that outlasts Envoy's default message_timeout (oom)  GO [go]
# Needs curl and jq.
set -euo pipefail

cd "$(dirname "$0")/.."

KINDS=${KINDS:-none trap loop loop150 oom exit}
SERVICES=${SERVICES:-http tcp}
FAULTS=${FAULTS:-50}
EVERY=${EVERY:-800}
LOOP_FAULTS=${LOOP_FAULTS:-20}
LOOP_EVERY=${LOOP_EVERY:-2000}
CONCURRENCY=${CONCURRENCY:-16}
POLL=${POLL:-10ms}
SETTLE=${SETTLE:-1.5}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
MAX_SECONDS=${MAX_SECONDS:-360}
PORT=${PORT:-19201}
HEALTH_PORT=${HEALTH_PORT:-19202}
ADMIN_PORT=${ADMIN_PORT:-19203}
GO=${GO:-go}
read -r -a WASM_EXTRA <<<"${WASM_FLAGS:-}"
read -r -a LOAD_EXTRA <<<"${LOAD_FLAGS:-}"

log() { printf 'faults: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
num() { case $2 in ''|*[!0-9]*) die "$1 must be a number";; esac; }
num FAULTS "$FAULTS"; num EVERY "$EVERY"; num LOOP_FAULTS "$LOOP_FAULTS"; num LOOP_EVERY "$LOOP_EVERY"
num CONCURRENCY "$CONCURRENCY"; num RUN_TIMEOUT "$RUN_TIMEOUT"; num MAX_SECONDS "$MAX_SECONDS"
num PORT "$PORT"; num HEALTH_PORT "$HEALTH_PORT"; num ADMIN_PORT "$ADMIN_PORT"
(( RUN_TIMEOUT >= 1 && RUN_TIMEOUT <= 600 )) || die "RUN_TIMEOUT must be in [1, 600]"
(( MAX_SECONDS >= 1 && MAX_SECONDS <= 3600 )) || die "MAX_SECONDS must be in [1, 3600]"
for tool in curl jq timeout; do
	command -v "$tool" >/dev/null || die "needs $tool"
done

OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/faults.XXXXXX")}
BIN=$OUT/bin
mkdir -p "$BIN"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

. scripts/lib.sh
forget() { # pid: reaped, not to be killed again
	local keep=() p
	for p in "${PIDS[@]}"; do
		[[ $p == "$1" ]] || keep+=("$p")
	done
	PIDS=(${keep[@]+"${keep[@]}"})
}

table() { if command -v column >/dev/null; then column -t -s $'\t'; else cat; fi; }
for p in "$PORT" "$HEALTH_PORT" "$ADMIN_PORT"; do
	port_free "$p" || die "port $p on 127.0.0.1 is in use (set PORT, HEALTH_PORT, ADMIN_PORT)"
done

log "building into $BIN"
"$GO" build -o "$BIN/" ./cmd/wasm-callout ./cmd/extproc-load
LOAD=$BIN/extproc-load
PLUGIN=host/testdata/faults.wasm
[[ -f $PLUGIN ]] || die "$PLUGIN is missing"

SERVER_PID=
start_server() { # log-file extra-flags...
	local logf=$1
	shift
	"$BIN/wasm-callout" --plugin "$PLUGIN" --addr "127.0.0.1:$PORT" --health-addr "127.0.0.1:$HEALTH_PORT" --admin-addr "127.0.0.1:$ADMIN_PORT" \
		--tls-addr "" --log-level error "$@" ${WASM_EXTRA[@]+"${WASM_EXTRA[@]}"} >"$logf" 2>&1 &
	SERVER_PID=$!
	PIDS+=("$SERVER_PID")
	wait_ready "$HEALTH_PORT" "$SERVER_PID" || die "wasm-callout did not become ready (see $logf)"
}
stop_server() {
	kill "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
	forget "$SERVER_PID"
	SERVER_PID=
}
status_kb() { # pid field
	awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# run_one kind service: one server, one watched load; appends a JSON line.
run_one() {
	local kind=$1 svc=$2 word=$1 faults=$FAULTS every=$EVERY
	local srv_flags=() load_flags=()
	case $kind in
	none) faults=0 ;;
	loop) faults=$LOOP_FAULTS every=$LOOP_EVERY load_flags+=(-message-timeout 3s) ;;
	loop150) word=loop srv_flags+=(--call-timeout 150ms) ;;
	trap | oom | exit) ;;
	*) die "unknown kind $kind" ;;
	esac
	local requests=$((faults * every))
	((requests > 0)) || requests=$((FAULTS * EVERY))
	case $svc in
	http) load_flags+=(-scenario headers -expect-header x-ok) ;;
	tcp) load_flags+=(-scenario l4) ;;
	*) die "unknown service $svc" ;;
	esac
	if ((faults > 0)); then
		load_flags+=(-fault-every "$every")
		if [[ $svc == http ]]; then
			load_flags+=(-fault-header "x-fault: $word")
		else
			load_flags+=(-fault-data "$word")
		fi
	fi
	local tag=$kind-$svc
	start_server "$OUT/server-$tag.log" ${srv_flags[@]+"${srv_flags[@]}"}
	local rss0
	rss0=$(status_kb "$SERVER_PID" VmHWM)
	"$LOAD" watch -url "http://127.0.0.1:$ADMIN_PORT/plugin" -interval "$POLL" -duration "$((RUN_TIMEOUT + 30))s" \
		-label "$tag" >"$OUT/watch-$tag.txt" 2>&1 &
	local watch_pid=$!
	PIDS+=("$watch_pid")
	log "$tag: $requests requests, $faults faults, $CONCURRENCY in flight ${srv_flags[*]:-}"
	timeout -s INT -k 5 "$RUN_TIMEOUT" "$LOAD" -addr "127.0.0.1:$PORT" -label "$tag" -server-pid "$SERVER_PID" \
		-concurrency "$CONCURRENCY" -requests "$requests" "${load_flags[@]}" ${LOAD_EXTRA[@]+"${LOAD_EXTRA[@]}"} >"$OUT/load-$tag.txt" 2>&1 &
	local load_pid=$! rc=0
	PIDS+=("$load_pid")
	wait "$load_pid" || rc=$?
	forget "$load_pid"
	((rc == 0)) || log "$tag: load exited $rc (timeout or error; see $OUT/load-$tag.txt)"
	sleep "$SETTLE"
	kill -TERM "$watch_pid" 2>/dev/null || true
	wait "$watch_pid" 2>/dev/null || true
	forget "$watch_pid"
	local hwm rss alive=1 failed load_json watch_json
	kill -0 "$SERVER_PID" 2>/dev/null || alive=0
	hwm=$(status_kb "$SERVER_PID" VmHWM)
	rss=$(status_kb "$SERVER_PID" VmRSS)
	stop_server
	failed=$(grep -c 'plugin instance failed' "$OUT/server-$tag.log" || true)
	load_json=$(grep '^{' "$OUT/load-$tag.txt" | tail -n 1 || true)
	watch_json=$(grep '^{' "$OUT/watch-$tag.txt" | tail -n 1 || true)
	[[ -n $load_json ]] || load_json='{}'
	[[ -n $watch_json ]] || watch_json='{}'
	jq -c -n --arg kind "$kind" --arg svc "$svc" --argjson load "$load_json" --argjson watch "$watch_json" \
		--argjson hwm0 "${rss0:-0}" --argjson hwm "${hwm:-0}" --argjson rss "${rss:-0}" --argjson failed "${failed:-0}" \
		--argjson alive "$alive" --argjson rc "$rc" --arg flags "${srv_flags[*]:-}" \
		'{kind: $kind, svc: $svc, flags: $flags, load_rc: $rc, server_alive: ($alive == 1),
		  start_hwm_kb: $hwm0, hwm_kb: $hwm, end_rss_kb: $rss, instances_failed_logged: $failed,
		  load: $load, watch: $watch}' >>"$RESULTS"
}

skipped=()
for kind in $KINDS; do
	for svc in $SERVICES; do
		if ((SECONDS > MAX_SECONDS)); then
			skipped+=("$kind-$svc")
			continue
		fi
		run_one "$kind" "$svc"
	done
done

echo
echo "Fault containment: wasm-callout --plugin $PLUGIN (fail-closed, status 500${WASM_FLAGS:+, $WASM_FLAGS})${LOAD_FLAGS:+, extproc-load $LOAD_FLAGS},"
echo "$CONCURRENCY in flight, one stream per request; http = headers scenario, tcp = l4 (4 frames of 1 KiB each way)."
echo "faults: fault requests (policy = ImmediateResponse 500 / CLOSE, other = anything else); fault ms: time to that answer."
echo "good: good requests; errs: good failures, byst: of them the failure policy (bystanders on the failed instance)."
echo "inst: instance failures in the server log; dips: pool below full seen by GET /plugin every $POLL, recovery ms p50/max."
echo "hwm: server VmHWM at start -> end of the run (MiB)."
echo
jq -r -s '
  def f1: if . == null then "-" else (. * 10 | round / 10 | tostring) end;
  def mib: (. / 1024 | round | tostring);
  (["kind", "svc", "faults", "policy", "other", "fault_ms_p50/max", "good", "errs", "byst", "good_ms_p50/p99",
    "inst", "dips", "recov_ms_p50/max", "hwm_MiB"] | @tsv),
  (.[] | [.kind, .svc, (.load.faults // 0), (.load.fault_policy // 0), (.load.fault_other // 0),
    ((.load.fault_p50_ms | f1) + "/" + (.load.fault_max_ms | f1)),
    (.load.requests // "-"), (.load.errors // "-"), (.load.good_policy_failures // 0),
    ((.load.p50_ms | f1) + "/" + (.load.p99_ms | f1)),
    .instances_failed_logged, ((.watch.dips // "-" | tostring) + (if .watch.unrecovered then "+open" else "" end)),
    ((.watch.recovery_p50_ms | f1) + "/" + (.watch.recovery_max_ms | f1)),
    ((.start_hwm_kb | mib) + "->" + (.hwm_kb | mib))] | @tsv)' "$RESULTS" | table
echo
echo "Good-request errors and fault requests not answered with the policy, by kind:"
jq -r -s '.[] | select((.load.error_kinds // {}) != {} or (.load.fault_other_kinds // {}) != {} or .load_rc != 0 or (.server_alive | not)) |
  "  \(.kind)-\(.svc):" +
  (if .load_rc != 0 then " [load exited \(.load_rc)]" else "" end) +
  (if .server_alive then "" else " [server died]" end),
  ((.load.error_kinds // {}) | to_entries[] | "    good  \(.value)  \(.key)"),
  ((.load.fault_other_kinds // {}) | to_entries[] | "    fault \(.value)  \(.key)")' "$RESULTS"
if ((${#skipped[@]} > 0)); then
	echo
	echo "NOT RUN (MAX_SECONDS=$MAX_SECONDS reached): ${skipped[*]}"
fi
echo
echo "results: $RESULTS (one JSON object per run; load and watch output, server logs in $OUT)"
