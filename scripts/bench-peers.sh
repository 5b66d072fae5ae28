#!/usr/bin/env bash
# scripts/bench-peers.sh [--quick] [--inputs "v5-capture ipfix-capture v5-gen ipfix-gen"]
#                        [--collectors "flowshard goflow2 nfacctd"] [--step-seconds N]
#                        [--cpu C] [--gen-cpu C] [--out DIR]
#
# flowshard, goflow2 and pmacct's nfacctd side by side in one run, on the same inputs, each
# collector pinned to one CPU (--cpu, default 0) and a steady-rate sendmmsg sender on another
# (--gen-cpu, default the last):
#   v5-capture, ipfix-capture: real exporters' captures (../shared/data/captures/softflowd-v5 and
#       -v10: 28.9 and 30.7 records per datagram) looped by `flowshard gen --capture`;
#   v5-gen, ipfix-gen: flowshard's generated traffic (`flowshard gen --pool 5`).
# Each collector runs in its fastest documented configuration for the job:
#   flowshard: 1 shard, defaults (6 dimensions, detection on), rollups to /dev/null;
#   goflow2 v2.2.6: GOMAXPROCS=1, -format bin, -transport file to /dev/null;
#   nfacctd 1.7.7: the memory plugin (aggregate proto), plugin_pipe_size 10 MB with
#       plugin_buffer_size 10 KB (CONFIG-KEYS: buffering "may improve throughput", 1:1000),
#       a 32 MB socket like flowshard's.
# Each is counted by its own counters, data records only:
#   flowshard: the status line's records (data records decoded and aggregated);
#   goflow2: goflow2_flow_process_nf_flowset_records_total{type="DataFlowSet"} for v9/IPFIX
#       (options records excluded) and, for v5, goflow2_flow_process_nf_flowset_total
#       {version="5"} (v2.2.6 adds each v5 packet's record count there);
#   nfacctd: it keeps no record counter for NetFlow (FLOWS stays 0), so its memory table's
#       byte counters (pmacct -s) over the octets offered give the accepted fraction of the
#       records offered; the last partly filled plugin buffer (at most 30 records) is not yet
#       in the table when read, so a step is clean for it when it misses at most 30 records.
# Every collector gets a 32 MB socket buffer (net.core.rmem_default is raised for goflow2, which
# has no option for it); the kernel's drops on the port are recorded per step.
# CPU is the collector's processes' utime+stime over the step (all threads, nfacctd's core and
# plugin processes), in % of one CPU. The offered rate is stepped up until loss exceeds
# 0.01 %; the highest clean step, its CPU and the first lossy step go to
# results/peers-<time>/table.md (steps.csv has every step).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0; cpu=0; gen_cpu=""; out=""; step=""
inputs="v5-capture ipfix-capture v5-gen ipfix-gen"
collectors="flowshard goflow2 nfacctd"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --inputs) inputs="$2"; shift ;;
    --collectors) collectors="$2"; shift ;;
    --step-seconds) step="$2"; shift ;;
    --cpu) cpu="$2"; shift ;;
    --gen-cpu) gen_cpu="$2"; shift ;;
    --out) out="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
last=$(( $(nproc) - 1 )); [ -n "$gen_cpu" ] || gen_cpu=$last
[ -n "$step" ] || { step=10; [ $quick = 1 ] && step=5; }
out=${out:-results/peers-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
captures=$(cd ../shared/data/captures && pwd)
GOFLOW2_VERSION=v2.2.6
export GOBIN="$PWD/.cache/go/bin" GOPATH="$PWD/.cache/go" GOFLAGS=-mod=mod
if [ ! -x "$GOBIN/goflow2" ]; then
  echo "installing goflow2 $GOFLOW2_VERSION"
  go install "github.com/netsampler/goflow2/v2/cmd/goflow2@$GOFLOW2_VERSION"
fi
if ! command -v nfacctd >/dev/null; then
  echo "installing pmacct (nfacctd)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pmacct >/dev/null
fi
cargo build --release --quiet
bin=$PWD/target/release/flowshard
source scripts/lib/host.sh
raise_udp_limits
hz=$(getconf CLK_TCK)
# Every collector gets the same 32 MB socket buffer: flowshard asks for it (SO_RCVBUF), nfacctd
# through nfacctd_pipe_size, goflow2 has no option and takes net.core.rmem_default, raised for
# the run (when we may) and restored after.
rmem_default_was=$(cat /proc/sys/net/core/rmem_default)
if [ -w /proc/sys/net/core/rmem_default ]; then
  echo 33554432 > /proc/sys/net/core/rmem_default
  trap 'echo "$rmem_default_was" > /proc/sys/net/core/rmem_default' EXIT
else
  echo "warning: cannot raise net.core.rmem_default: goflow2 runs with a $rmem_default_was-byte socket buffer" >&2
fi
kdrops() { # kdrops PORT -> datagrams the kernel dropped on sockets bound to that UDP port
  python3 -c '
import sys
port = "%04X" % int(sys.argv[1])
n = 0
for f in ("/proc/net/udp", "/proc/net/udp6"):
    try:
        for l in open(f).read().splitlines()[1:]:
            p = l.split()
            if p[1].rsplit(":", 1)[1] == port:
                n += int(p[-1])
    except OSError:
        pass
print(n)' "$1"
}

source_args() { # source_args INPUT -> the generator's traffic arguments
  case "$1" in
    v5-capture) echo "--capture $captures/softflowd-v5.pcap" ;;
    ipfix-capture) echo "--capture $captures/softflowd-v10.pcap" ;;
    v5-gen) echo "--protocol v5 --seed 7 --pool 5" ;;
    ipfix-gen) echo "--protocol ipfix --seed 7 --pool 5" ;;
    *) echo "unknown input $1" >&2; exit 2 ;;
  esac
}
offer() { # offer INPUT PORT RATE SECONDS -> the generator's JSON summary
  # shellcheck disable=SC2046
  taskset -c "$gen_cpu" "$bin" gen $(source_args "$1") --exporters 1 --to "127.0.0.1:$2" --rate "$3" \
    --duration "$4" 2>&1 | tail -1
}
jget() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
ticks() { # ticks PID... -> utime+stime of every thread of these processes
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
  done
  echo "$t"
}

