#!/usr/bin/env bash
# scripts/bench-peers.sh [--quick] [--protocol P] [--cpu C] [--gen-cpu C] [--out DIR]
#
# Side by side, in one run, on the same generated stream (same seed, same pre-built pool of
# datagrams from `flowshard gen --pool`): flowshard (1 shard), goflow2 and pmacct's nfacctd,
# each pinned to the same single CPU, the generator on another. For each collector the offered
# rate is stepped up until loss exceeds 0.01 %; the highest clean rate and the ratios are
# printed and written to results/peers-<time>/table.md.
#
# Accepted records: flowshard from its status line; goflow2 from its Prometheus counter
# goflow2_flow_process_nf_flowset_records_total (data sets); nfacctd from the octets its print
# plugin reports (aggregate: proto) over the octets offered.
# The peers are installed on first use and nothing of them is committed: goflow2 with
# `go install` into .cache/go, nfacctd from Debian's pmacct package.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0; proto=ipfix; cpu=0; gen_cpu=""; out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --protocol) proto="$2"; shift ;;
    --cpu) cpu="$2"; shift ;;
    --gen-cpu) gen_cpu="$2"; shift ;;
    --out) out="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
last=$(( $(nproc) - 1 )); [ -n "$gen_cpu" ] || gen_cpu=$last
step=10; [ $quick = 1 ] && step=4
out=${out:-results/peers-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
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

offer() { # offer PORT RATE -> JSON of the generator
  taskset -c "$gen_cpu" "$bin" gen --protocol "$proto" --seed 7 --to "127.0.0.1:$1" --pool 5 --rate "$2" --duration "$step" 2>&1 | tail -1
}
jget() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

# --- per-collector start/measure/stop -------------------------------------------------------
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
  taskset -c "$cpu" "$bin" run --config "$out/flowshard.toml" 2> "$out/flowshard.log" &
  pid=$!
}
count_flowshard() { grep 'flowshard status' "$out/flowshard.log" | tail -1 | sed -n 's/.* records=\([0-9]*\).*/\1/p'; }

start_goflow2() {
  taskset -c "$cpu" "$GOBIN/goflow2" -listen "netflow://127.0.0.1:$1,sflow://127.0.0.1:$(( $1 + 1 ))" \
    -transport.file /dev/null -format bin -addr "127.0.0.1:$(( $1 + 2 ))" > "$out/goflow2.log" 2>&1 &
  pid=$!; gf_metrics="127.0.0.1:$(( $1 + 2 ))"
}
count_goflow2() {
  curl -s "http://$gf_metrics/metrics" | python3 -c '
import sys
n = 0
for l in sys.stdin:
    if l.startswith("goflow2_flow_process_nf_flowset_records_total") and "Data" in l:
        n += float(l.split()[-1])
    if l.startswith("goflow2_flow_process_sf_samples_records_total"):
        n += float(l.split()[-1])
print(int(n))'
}

start_nfacctd() {
  rm -rf "$out/nfacctd"; mkdir -p "$out/nfacctd"
  cat > "$out/nfacctd/nfacctd.conf" <<CONF
daemonize: false
nfacctd_ip: 127.0.0.1
nfacctd_port: $1
plugins: print[p]
aggregate[p]: proto
print_output[p]: csv
print_output_file[p]: $out/nfacctd/out-%s.csv
print_refresh_time[p]: 1
print_history[p]: 1s
print_output_file_append[p]: true
CONF
  taskset -c "$cpu" nfacctd -f "$out/nfacctd/nfacctd.conf" > "$out/nfacctd/log" 2>&1 &
  pid=$!
}
octets_nfacctd() {
  python3 -c '
import glob, sys
n = 0
for f in glob.glob(sys.argv[1] + "/out-*.csv"):
    for l in open(f):
        p = l.strip().split(",")
        if len(p) == 3 and p[2].isdigit():
            n += int(p[2])
print(n)' "$out/nfacctd"
}

measure() { # measure NAME PORT RATES...
  local name=$1 port=$2; shift 2
  "start_$name" "$port"; sleep 2
  # warm-up (templates learned, caches built), not measured
  taskset -c "$gen_cpu" "$bin" gen --protocol "$proto" --seed 7 --to "127.0.0.1:$port" --pool 5 --rate 20000 --duration 2 >/dev/null 2>&1
  sleep 2
  local best=0 rate
  for rate in "$@"; do
    local c0 g off acc loss
    if [ "$name" = nfacctd ]; then c0=$(octets_nfacctd); else c0=$("count_$name"); fi
    g=$(offer "$port" "$rate"); sleep 3
    off=$(jget "$g" records)
    if [ "$name" = nfacctd ]; then
      acc=$(python3 -c "import sys; a,b,o,r=map(int,sys.argv[1:]); print(round((b-a)/o*r))" "$c0" "$(octets_nfacctd)" "$(jget "$g" octets)" "$off")
    else
      acc=$(( $("count_$name") - c0 ))
    fi
    loss=$(python3 -c "import sys; o,a=map(int,sys.argv[1:]); print(f'{max(0,(o-a)/o*100):.4f}')" "$off" "$acc")
    echo "$name,$rate,$off,$acc,$loss" >> "$out/steps.csv"
    echo "  $name offered $rate/s: accepted $acc of $off ($loss % loss)"
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 0.01 else 1)" "$loss"; then best=$rate; else break; fi
  done
  kill -INT $pid 2>/dev/null || true; sleep 1; kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  pkill -f "nfacctd -f $out" 2>/dev/null || true
  eval "best_$name=$best"
}

echo "collector,offered_rate,offered_records,accepted_records,loss_pct" > "$out/steps.csv"
peer_rates="10000 25000 50000 75000 100000 150000 200000 300000 400000 600000 800000 1000000"
fs_rates="1000000 2000000 3000000 4000000 4500000 5000000 5500000 6000000"
[ $quick = 1 ] && fs_rates="2000000 3000000 4000000 5000000 5500000"
base=$((21000 + RANDOM % 10000))
echo "== flowshard"; measure flowshard $base $fs_rates
echo "== goflow2";   measure goflow2 $((base + 10)) $peer_rates
echo "== nfacctd";   measure nfacctd $((base + 20)) $peer_rates

ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.1f}x' if b else 'n/a')" "$1" "$2"; }
{
  echo "# flowshard vs goflow2 vs nfacctd ($proto, one pinned core each, loopback)"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r). Collector on CPU $cpu, generator on CPU $gen_cpu; $step s per step; clean = < 0.01 % loss. $(date -u +%FT%TZ)."
  echo
  echo "| collector | highest clean rate (records/s) | flowshard ratio |"
  echo "|---|---|---|"
  echo "| flowshard (1 shard, 6 dimensions, detection on) | $best_flowshard | 1.0x |"
  echo "| goflow2 $GOFLOW2_VERSION (-format bin, file /dev/null) | $best_goflow2 | $(ratio "$best_flowshard" "$best_goflow2") |"
  echo "| nfacctd $(nfacctd -V 2>&1 | grep -o 'nfacctd [0-9.]*' | head -1 | awk '{print $2}') (print plugin, aggregate proto) | $best_nfacctd | $(ratio "$best_flowshard" "$best_nfacctd") |"
  echo
  echo "A peer's rate steps stop at its first lossy step; a clean rate of 0 means its lowest step already lost records."
} > "$out/table.md"
cat "$out/table.md"
echo "results in $out"
