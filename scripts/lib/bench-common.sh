# Shell helpers shared by scripts/bench-compare.sh and scripts/bench-scale.sh (sourced, not
# run): a free port, stopping a process with a grace period, waiting for a log line, and
# starting a throwaway redis-server. Callers define `die MESSAGE`.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

stop_pid() { # pid [timeout-seconds]: TERM, then KILL after the timeout
  local pid="$1" t="${2:-5}" i
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < t * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

wait_for_line() { # file regex pid timeout-seconds: 0 once the line is there, 1 if pid died or time ran out
  local file="$1" re="$2" pid="$3" t="$4" i
  for ((i = 0; i < t * 20; i++)); do
    grep -Eq "$re" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

start_redis() { # port log [command prefix, e.g. taskset -c 0] -> sets redis_pid, waits for PONG
  local port="$1" log="$2" i
  shift 2
  "$@" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --loglevel warning >"$log" 2>&1 &
  redis_pid=$!
  for ((i = 0; i < 100; i++)); do
    [[ "$(redis-cli -p "$port" ping 2>/dev/null || true)" == PONG ]] && return 0
    kill -0 "$redis_pid" 2>/dev/null || die "redis-server failed to start: $(cat "$log")"
    sleep 0.05
  done
  die "redis-server not answering on $port"
}