# --- per-collector start / count / pids ----------------------------------------------------
start_flowshard() {
  cat > "$out/flowshard.toml" <<CONF
[general]
status_interval_s = 1
state_dir = "$out/state"
[[listener]]
address = "127.0.0.1:$1"
[cores]
shards = [$cpu]
io = [$cpu]
pin = false
[[sink]]
type = "file"
path = "/dev/null"
CONF
  taskset -c "$cpu" "$bin" run --config "$out/flowshard.toml" 2> "$out/flowshard-$input.log" &
  pid=$!
}
count_flowshard() {
  sleep 1.2 # the next status line (every second) holds the step's last records
  grep 'flowshard status' "$out/flowshard-$input.log" | tail -1 | sed -n 's/.* records=\([0-9]*\).*/\1/p'
}
pids_flowshard() { echo "$pid"; }

start_goflow2() {
  GOMAXPROCS=1 taskset -c "$cpu" "$GOBIN/goflow2" \
    -listen "netflow://127.0.0.1:$1" -format bin -transport file -transport.file /dev/null \
    -addr "127.0.0.1:$(( $1 + 2 ))" > "$out/goflow2-$input.log" 2>&1 &
  pid=$!; gf_metrics="127.0.0.1:$(( $1 + 2 ))"
}
count_goflow2() {
  curl -s "http://$gf_metrics/metrics" | python3 -c '
import re, sys
n = 0
for l in sys.stdin:
    if l.startswith("#"):
        continue
    name = l.split("{")[0]
    labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", l))
    if name == "goflow2_flow_process_nf_flowset_records_total" and labels.get("type") == "DataFlowSet":
        n += float(l.split()[-1])
    if name == "goflow2_flow_process_nf_flowset_total" and labels.get("version") == "5":
        n += float(l.split()[-1])
print(int(n))'
}
pids_goflow2() { echo "$pid"; }

start_nfacctd() {
  rm -rf "$out/nfacctd"; mkdir -p "$out/nfacctd"
  cat > "$out/nfacctd/nfacctd.conf" <<CONF
daemonize: false
nfacctd_ip: 127.0.0.1
nfacctd_port: $1
nfacctd_pipe_size: 33554432
plugins: memory[m]
aggregate: proto
imt_path: $out/nfacctd/pipe
plugin_pipe_size: 10240000
plugin_buffer_size: 10240
CONF
  taskset -c "$cpu" nfacctd -f "$out/nfacctd/nfacctd.conf" > "$out/nfacctd/log-$input" 2>&1 &
  pid=$!
}
octets_nfacctd() {
  pmacct -p "$out/nfacctd/pipe" -s -O json 2>/dev/null | python3 -c '
import json, sys
print(sum(json.loads(l).get("bytes", 0) for l in sys.stdin if l.strip().startswith("{")))'
}
pids_nfacctd() { echo "$pid $(pgrep -P "$pid" | xargs)"; }

