#!/usr/bin/env bash
# Compare fanout with the Node.js peers (loadgen/peers/node-ws, loadgen/peers/uws) under the
# same loadgen scenario, on one machine: Redis and loadgen pinned to core 0, the server under
# test pinned to core 1.
#
# usage: scripts/bench-compare.sh [--scenario s1|s2|s3|churn-resume|compression] [--repeat N] [--servers LIST]
#                                 [--out FILE] [--cpu-server N] [--cpu-load N] [-- LOADGEN ARGS...]
#
#   --scenario s1   fanout --subs 1000  --channels 1    --pubs 1  --publish-via redis --payload 64  --rate 0
#              s2   fanout --subs 10000 --channels 1000 --pubs 10 --publish-via ws    --payload 256 --rate 1000
#              s3   conns  --conns 19900 --channels 1000 --hold 5
#              churn-resume  churn-deliveries --subs 200 --channels 20 --pubs 1 --rate 100 --payload 64
#                            --duration 20 --drop-every 15 --offline 2: delivery while every subscriber
#                            drops about every 15 s and stays away 2 s; fanout runs with --history-size
#                            10000 and loadgen adds --resume for it (resubscribe with since); the peers
#                            cannot resume and run the same command without --resume (~25 s a run)
#              compression  fanout --subs 1000 --channels 1 --pubs 1 --publish-via redis --payload 1024
#                           --payload-kind json --rate 100 --compression: every subscriber offers
#                           permessage-deflate; fanout runs with --compression on, fanout-off
#                           (fanout without it: the offer is declined, deliveries go plain) and
#                           uws with COMPRESSION=shared (uWS.SHARED_COMPRESSOR, publishes compressed);
#                           default servers fanout,fanout-off,uws; the table adds wire bytes per delivery;
#                           COMPRESSION_SUBS / COMPRESSION_RATE change --subs / --rate (1000, 100)
#              custom: no preset, give the whole loadgen command after --  (e.g. -- fanout --subs 10 ...)
#   --repeat N      runs per server (default 3); each run gets a freshly started server
#   --servers LIST  comma list out of fanout,fanout-b,fanout-off,node-ws,uws,nchan (default: fanout,node-ws,uws);
#                   fanout-off: fanout without the scenario's server flags (compression: --compression on);
#                   nchan: nginx + Nchan in Redis mode (loadgen/peers/nchan/run.sh) on the same
#                   Redis; its loadgen run subscribes with --sub-path /sub/{channel} and publishes
#                   with --publish-via http (POST /pub/<channel>) instead of WebSocket publishes,
#                   so only scenarios that publish via ws (s2, custom) run for it;
#                   fanout-cluster: fanout on a 3-primary Redis Cluster (started on the load
#                   core next to the single Redis) instead of the single Redis; every table
#                   ends with the Redis CPU (all Redis processes) per delivery;
#                   FANOUT_ARGS / FANOUT_B_ARGS add server flags (e.g. FANOUT_B=target/release/fanout
#                   FANOUT_B_ARGS="--history-size 1000" compares history on and off in one run);
#                   fanout-b is a second fanout build given by FANOUT_B=/path/to/fanout, to A/B an
#                   engine change against its baseline in the same run
#   --out FILE      where the raw JSON lines go (default /tmp/bench-results/<date>-<scenario>.jsonl);
#                   each line: {"server","scenario","run","invocation","args","exit","result":<loadgen JSON>}
#   --cpu-server N  core for the server under test (default 1)
#   --cpu-load N    core for redis-server and loadgen (default 0)
#   -- ARGS         extra loadgen arguments appended after the preset (later flags win in clap
#                   only if loadgen allows repeats; prefer not to repeat a preset flag)
#
# Prints one row per server with the medians over the runs and ratios to fanout.
set -euo pipefail

ORIG_ARGS=("$@")
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib/bench-common.sh
source "$ROOT/scripts/lib/bench-common.sh"

scenario=s1
repeat=3
servers="fanout,node-ws,uws"
out=""
cpu_server=1
cpu_load=0
extra=()

die() { echo "bench-compare: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --scenario) scenario="${2:?}"; shift 2 ;;
    --repeat) repeat="${2:?}"; shift 2 ;;
    --servers) servers="${2:?}"; shift 2 ;;
    --out) out="${2:?}"; shift 2 ;;
    --cpu-server) cpu_server="${2:?}"; shift 2 ;;
    --cpu-load) cpu_load="${2:?}"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,46p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

