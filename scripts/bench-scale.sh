#!/usr/bin/env bash
# Scale runs of issue #3 (target 4): fanout nodes on one Redis, tens of thousands of
# subscribed connections, loadgen spread over every node.
#
# usage: scripts/bench-scale.sh PRESET [--runs N] [--out FILE] [-- LOADGEN ARGS...]
#
#   one-node    1 node,  19,880 subscribers + 10 ws publishers, 1000 channels, 256 B,
#               1000 publishes/s, warmup 3 s, measured 20 s
#   five-nodes  5 nodes on one Redis, 95,000 subscribers (19,000 per node), 10 ws publishers
#               spread over the nodes (publisher k on node k % 5), otherwise as one-node:
#               every channel has subscribers on every node and its publisher on one
#   conns       1 fresh node, loadgen conns --conns 19900 --channels 1000 --hold 5
#               (idle-connection memory, kib_per_conn, for comparison)
#   --runs N    runs of the preset (default 2); every run gets a fresh Redis and fresh nodes
#   --out FILE  raw results, one JSON line per run (default /tmp/bench-results/<date>-<preset>.jsonl)
#   -- ARGS     extra loadgen arguments appended to the preset
#
# Each node: target/release/fanout --listen 127.0.0.1:PORT --redis redis://127.0.0.1:RPORT
# --shards 2 ${NODE_ARGS} (FANOUT / LOADGEN override the binaries; they are copied first, so a rebuild
# during the runs does not change what is measured). Prints, per run, loadgen's JSON without
# the per-stream list, plus "bench" (preset, nodes, per-node RSS and fd counts); at the end a
# one-line-per-run table. Everything started here is killed on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib/bench-common.sh
source "$ROOT/scripts/lib/bench-common.sh"

die() { echo "bench-scale: $*" >&2; exit 2; }

preset="${1:-}"
[[ -n "$preset" && "$preset" != -* ]] || { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; [[ "$preset" == -h || "$preset" == --help ]] && exit 0; exit 2; }
shift
runs=2
out=""
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="${2:?}"; shift 2 ;;
    --out) out="${2:?}"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"

# --drain 10: under load (or a noisy machine) deliveries can run seconds late; with the
# default 2 s drain they would count as lost when they are only late (their latency shows).
traffic=(--channels 1000 --publish-via ws --payload 256 --rate 1000 --warmup 3 --duration 20 --drain 10)
case "$preset" in
  one-node)
    nodes=1
    lg=(fanout --subs 19880 --pubs 10 "${traffic[@]}" --setup-timeout 120 --max-pending 100)
    ;;
  five-nodes)
    nodes=5
    lg=(fanout --subs 95000 --pubs 10 "${traffic[@]}" --setup-timeout 240)
    ;;
  conns)
    nodes=1
    lg=(conns --conns 19900 --channels 1000 --hold 5 --setup-timeout 120 --max-pending 100)
    ;;
  *) die "unknown preset '$preset' (one-node, five-nodes, conns)" ;;
esac
# fanout listens with std's backlog of 128: more handshakes in flight towards one node than
# that overflow its accept queue (SYN dropped, retried after 1 s). --max-pending 100 per node
# (256 over five nodes is ~51 each) keeps setup free of those retries.

for tool in redis-server redis-cli python3; do
  command -v "$tool" >/dev/null || die "$tool not found on PATH"
done

FANOUT="${FANOUT:-$ROOT/target/release/fanout}"
LOADGEN="${LOADGEN:-$ROOT/target/release/loadgen}"
[[ -x "$FANOUT" ]] || die "no $FANOUT (cargo build --release --bin fanout)"
[[ -x "$LOADGEN" ]] || die "no $LOADGEN (cargo build --release -p loadgen --bin loadgen)"

