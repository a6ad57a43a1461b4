#!/usr/bin/env bash
# bench-waf.sh — Coraza with the OWASP CRS (plugins/waf) natively and
# through wasm-callout, on the same rules (bench/waf/testdata/crs.json) and
# the same requests (bench/waf: clean GET, clean form POST, XSS, SQL
# injection in the body; each with its response, inspected too).
#
# CPU per request: the bench/waf test binary runs each request kind
# natively (plugins/waf/engine in the process) and through host.Plugin,
# back to back, and reports user+system CPU per request (cpu-ns/op) of the
# whole process. ROUNDS rounds of that, for each CALL_TIMEOUTS value; the
# script prints the median over rounds of each figure and of the per-round
# ratio wasm ÷ native.
#
# Start-up and memory: STARTS times, wasm-callout serve --instances
# INSTANCES from a warm compilation cache (warmed first, not timed): wall
# time to /readyz, the process's CPU seconds by then, and its RSS and peak
# RSS (VmRSS, VmHWM); medians. SERVE_FLAGS adds flags (e.g.
# "--plugin-env GOGC=50").
#
# Environment (defaults in brackets): ROUNDS [5] BENCHTIME [40x]
#   CALL_TIMEOUTS ["1s 0"] STARTS [3] INSTANCES [2] SERVE_FLAGS []
#   GUEST_ENV [] (NAME=VALUE,... for the benchmark's guest)
#   HEALTH_PORT [19120] OUT [bench-out] GO [go]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ROUNDS=${ROUNDS:-5} BENCHTIME=${BENCHTIME:-40x} CALL_TIMEOUTS=${CALL_TIMEOUTS:-"1s 0"}
STARTS=${STARTS:-3} INSTANCES=${INSTANCES:-2} SERVE_FLAGS=${SERVE_FLAGS:-} GUEST_ENV=${GUEST_ENV:-}
HEALTH_PORT=${HEALTH_PORT:-19120} OUT=${OUT:-bench-out} GO=${GO:-go}
mkdir -p "$OUT"
CACHE=$(mktemp -d)
trap 'cleanup; rm -rf "$CACHE"' EXIT

make -s plugins/bin/waf.wasm
TAGS=$(cat plugins/waf/tags)
(cd bench/waf && $GO test -c -tags "$TAGS" -o "$OLDPWD/$OUT/waf-bench.test" .)
$GO build -o "$OUT/wasm-callout" ./cmd/wasm-callout

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "# CPU per request (ms), median of $ROUNDS rounds of $BENCHTIME; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-12s %-10s %10s %10s %8s\n' timeout request native wasm ratio
for to in $CALL_TIMEOUTS; do
	raw="$OUT/waf-cpu-$to.txt"
	: >"$raw"
	for _ in $(seq "$ROUNDS"); do
		(cd bench/waf && "$OLDPWD/$OUT/waf-bench.test" -test.run '^$' -test.bench '^BenchmarkRequest$' \
			-test.benchtime "$BENCHTIME" -call-timeout "$to" -cache "$CACHE" ${GUEST_ENV:+-guest-env "$GUEST_ENV"}) |
			awk '/^BenchmarkRequest\// {split($1, n, "/"); sub(/-[0-9]+$/, "", n[3]); for (i = 1; i <= NF; i++) if ($(i+1) == "cpu-ns/op") print n[2], n[3], $i}' >>"$raw"
	done
	for req in $(awk '{print $1}' "$raw" | sort -u); do
		nat=$(awk -v r="$req" '$1==r && $2=="native" {print $3/1e6}' "$raw" | median)
		was=$(awk -v r="$req" '$1==r && $2=="wasm" {print $3/1e6}' "$raw" | median)
		# per-round ratios: the n-th native figure against the n-th wasm one
		ratio=$(paste <(awk -v r="$req" '$1==r && $2=="native" {print $3}' "$raw") \
			<(awk -v r="$req" '$1==r && $2=="wasm" {print $3}' "$raw") | awk '{print $2/$1}' | median)
		printf '%-12s %-10s %10.2f %10.2f %7.1fx\n' "$to" "$req" "$nat" "$was" "$ratio"
	done
done

echo
echo "# start-up, $INSTANCES instances, warm compilation cache; median of $STARTS ${SERVE_FLAGS:+(flags: $SERVE_FLAGS)}"
# serve starts wasm-callout in this shell (so it can be waited for); its
# pid is in $pid.
serve() {
	"$OUT/wasm-callout" serve --plugin plugins/bin/waf.wasm --plugin-config @bench/waf/testdata/crs.json \
		--instances "$INSTANCES" --compilation-cache "$CACHE" --addr 127.0.0.1:0 --tls-addr "" \
		--health-addr "127.0.0.1:$HEALTH_PORT" $SERVE_FLAGS >>"$OUT/waf-serve.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
}
: >"$OUT/waf-serve.log"
port_free "$HEALTH_PORT" || { echo "port $HEALTH_PORT is taken" >&2; exit 1; }
serve
wait_for() { until curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$HEALTH_PORT/readyz" 2>/dev/null; do
	kill -0 "$1" 2>/dev/null || { echo "wasm-callout exited; see $OUT/waf-serve.log" >&2; exit 1; }; sleep 0.05; done; }
wait_for "$pid"; kill "$pid"; wait "$pid" 2>/dev/null || true   # warms the cache
tck=$(getconf CLK_TCK)
: >"$OUT/waf-start.txt"
for _ in $(seq "$STARTS"); do
	s=$(date +%s%N); serve; wait_for "$pid"; e=$(date +%s%N)
	cpu=$(awk -v t="$tck" '{print ($14+$15)/t}' "/proc/$pid/stat")
	rss=$(awk '/VmRSS/ {print $2/1024}' "/proc/$pid/status"); hwm=$(awk '/VmHWM/ {print $2/1024}' "/proc/$pid/status")
	echo "$(( (e - s) / 1000000 )) $cpu $rss $hwm" >>"$OUT/waf-start.txt"
	kill "$pid"; wait "$pid" 2>/dev/null || true
done
printf 'ready %.2f s   cpu %.2f s   rss %.0f MiB   peak rss %.0f MiB\n' \
	"$(awk '{print $1/1000}' "$OUT/waf-start.txt" | median)" "$(awk '{print $2}' "$OUT/waf-start.txt" | median)" \
	"$(awk '{print $3}' "$OUT/waf-start.txt" | median)" "$(awk '{print $4}' "$OUT/waf-start.txt" | median)"
echo "native: building the same WAFs once takes (BenchmarkStart/native):"
(cd bench/waf && "$OLDPWD/$OUT/waf-bench.test" -test.run '^$' -test.bench '^BenchmarkStart$/native' -test.benchtime 3x | awk '/^BenchmarkStart/ {printf "  %.2f s\n", $3/1e9}')