case "$scenario" in
  s1) preset=(fanout --subs 1000 --channels 1 --pubs 1 --publish-via redis --payload 64 --rate 0) ;;
  s2) preset=(fanout --subs 10000 --channels 1000 --pubs 10 --publish-via ws --payload 256 --rate 1000) ;;
  s3) preset=(conns --conns 19900 --channels 1000 --hold 5) ;;
  churn-resume)
    preset=(churn-deliveries --subs 200 --channels 20 --pubs 1 --publish-via ws --payload 64 --rate 100
            --duration 20 --drop-every 15 --offline 2) ;;
  compression)
    preset=(fanout --subs "${COMPRESSION_SUBS:-1000}" --channels 1 --pubs 1 --publish-via redis --payload 1024
            --payload-kind json --rate "${COMPRESSION_RATE:-100}" --compression) ;;
  custom) preset=(); [[ ${#extra[@]} -gt 0 ]] || die "--scenario custom needs a loadgen command after --" ;;
  *) die "unknown scenario '$scenario' (s1, s2, s3, churn-resume, compression, custom)" ;;
esac
# What only fanout gets in a scenario: server flags, and loadgen flags the peers cannot use.
fanout_server_extra=()
fanout_loadgen_extra=()
if [[ "$scenario" == churn-resume ]]; then
  fanout_server_extra=(--history-size 10000)
  fanout_loadgen_extra=(--resume)
fi
# The uWS peer's compression (COMPRESSION=off|shared).
uws_compression=off
if [[ "$scenario" == compression ]]; then
  fanout_server_extra=(--compression on)
  uws_compression=shared
  servers_given=0
  for a in "${ORIG_ARGS[@]}"; do [[ "$a" == --servers ]] && servers_given=1; done
  ((servers_given)) || servers="fanout,fanout-off,uws"
fi
[[ "$repeat" =~ ^[1-9][0-9]*$ ]] || die "--repeat must be a positive integer"
IFS=',' read -r -a server_list <<<"$servers"
for s in "${server_list[@]}"; do
  case "$s" in fanout|fanout-b|fanout-off|fanout-cluster|node-ws|uws|nchan) ;; *) die "unknown server '$s' (fanout, fanout-b, fanout-off, fanout-cluster, node-ws, uws, nchan)" ;; esac
  if [[ "$s" == nchan && "$scenario" != s2 && "$scenario" != custom ]]; then
    die "nchan runs s2 (or custom) only: its subscribers read Nchan's own channels, which neither a raw Redis PUBLISH (s1) nor fanout's subscribe protocol (s3, churn-resume) reaches"
  fi
  if [[ "$s" == fanout-b && ! -x "${FANOUT_B:-}" ]]; then die "fanout-b needs FANOUT_B=/path/to/a/fanout/binary"; fi
done

for tool in redis-server redis-cli python3 taskset; do
  command -v "$tool" >/dev/null || die "$tool not found on PATH"
done
ncpu="$(nproc)"
(( cpu_server < ncpu && cpu_load < ncpu )) || die "need cores $cpu_load and $cpu_server, this machine has $ncpu"

# --- build / install what is missing -------------------------------------------------------
# FANOUT / LOADGEN may point elsewhere (e.g. another build); by default the release builds.
FANOUT="${FANOUT:-$ROOT/target/release/fanout}"
LOADGEN="${LOADGEN:-$ROOT/target/release/loadgen}"
if [[ ! -x "$FANOUT" || ! -x "$LOADGEN" ]]; then
  echo "bench-compare: building release binaries" >&2
  cargo build --release --workspace --bin fanout --bin loadgen >&2