measure() { # measure NAME INPUT PORT RATES...
  local name=$1; input=$2; local port=$3; shift 3
  "start_$name" "$port"; sleep 2
  # warm-up (templates learned, caches built), not measured
  offer "$input" "$port" 20000 2 > /dev/null; sleep 2
  local best=0 best_cpu=- lossy=- rate
  for rate in "$@"; do
    local c0 t0 t1 g off acc loss cpu_pct clean k0 kd
    if [ "$name" = nfacctd ]; then c0=$(octets_nfacctd); else c0=$("count_$name"); fi
    k0=$(kdrops "$port")
    # shellcheck disable=SC2046
    t0=$(ticks $("pids_$name"))
    g=$(offer "$input" "$port" "$rate" "$step")
    # shellcheck disable=SC2046
    t1=$(ticks $("pids_$name"))
    sleep 2 # let the collector finish what is queued
    kd=$(( $(kdrops "$port") - k0 ))
    off=$(jget "$g" records)
    cpu_pct=$(python3 -c "import sys; t,hz,s=map(float,sys.argv[1:]); print(f'{100*t/hz/s:.0f}')" "$((t1 - t0))" "$hz" "$(jget "$g" seconds)")
    if [ "$name" = nfacctd ]; then
      acc=$(python3 -c "import sys; a,b,o,r=map(int,sys.argv[1:]); print(round((b-a)/o*r))" "$c0" "$(octets_nfacctd)" "$(jget "$g" octets)" "$off")
    else
      acc=$(( $("count_$name") - c0 ))
    fi
    loss=$(python3 -c "import sys; o,a=map(int,sys.argv[1:]); print(f'{max(0,(o-a)/o*100):.4f}')" "$off" "$acc")
    local sent_rate; sent_rate=$(python3 -c "import sys; print(round(float(sys.argv[1])))" "$(jget "$g" records_per_s)")
    echo "$name,$input,$rate,$sent_rate,$off,$acc,$loss,$cpu_pct,$kd" >> "$out/steps.csv"
    echo "  $name $input offered $rate/s (sent $sent_rate/s): accepted $acc of $off ($loss % loss, $kd datagrams dropped by the kernel), CPU $cpu_pct %"
    clean=$(python3 -c "import sys; n,o,a,l=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),float(sys.argv[4]); print(1 if l < 0.01 or (n == 'nfacctd' and o - a <= 30) else 0)" "$name" "$off" "$acc" "$loss")
    if [ "$clean" = 1 ]; then best=$sent_rate; best_cpu=$cpu_pct; else lossy="$sent_rate/s loses $loss % ($kd kernel drops)"; break; fi
  done
  kill -INT $pid 2>/dev/null || true; sleep 1; kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  pkill -f "nfacctd -f $out" 2>/dev/null || true
  echo "| $name | $input | $best | $best_cpu | $lossy |" >> "$out/rows.md"
}

echo "collector,input,offered_rate,sent_rate,offered_records,accepted_records,loss_pct,cpu_pct,kernel_drops" > "$out/steps.csv"
: > "$out/rows.md"
peer_rates="25000 50000 75000 100000 150000 200000 250000 300000 400000 500000 600000 700000 800000 1000000 1200000"
fs_rates="1000000 1500000 2000000 2500000 3000000 3500000 4000000 4500000 5000000 5500000 6000000 7000000 8000000 10000000 12000000"
base=$((21000 + RANDOM % 10000))
for input in $inputs; do
  for c in $collectors; do
    echo "== $c on $input"
    case $c in
      flowshard) measure flowshard "$input" "$base" $fs_rates ;;
      *) measure "$c" "$input" "$base" $peer_rates ;;
    esac
    base=$((base + 10))
  done
done

{
  echo "# flowshard, goflow2 and nfacctd, one pinned CPU each, loopback"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r)."
  echo "Collector on CPU $cpu, sender (sendmmsg, one exporter) on CPU $gen_cpu; $step s per step;"
  echo "clean = < 0.01 % of the records offered missing from the collector's own counters."
  echo "Rates are what the sender achieved. $(date -u +%FT%TZ)."
  echo
  echo "| collector | input | highest clean rate (records/s) | CPU at that rate (% of one CPU) | first lossy step |"
  echo "|---|---|---|---|---|"
  cat "$out/rows.md"
  echo
  echo "flowshard: 1 shard, defaults, detection on. goflow2 $GOFLOW2_VERSION: GOMAXPROCS=1, -format bin,"
  echo "file transport to /dev/null. nfacctd $(nfacctd -V 2>&1 | grep -o 'nfacctd [0-9.]*' | head -1 | awk '{print $2}'):"
  echo "memory plugin, aggregate proto, plugin_pipe_size 10 MB, plugin_buffer_size 10 KB."
  echo "A '-' first lossy step: the ladder's top was still clean (the sender's limit, not the collector's)."
} > "$out/table.md"
cat "$out/table.md"
echo "results in $out"
