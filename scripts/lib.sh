# lib.sh — what the measurement scripts (bench.sh, faults.sh) share: the
# processes they start and kill on exit, and waiting for ports and
# readiness. Source it; it sets traps.

# PIDS lists the processes started; every one is killed, then reaped, on
# exit.
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

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_ready HEALTH_PORT PID: wait up to 30 s for /readyz, while PID lives.
wait_ready() {
	local _
	for _ in $(seq 1 300); do
		curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$1/readyz" 2>/dev/null && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