fi
for s in "${server_list[@]}"; do
  if [[ "$s" == nchan && ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
    "$ROOT/loadgen/peers/install.sh" nchan >&2
  elif [[ "$s" != fanout* && "$s" != nchan && ! -d "$ROOT/loadgen/peers/$s/node_modules" ]]; then
    echo "bench-compare: installing peer dependencies" >&2
    "$ROOT/loadgen/peers/install.sh" >&2
    break
  fi
done

# Many connections (s3): lift the soft fd limit to the hard one for everything started here.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

invocation="$(date +%Y%m%d-%H%M%S)-$$"
if [[ -z "$out" ]]; then
  out="/tmp/bench-results/$(date +%Y-%m-%d-%H%M%S)-$scenario.jsonl"
fi
mkdir -p "$(dirname "$out")"
workdir="$(mktemp -d /tmp/bench-compare.XXXXXX)"

# --- process handling ----------------------------------------------------------------------
redis_pid=""
server_pid=""
cluster_pids=()

cleanup() {
  stop_pid "$server_pid" 3
  stop_pid "$redis_pid" 3
  for p in "${cluster_pids[@]}"; do stop_pid "$p" 3; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- redis ---------------------------------------------------------------------------------
rport="$(free_port)"
REDIS_URL="redis://127.0.0.1:$rport"
start_redis "$rport" "$workdir/redis.log" taskset -c "$cpu_load"

# fanout-cluster: the same fanout on a 3-primary Redis Cluster (no replicas), on the load
# core like the single Redis, so the two compare in one run.
CLUSTER_SEEDS=""
if [[ ",$servers," == *",fanout-cluster,"* ]]; then
  cports=()
  for i in 1 2 3; do
    # A cluster node's bus port is its port + 10000: stay at or below 55535.
    cp="$(python3 -c 'import random, socket
while True:
    p = random.randint(20000, 45000)
    try:
        a, b = socket.socket(), socket.socket()
        a.bind(("127.0.0.1", p)); b.bind(("127.0.0.1", p + 10000))
        a.close(); b.close(); print(p); break
    except OSError:
        pass')"; cports+=("$cp")
    (cd "$workdir" && exec taskset -c "$cpu_load" redis-server --port "$cp" --bind 127.0.0.1 --save '' \
      --appendonly no --cluster-enabled yes --cluster-config-file "nodes-$cp.conf" \
      --cluster-node-timeout 5000 --daemonize no --loglevel warning >"$workdir/cluster-$cp.log" 2>&1) &
    cluster_pids+=("$!")
  done
  for cp in "${cports[@]}"; do
    for ((i = 0; i < 200; i++)); do
      [[ "$(redis-cli -p "$cp" ping 2>/dev/null || true)" == PONG ]] && break; sleep 0.05
    done
    [[ "$(redis-cli -p "$cp" ping 2>/dev/null || true)" == PONG ]] || die "cluster node $cp did not start: $(tail -2 "$workdir/cluster-$cp.log")"
  done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cports[@]}") --cluster-replicas 0 \
    --cluster-yes >"$workdir/cluster-create.log" 2>&1 || die "cluster create failed: $(tail -3 "$workdir/cluster-create.log")"
  for cp in "${cports[@]}"; do
    for ((i = 0; i < 200; i++)); do
      redis-cli -p "$cp" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break; sleep 0.05
    done
  done
  CLUSTER_SEEDS="$(printf '127.0.0.1:%s,' "${cports[@]}")"; CLUSTER_SEEDS="${CLUSTER_SEEDS%,}"
fi

# CPU seconds (user + system) of the Redis processes: the single one, and the cluster's.
redis_cpu() {
  local total=0 p t
  for p in "$redis_pid" "${cluster_pids[@]}"; do
    [[ -r "/proc/$p/stat" ]] || continue
    t=$(awk '{print $14 + $15}' "/proc/$p/stat")
    total=$((total + t))
  done
  echo "$total"
}

# --- header --------------------------------------------------------------------------------
loadgen_cmd=("${preset[@]}" "${extra[@]}")
{
  echo "bench-compare: scenario $scenario, $repeat run(s) per server, servers: ${server_list[*]}"
  echo "  loadgen ${loadgen_cmd[*]}"
  [[ ${#fanout_server_extra[@]} -eq 0 ]] || echo "  fanout also gets: server ${fanout_server_extra[*]}; loadgen ${fanout_loadgen_extra[*]}"
  echo "  server on core $cpu_server; redis-server $(redis-server --version | grep -o 'v=[^ ]*' | cut -c3-) + loadgen on core $cpu_load; $ncpu cores, node $(node --version 2>/dev/null || echo '-')"
  echo "  commit $(git rev-parse --short HEAD 2>/dev/null || echo '-'); raw results: $out; logs: $workdir"
} >&2

# --- one run -------------------------------------------------------------------------------
start_server() { # name port log -> sets server_pid
  local name="$1" port="$2" log="$3"
  case "$name" in
    fanout|fanout-b|fanout-off|fanout-cluster)
      local bin="$FANOUT"
      local -a more=() bus=(--redis "$REDIS_URL") sx=("${fanout_server_extra[@]}")
      [[ "$name" == fanout-off ]] && sx=()
      read -r -a more <<<"${FANOUT_ARGS:-}"
      if [[ "$name" == fanout-b ]]; then bin="$FANOUT_B"; read -r -a more <<<"${FANOUT_B_ARGS:-}"; fi
      [[ "$name" == fanout-cluster ]] && bus=(--redis-cluster "$CLUSTER_SEEDS")
      taskset -c "$cpu_server" "$bin" --listen "127.0.0.1:$port" "${bus[@]}" --shards 1 \
        "${sx[@]}" "${more[@]}" >"$log" 2>&1 &
      ;;
    node-ws|uws)
      PORT="$port" HOST=127.0.0.1 REDIS_URL="$REDIS_URL" NODE_ENV=production COMPRESSION="$uws_compression" \
        taskset -c "$cpu_server" node "$ROOT/loadgen/peers/$name/server.js" >"$log" 2>&1 &
      ;;
    nchan)
      # nginx (one worker, master_process off) execs in place: $! is the nginx process.
      PORT="$port" REDIS_URL="$REDIS_URL" WORKDIR="$workdir/nchan-$port" \
        taskset -c "$cpu_server" "$ROOT/loadgen/peers/nchan/run.sh" >"$log" 2>&1 &
      ;;
  esac
  server_pid=$!
}

run_one() { # name run-number
  local name="$1" run="$2" port log lg_out lg_err rc=0 json
  port="$(free_port)"
  log="$workdir/$name-$run.server.log"
  lg_out="$workdir/$name-$run.loadgen.out"
  lg_err="$workdir/$name-$run.loadgen.err"
  start_server "$name" "$port" "$log"
  if ! wait_for_line "$log" '^listening ' "$server_pid" 30; then
    echo "bench-compare: $name did not report listening; log:" >&2
    tail -20 "$log" >&2 || true
    stop_pid "$server_pid"; server_pid=""
    record "$name" "$run" 127 ""
    return
  fi
  local args=("${loadgen_cmd[@]}" --url "ws://127.0.0.1:$port/" --server-pid "$server_pid" --json)
  [[ "$name" == fanout* ]] && args+=("${fanout_loadgen_extra[@]}")
  # Nchan: the channel is in the subscriber's URL, and publishing is an HTTP POST (Nchan has
  # no WebSocket publish with acks); the rest of the scenario is the same.
  if [[ "$name" == nchan ]]; then
    local a filtered=() skip=0
    for a in "${args[@]}"; do
      if ((skip)); then skip=0; filtered+=(http); continue; fi
      [[ "$a" == --publish-via ]] && skip=1
      filtered+=("$a")
    done
    args=("${filtered[@]}" --sub-path '/sub/{channel}' --pub-url "http://127.0.0.1:$port/pub/{channel}")
    [[ " ${args[*]} " == *" --publish-via "* ]] || args+=(--publish-via http)
  fi
  # loadgen needs Redis only to publish straight into it.
  if [[ " ${loadgen_cmd[*]} " == *" --publish-via redis "* && " ${loadgen_cmd[*]} " != *" --redis "* ]]; then
    args+=(--redis "$REDIS_URL")
  fi
  echo "bench-compare: [$name run $run/$repeat] loadgen ${args[*]}" >&2
  local rcpu0; rcpu0="$(redis_cpu)"
  taskset -c "$cpu_load" "$LOADGEN" "${args[@]}" >"$lg_out" 2>"$lg_err" || rc=$?
  REDIS_CPU_TICKS=$(( $(redis_cpu) - rcpu0 ))
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "bench-compare: $name died during the run; log tail:" >&2
    tail -5 "$log" >&2 || true
  fi
  stop_pid "$server_pid"; server_pid=""
  json_file="$lg_out.json"
  grep -E '^[[:space:]]*\{' "$lg_out" | tail -1 >"$json_file" || true
  if [[ $rc -ne 0 || ! -s "$json_file" ]]; then
    echo "bench-compare: loadgen exit $rc; stderr tail:" >&2
    tail -5 "$lg_err" >&2 || true
  fi
  record "$name" "$run" "$rc" "$json_file" "${args[@]}"
  sleep 1 # let sockets in TIME_WAIT and the kernel settle between runs
}

record() { # name run exit json-file args...   (the JSON goes by file: it can pass the
  # kernel's 128 KiB limit on one environment string, e.g. 1,000 streams)
  local name="$1" run="$2" rc="$3" json_file="$4"; shift 4
  NAME="$name" RUN="$run" RC="$rc" JSON_FILE="$json_file" SCEN="$scenario" INV="$invocation" \
    REDIS_CPU_S="$(awk -v t="${REDIS_CPU_TICKS:-0}" -v hz="$(getconf CLK_TCK)" 'BEGIN {print t / hz}')" \
    python3 - "$@" >>"$out" <<'PY'
import json, os, sys
raw = open(os.environ["JSON_FILE"]).read().strip() if os.path.exists(os.environ["JSON_FILE"]) else ""
try:
    result = json.loads(raw) if raw else None
    err = None if raw else "no JSON line from loadgen"
except ValueError as e:
    result, err = None, "unparsable loadgen output: %s" % e
rec = {"server": os.environ["NAME"], "scenario": os.environ["SCEN"], "run": int(os.environ["RUN"]),
       "invocation": os.environ["INV"], "args": sys.argv[1:], "exit": int(os.environ["RC"]), "result": result}
if err:
    rec["error"] = err
# Redis CPU seconds during the run (every Redis process: the single one and the cluster's).
rec["redis_cpu_s"] = float(os.environ.get("REDIS_CPU_S") or 0)
print(json.dumps(rec, separators=(",", ":")))
PY
}

# Runs interleave (run 1 of every server, then run 2, ...) so that drift in a noisy
# machine's speed spreads over all servers instead of favouring whichever ran first.
for ((run = 1; run <= repeat; run++)); do
  for name in "${server_list[@]}"; do
    run_one "$name" "$run"
  done
done

# --- summary -------------------------------------------------------------------------------
INV="$invocation" SCEN="$scenario" python3 - "$out" <<'PY'
import json, os, statistics, sys

inv = os.environ["INV"]
rows = {}
order = []
with open(sys.argv[1]) as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("invocation") != inv:
            continue
        name = rec["server"]
        if name not in rows:
            rows[name] = []
            order.append(name)
        rows[name].append(rec)

def num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

def median(recs, key):
    vals = [num((r.get("result") or {}).get(key)) for r in recs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def fmt_rate(v):
    if v is None: return "-"
    if v >= 1e6: return "%.2fM" % (v / 1e6)
    if v >= 1e4: return "%.1fk" % (v / 1e3)
    return "%.0f" % v

def fmt_us(v):
    if v is None: return "-"
    if v >= 1e6: return "%.2fs" % (v / 1e6)
    if v >= 1e3: return "%.2fms" % (v / 1e3)
    return "%.0fus" % v

def fmt_num(v, p=0):
    if v is None: return "-"
    return ("%%.%df" % p) % v

def ratio(a, b):
    if a is None or b is None or b == 0: return "-"
    return "%.2fx" % (a / b)

if os.environ.get("SCEN") == "churn-resume":
    # Delivery under churn: what each server delivered, per run and as a median; a ratio is
    # never rounded up to 100 (loadgen floors it to 3 decimals).
    heads = ["server", "ok/runs", "resume", "delivered % (median)", "per run", "lost", "dup",
             "reord", "gaps", "reconnects", "since", "worst sub %", "srv cpu-s", "steal%"]
    table = []
    for name in order:
        recs = rows[name]
        res = [r.get("result") for r in recs if r.get("result") is not None and r.get("exit") == 0]
        def col(k):
            return [x.get(k) for x in res if num(x.get(k)) is not None]
        def tot(k):
            v = col(k)
            return "/".join(str(x) for x in v) if v else "-"
        ratios = col("delivery_ratio_pct")
        steals = [x.get("cpu_steal_pct") or [] for x in res]
        ncores = max((len(x) for x in steals), default=0)
        steal = "/".join("%.1f" % statistics.median([x[c] for x in steals if len(x) > c])
                         for c in range(ncores)) or "-"
        cpu = col("server_cpu_s")
        table.append([name, "%d/%d" % (len(res), len(recs)),
                      "yes" if any(x.get("resume") for x in res) else "no",
                      "%.3f" % statistics.median(ratios) if ratios else "-",
                      " ".join("%.3f" % v for v in ratios) or "-",
                      tot("lost"), tot("duplicates"), tot("reordered"), tot("gaps"),
                      tot("reconnects"), tot("resubscribes_since"),
                      " ".join("%.3f" % v for v in col("worst_sub_ratio_pct")) or "-",
                      "%.2f" % statistics.median(cpu) if cpu else "-", steal])
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(heads)]
    def line(cells):
        return "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))
    print()
    print(line(heads))
    for r in table:
        print(line(r))
    print()
    print("delivered % = distinct messages received / messages published on the subscriber's channels")
    print("while it was subscribed (from before the first publish to the end), over all subscribers;")
    print("lost/dup/reord/gaps/reconnects/since: per run (since = resubscribes that carried an offset);")
    print("worst sub % = the worst subscriber of each run; srv cpu-s = server CPU while publishing (median).")
    sys.exit(0)

cols = [("deliveries_per_sec", fmt_rate), ("deliveries_per_server_cpu_sec", fmt_rate),
        ("p50_us", fmt_us), ("p99_us", fmt_us), ("p999_us", fmt_us), ("max_us", fmt_us),
        ("lost", fmt_num), ("kib_per_conn", lambda v: fmt_num(v, 1)),
        ("wire_bytes_per_delivery", lambda v: fmt_num(v, 1))]
heads = ["server", "ok/runs", "deliv/s", "deliv/cpu-s", "p50", "p99", "p99.9", "max", "lost",
         "KiB/conn", "wire B/deliv", "lg-sat", "steal%", "x deliv/s", "x deliv/cpu-s", "x p99", "x KiB/conn"]

med = {name: {k: median(recs, k) for k, _ in cols} for name, recs in rows.items()}
base = med.get("fanout", {})
table = []
for name in order:
    recs = rows[name]
    ok = sum(1 for r in recs if r.get("result") is not None and r.get("exit") == 0)
    sat = sum(1 for r in recs if (r.get("result") or {}).get("loadgen_saturated") is True)
    m = med[name]
    # Host steal per core during the measured window (median over runs), e.g. "9.8/3.1".
    steals = [(r.get("result") or {}).get("cpu_steal_pct") or [] for r in recs]
    ncores = max((len(x) for x in steals), default=0)
    steal = "/".join("%.1f" % statistics.median([x[c] for x in steals if len(x) > c])
                     for c in range(ncores)) or "-"
    row = [name, "%d/%d" % (ok, len(recs))] + [f(m[k]) for k, f in cols] + [str(sat), steal]
    row += [ratio(m["deliveries_per_sec"], base.get("deliveries_per_sec")),
            ratio(m["deliveries_per_server_cpu_sec"], base.get("deliveries_per_server_cpu_sec")),
            ratio(m["p99_us"], base.get("p99_us")),
            ratio(m["kib_per_conn"], base.get("kib_per_conn"))]
    table.append(row)

widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(heads)]
def line(cells):
    return "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))
print()
print(line(heads))
for r in table:
    print(line(r))
print()
print("medians over runs; x = ratio to fanout (deliv: higher is better, p99/KiB: lower is better);")
print("lg-sat = runs where loadgen reported itself saturated (the result is capped by loadgen, not the server);")
print("steal% = host steal per core (core 0/core 1/...) in the measured window: time this VM's core had")
print("work but the host ran something else; a few % of steal on the load core sets everyone's tail.")
# Redis CPU per delivery (every Redis process, during the measured run).
print()
print("server          redis cpu-s   redis us/delivery")
for name in order:
    vals = []
    for r in rows[name]:
        res = r.get("result") or {}
        d = num(res.get("deliveries_per_sec")); dur = num(res.get("duration_s"))
        if d and dur and r.get("redis_cpu_s") is not None:
            vals.append((r["redis_cpu_s"], r["redis_cpu_s"] * 1e6 / (d * dur)))
    if vals:
        print("%-15s %11.2f %19.3f" % (name, statistics.median(v[0] for v in vals),
                                       statistics.median(v[1] for v in vals)))
PY