# 19,880 connections per process need the hard fd limit (20,000 here); children inherit it.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile="$(ulimit -n)"
# The accept backlog is min(listen() backlog, somaxconn); loadgen keeps at most --max-pending
# (256) handshakes in flight, so 4096 is plenty. Raise it if it is lower and we may.
somaxconn="$(sysctl -n net.core.somaxconn 2>/dev/null || echo 0)"
if (( somaxconn < 4096 )); then
  sysctl -qw net.core.somaxconn=4096 2>/dev/null && somaxconn=4096 || true
fi

workdir="$(mktemp -d /tmp/bench-scale.XXXXXX)"
cp "$FANOUT" "$workdir/fanout"
cp "$LOADGEN" "$workdir/loadgen"
FANOUT="$workdir/fanout"
LOADGEN="$workdir/loadgen"
[[ -n "$out" ]] || out="/tmp/bench-results/$(date +%Y-%m-%d-%H%M%S)-$preset.jsonl"
mkdir -p "$(dirname "$out")"

# --- process handling ----------------------------------------------------------------------
redis_pid=""
node_pids=()
lg_pid=""

stop_all() {
  local p
  stop_pid "$lg_pid" 3; lg_pid=""
  for p in "${node_pids[@]}"; do stop_pid "$p" 5; done
  node_pids=()
  stop_pid "$redis_pid" 3; redis_pid=""
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# TCP counters that explain connect trouble (host-wide, so other activity counts too).
netstat_snapshot() {
  awk '$1 == "TcpExt:" { if (!h) { split($0, n); h = 1 } else { for (i = 2; i <= NF; i++) print n[i], $i; h = 0 } }' \
    /proc/net/netstat 2>/dev/null | grep -E '^(ListenOverflows|ListenDrops|TCPSynRetrans|TCPTimeouts|TCPAbortOnMemory|TCPAbortOnData|TCPReqQFullDrop|TCPBacklogDrop) '
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
nfds() { local n; n="$(ls -f "/proc/$1/fd" 2>/dev/null | wc -l)"; echo $(( n > 2 ? n - 2 : 0 )); }

echo "bench-scale: preset $preset, $runs run(s), $nodes node(s); fd limit $nofile, somaxconn $somaxconn," \
  "ports $(sysctl -n net.ipv4.ip_local_port_range 2>/dev/null | tr '\t' '-'); commit" \
  "$(git rev-parse --short HEAD 2>/dev/null || echo -); raw: $out; logs: $workdir" >&2

# --- one run -------------------------------------------------------------------------------
run_one() { # run-number
  local run="$1" rport i port log urls="" pids="" rc=0 lg_out lg_err base_rss=() json
  rport="$(free_port)"
  start_redis "$rport" "$workdir/redis-$run.log"
  for ((i = 0; i < nodes; i++)); do
    port="$(free_port)"
    log="$workdir/node$i-$run.log"
    # shellcheck disable=SC2086 # NODE_ARGS is a list of extra fanout flags
    "$FANOUT" --listen "127.0.0.1:$port" --redis "redis://127.0.0.1:$rport" --shards 2 ${NODE_ARGS:-} \
      >"$log" 2>&1 &
    node_pids+=($!)
    wait_for_line "$log" '^listening ' "$!" 30 || { tail -20 "$log" >&2; die "node $i did not start"; }
    urls+="${urls:+,}ws://$(grep -m1 '^listening ' "$log" | awk '{print $2}')/"
    pids+="${pids:+,}${node_pids[-1]}"
  done
  sleep 1 # let the nodes settle (Redis connections, presence registration) before the baseline
  netstat_snapshot >"$workdir/netstat-$run.before"
  for p in "${node_pids[@]}"; do base_rss+=("$(rss_kib "$p")"); done
  lg_out="$workdir/loadgen-$run.out"
  lg_err="$workdir/loadgen-$run.err"
  local args=("${lg[@]}" --url "$urls" --server-pid "$pids" --json "${extra[@]}")
  echo "bench-scale: [run $run/$runs] loadgen ${args[*]}" >&2
  "$LOADGEN" "${args[@]}" >"$lg_out" 2>"$lg_err" &
  lg_pid=$!
  # Peak RSS (every second) and open fds (every 5 s, listing 19k fds is not free) per node.
  # Also note busy processes that are not ours (other benchmarks, builds): the machine has
  # two cores, so anything else running skews latency and CPU figures.
  local peak_fds=() peak_rss=() tick=0 f r ours
  for p in "${node_pids[@]}"; do peak_fds+=(0); peak_rss+=(0); done
  : >"$workdir/foreign-$run"
  while kill -0 "$lg_pid" 2>/dev/null; do
    ours=" $$ $redis_pid $lg_pid ${node_pids[*]} $(pgrep -P "$lg_pid" | tr '\n' ' ' || true) "
    ps -eo pid=,pcpu=,etimes=,comm= | awk -v ours="$ours" \
      'index(ours, " " $1 " ") == 0 && $4 ~ /^(fanout|loadgen|cargo|rustc|node|redis-server|cc|ld)$/ {print $4}' \
      >>"$workdir/foreign-$run"
    for i in "${!node_pids[@]}"; do
      r="$(rss_kib "${node_pids[$i]}")"
      (( r > peak_rss[i] )) && peak_rss[i]=$r
      if (( tick % 5 == 4 )); then
        f="$(nfds "${node_pids[$i]}")"
        (( f > peak_fds[i] )) && peak_fds[i]=$f
      fi
    done
    tick=$((tick + 1))
    sleep 1
  done
  wait "$lg_pid" || rc=$?
  lg_pid=""
  netstat_snapshot >"$workdir/netstat-$run.after"
  local died=()
  for i in "${!node_pids[@]}"; do kill -0 "${node_pids[$i]}" 2>/dev/null || died+=("$i"); done
  json="$(grep -E '^[[:space:]]*\{' "$lg_out" | tail -1 || true)"
  if [[ $rc -ne 0 || -z "$json" ]]; then
    echo "bench-scale: loadgen exit $rc; stderr tail:" >&2
    tail -5 "$lg_err" >&2 || true
  fi
  ((${#died[@]} == 0)) || echo "bench-scale: node(s) ${died[*]} died during the run" >&2
  grep -ihE 'error|warn|panic' "$workdir"/node*-"$run".log 2>/dev/null | sort | uniq -c | sort -rn | head -5 >&2 || true
  PRESET="$preset" RUN="$run" RC="$rc" LGOUT="$lg_out" NODES="$nodes" NS="$workdir/netstat-$run" \
    FOREIGN="$(sort "$workdir/foreign-$run" | uniq -c | awk '{printf "%s%s:%s", sep, $2, $1; sep=","}')" \
    NODE_ARGS="${NODE_ARGS:-}" FANOUT_MD5="$(md5sum <"$FANOUT" | cut -c1-12)" \
    BASE="${base_rss[*]}" PRSS="${peak_rss[*]}" PFDS="${peak_fds[*]}" DIED="${died[*]:-}" \
    python3 - "$out" <<'PY'
import json, os, sys
lines = [l for l in open(os.environ["LGOUT"]).read().splitlines() if l.lstrip().startswith("{")]
try:
    res = json.loads(lines[-1]) if lines else {}
except ValueError:
    res = {}
ints = lambda k: [int(x) for x in os.environ[k].split()]
bench = {"preset": os.environ["PRESET"], "run": int(os.environ["RUN"]), "exit": int(os.environ["RC"]),
         "nodes": int(os.environ["NODES"]), "node_rss_baseline_kib": ints("BASE"),
         "node_rss_peak_kib": ints("PRSS"), "node_fds_peak": ints("PFDS"),
         "nodes_died": ints("DIED")}
def ns(path):
    try:
        return {k: int(v) for k, v in (l.split() for l in open(path) if l.strip())}
    except (OSError, ValueError):
        return {}
b, a = ns(os.environ["NS"] + ".before"), ns(os.environ["NS"] + ".after")
bench["tcp_counters_delta"] = {k: a[k] - b.get(k, 0) for k in a}
# Other processes seen during the run: name -> number of 1 s samples it was present in.
bench["foreign_procs"] = dict((x.split(":")[0], int(x.split(":")[1])) for x in os.environ["FOREIGN"].split(",") if x)
bench["node_args"] = os.environ["NODE_ARGS"]
bench["fanout_md5"] = os.environ["FANOUT_MD5"]
res["bench"] = bench
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(res, separators=(",", ":")) + "\n")
short = {k: v for k, v in res.items() if k != "streams"}
print(json.dumps(short, separators=(",", ":")))
PY
  stop_all
  sleep 2 # TIME_WAIT and socket memory settle between runs
}

start_line=0
[[ -f "$out" ]] && start_line="$(wc -l <"$out")"
for ((run = 1; run <= runs; run++)); do
  run_one "$run"
done

# --- summary -------------------------------------------------------------------------------
python3 - "$out" "$start_line" <<'PY' >&2
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]).read().splitlines()[int(sys.argv[2]):] if l.strip()]
def g(r, *ks):
    v = r
    for k in ks:
        v = (v or {}).get(k) if isinstance(v, dict) else None
    return v
if not recs:
    sys.exit(0)
if recs[0].get("scenario") == "conns":
    cols = [("conns", ("subscribed",)), ("conn/s", ("connects_per_sec",)), ("errors", None),
            ("rss_before", ("server_rss_before_kib",)), ("rss_after", ("server_rss_after_kib",)),
            ("KiB/conn", ("kib_per_conn",)), ("sat", ("loadgen_saturated",))]
else:
    cols = [("conns", ("subscribed",)), ("setup_s", ("setup_s",)), ("deliv/s", ("deliveries_per_sec",)),
            ("lost", ("lost",)), ("dup", ("duplicates",)), ("reord", ("reordered",)), ("errors", None),
            ("p50_ms", ("p50_us",)), ("p99_ms", ("p99_us",)), ("p999_ms", ("p999_us",)), ("max_ms", ("max_us",)),
            ("srv_cpu%", ("server_cpu_pct",)), ("deliv/cpu_s", ("deliveries_per_server_cpu_sec",)),
            ("rss_MiB", ("server_rss_after_setup_kib",)), ("KiB/conn", ("kib_per_conn",)),
            ("lg_cpu%", ("loadgen_cpu_pct",)), ("lg_max_thr%", ("loadgen_max_thread_cpu_pct",)),
            ("sat", ("loadgen_saturated",))]
cols.append(("listen_ovf", ("bench", "tcp_counters_delta", "ListenOverflows")))
cols.append(("foreign", ("bench", "foreign_procs")))
def errors(r):
    ks = ["connect_errors", "handshake_errors", "subscribe_errors", "setup_timeouts", "disconnects",
          "publish_errors", "error_frames", "publisher_failures"]
    return sum(r.get(k) or 0 for k in ks if isinstance(r.get(k), int))
def val(r, name, path):
    if path is None:
        return errors(r)
    v = g(r, *path)
    if v is None:
        return None
    if name.endswith("_ms"):
        return round(v / 1000, 2)
    if name == "rss_MiB":
        return round(v / 1024, 1)
    if isinstance(v, dict):
        return ",".join(f"{k}:{n}" for k, n in v.items()) or "-"
    return v
print("run  " + "  ".join(f"{n:>11}" for n, _ in cols))
table = []
for r in recs:
    row = [val(r, n, p) for n, p in cols]
    table.append(row)
    print(f"{g(r, 'bench', 'run'):>3}  " + "  ".join(f"{str(x):>11}" for x in row))
if len(table) > 1:
    med = []
    for i in range(len(cols)):
        xs = [row[i] for row in table if isinstance(row[i], (int, float)) and not isinstance(row[i], bool)]
        med.append(round(statistics.median(xs), 3) if xs else "-")
    print("med  " + "  ".join(f"{str(x):>11}" for x in med))
PY
