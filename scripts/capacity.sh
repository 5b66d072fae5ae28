#!/usr/bin/env bash
# scripts/capacity.sh [--quick] [--protocol P] [--rates "R1 R2 ..."] [--step-seconds N]
#                     [--shard-cpu C] [--gen-cpu C] [--out DIR] [--sinks] [--enrich] [--flows]
#                     [--capture PCAP] [--host-lines RATE] [--shards N] [--spread off|auto|always]
#                     [--exporters N]
#
# End-to-end capacity test over loopback UDP. Runs `flowshard run` with one pinned shard,
# offers stepped record rates from `flowshard gen` (sendmmsg, pinned to another CPU), and per
# step records: offered and accepted records/s, loss (application and the kernel's UDP
# RcvbufErrors), CPU per core, resident memory and window-close lag. Finds the highest rate
# with < 0.01 % loss, profiles flowshard at that rate (perf + inferno flamegraph), and writes
# under results/capacity-<time>/: table.md, steps.csv, capacity.svg, flamegraph.svg.
# --quick: seven 6-second steps, about 2 minutes on a 2-core box.
# --sinks: also write everything to Kafka, Valkey and OpenSearch (scripts/services.sh up) and
#          report each sink's delivery lag and drops in sinks.txt, to compare with a run without.
# --enrich: GeoIP (GeoLite2-City from .cache/py, as .ci/run installs it) and a networks file on
#          every record.
# --capture PCAP: offer a real exporter's capture looped (`flowshard gen --capture`, one
#          exporter) instead of generated traffic; --protocol then only labels the report.
# --host-lines RATE: the same shard also takes host metrics: InfluxDB line protocol over UDP
#          (500 hosts x 8 metrics, 20 lines a datagram) at RATE lines/s from a sender on the
#          generator's CPU for the whole run; lines sent and accepted go to hosts.txt. Compare
#          with a run without to see what host input costs flow ingest.
# --flows: every record also to the raw-flows Kafka topic (flows = true); records encoded,
#          delivered and dropped (by reason) go to flows.txt.
# --shards N: N shards on CPUs --shard-cpu .. --shard-cpu+N-1 (shard CPU % is then the sum of
#          the shard threads' CPU time, and shard_cpus in steps.csv gives each). When the shards
#          reach the I/O CPU nothing is pinned (the generator still is): on a 2-CPU box the
#          second shard shares a CPU with the generator and the I/O thread.
# --exporters N: generated traffic from N exporters (one source port each; default gen's 4).
# --spread MODE: the listener's exporter spread (default: the built-in `auto`). With
#          --capture the generator is one exporter with one source port, so `off` decodes
#          everything on the shard the kernel picks and `always` hands datagrams to every shard.
set -euo pipefail
cd "$(dirname "$0")/.."
host_lines=0; quick=0; sinks=0; enrich=0; flows=0; proto=ipfix; rates=""; step=15; shard_cpu=0; gen_cpu=""; out=""; capture=""; nshards=1; spread=""; exporters=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --sinks) sinks=1 ;;
    --enrich) enrich=1 ;;
    --flows) flows=1 ;;
    --protocol) proto="$2"; shift ;;
    --capture) capture="$2"; shift ;;
    --host-lines) host_lines="$2"; shift ;;
    --rates) rates="$2"; shift ;;
    --step-seconds) step="$2"; shift ;;
    --shard-cpu) shard_cpu="$2"; shift ;;
    --gen-cpu) gen_cpu="$2"; shift ;;
    --out) out="$2"; shift ;;
    --shards) nshards="$2"; shift ;;
    --spread) spread="$2"; shift ;;
    --exporters) exporters="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
ncpu=$(nproc)
last=$((ncpu - 1))
[ -n "$gen_cpu" ] || gen_cpu=$last
if [ -z "$rates" ]; then
  if [ $quick = 1 ]; then rates="1000000 2000000 3000000 4000000 5000000 5500000 6000000"; step=6
  else rates="250000 500000 1000000 1500000 2000000 2500000 3000000 3500000 4000000 5000000 6000000"; fi
fi
out=${out:-results/capacity-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
cargo build --release --quiet
bin=target/release/flowshard
traffic="--protocol $proto --pool 5${exporters:+ --exporters $exporters}"
[ -z "$capture" ] || traffic="--capture $capture --exporters 1"

source scripts/lib/host.sh
raise_udp_limits

port=$((20000 + RANDOM % 20000))
shard_cpus=$(seq -s ' ' "$shard_cpu" $((shard_cpu + nshards - 1)))
spread_line=""
[ -z "$spread" ] || spread_line="spread = \"$spread\""
cat > "$out/flowshard.toml" <<CONF
[general]
status_interval_s = 1
state_dir = "$out/state"
[[listener]]
address = "127.0.0.1:$port"
$spread_line
[cores]
shards = [$(echo "$shard_cpus" | sed 's/ /, /g')]
io = [$last]
pin = $([ $((shard_cpu + nshards - 1)) -lt "$last" ] && echo true || echo false)
[[sink]]
type = "file"
path = "/dev/null"
CONF
if [ $sinks = 1 ]; then
  scripts/services.sh up >&2
  eval "$(scripts/services.sh env)"
  cat >> "$out/flowshard.toml" <<CONF
[http]
address = "127.0.0.1:$((port + 1))"
[[sink]]
type = "kafka"
brokers = "$FLOWSHARD_KAFKA"
rollups_topic = "capacity$port.rollups"
alerts_topic = "capacity$port.alerts"
[[sink]]
type = "valkey"
url = "$FLOWSHARD_VALKEY"
prefix = "capacity$port"
[[sink]]
type = "opensearch"
url = "$FLOWSHARD_OPENSEARCH"
index_prefix = "capacity$port"
CONF
fi
if [ $enrich = 1 ]; then
  geo=$(ls .cache/py/_maxminddb_geolite2/GeoLite2-City.mmdb 2>/dev/null || true)
  [ -n "$geo" ] || { echo "--enrich needs .cache/py/_maxminddb_geolite2/GeoLite2-City.mmdb (see .ci/run)" >&2; exit 2; }
  printf '10.0.0.0/8,lan,internal,hosts,dc1,acme\n198.18.0.0/15,bench,external\n100.64.0.0/10,cgnat,external\n' > "$out/networks.csv"
  printf '[enrich]\ngeoip = "%s"\nnetworks = "%s"\n' "$(realpath "$geo")" "$(realpath "$out/networks.csv")" >> "$out/flowshard.toml"
fi
if [ $flows = 1 ]; then
  [ $sinks = 1 ] || { scripts/services.sh up kafka >&2; eval "$(scripts/services.sh env)"; }
  grep -q '^\[http\]' "$out/flowshard.toml" || printf '[http]\naddress = "127.0.0.1:%s"\n' $((port + 1)) >> "$out/flowshard.toml"
  cat >> "$out/flowshard.toml" <<CONF
[[sink]]
type = "kafka"
brokers = "$FLOWSHARD_KAFKA"
rollups_topic = "capacity$port.flows-rollups"
alerts_topic = "capacity$port.flows-alerts"
flows = true
flows_topic = "capacity$port.flows"
CONF
fi
if [ $sinks = 1 ] || [ $flows = 1 ]; then
  # The services share this box: keep them (every thread) off the shard's CPU, as a
  # collector with remote clusters would be.
  for f in .cache/services/*/pid; do
    pid=$(cat "$f" 2>/dev/null) || continue
    taskset -a -p -c "$last" "$pid" >/dev/null 2>&1 || true
    for c in $(pgrep -P "$pid" 2>/dev/null); do taskset -a -p -c "$last" "$c" >/dev/null 2>&1 || true; done
  done
fi
if [ "$host_lines" != 0 ]; then
  printf '[hosts]\nline_udp = ["127.0.0.1:%s"]\n' $((port + 2)) >> "$out/flowshard.toml"
fi
$bin run --config "$out/flowshard.toml" 2> "$out/flowshard.log" &
fs=$!
hl=""
if [ "$host_lines" != 0 ]; then
  # paced line-protocol sender: RATE lines/s in 20-line datagrams until killed; prints lines sent
  taskset -c "$gen_cpu" python3 - "$((port + 2))" "$host_lines" > "$out/hosts-sent.txt" <<'PY' &
import socket, sys, time, signal
port, rate = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
metrics = [("cpu", "usage_idle", ",cpu=cpu-total"), ("cpu", "usage_user", ",cpu=cpu-total"), ("mem", "available", ""),
           ("mem", "used", ""), ("disk", "free", ",path=/"), ("net", "bytes_recv", ",interface=eth0"),
           ("net", "bytes_sent", ",interface=eth0"), ("system", "load1", "")]
lines = [f"{m},host=h{h:03d}{t} {f}={(h * 7 + i) % 100}.5".encode() for h in range(500) for i, (m, f, t) in enumerate(metrics)]
dgrams = [b"\n".join(lines[i:i + 20]) for i in range(0, len(lines), 20)]
sent = 0
stop = False
def done(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, done)
t0 = time.monotonic()
i = 0
while not stop:
    due = sent / rate
    now = time.monotonic() - t0
    if now < due:
        time.sleep(min(due - now, 0.01))
        continue
    s.sendto(dgrams[i % len(dgrams)], ("127.0.0.1", port))
    i += 1
    sent += 20
print(sent)
PY
  hl=$!
fi
trap 'kill $hl 2>/dev/null || true; kill -INT $fs 2>/dev/null || true; wait $fs 2>/dev/null || true' EXIT
# ready once the first status line is out (loading enrichment tables takes a moment)
for _ in $(seq 100); do grep -q 'flowshard status' "$out/flowshard.log" 2>/dev/null && break; sleep 0.2; done

status() { grep 'flowshard status' "$out/flowshard.log" | tail -1; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<< "$2"; }
udp_rcvbuf() { awk '/^Udp:/ {n++; if (n==2) print $6}' /proc/net/snmp; }
softnet_drops() { python3 -c 'print(sum(int(l.split()[1], 16) for l in open("/proc/net/softnet_stat")))'; }
cpu_busy() { awk -v c="cpu$1" '$1==c {print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
# busy jiffies of the shard CPU and its total; with several shards, each shard thread's CPU
# time (utime + stime; the threads float when they outnumber the spare CPUs) summed, then each
shards_busy() {
  if [ "$nshards" = 1 ]; then read -r x y <<< "$(cpu_busy "$shard_cpu")"; echo "$x $y $x"; return; fi
  local b=0 t each="" x
  read -r _ t <<< "$(cpu_busy "$shard_cpu")"
  for i in $(seq 0 $((nshards - 1))); do
    x=0
    for f in /proc/$fs/task/*; do
      # glommio names an executor's threads "shard<i>-<n>"
      case "$(cat "$f/comm" 2>/dev/null)" in "shard$i-"*) ;; *) continue ;; esac
      x=$((x + $(awk '{c=$0; sub(/^[^)]*\) /, "", c); split(c, v, " "); print v[12] + v[13]}' "$f/stat")))
    done
    b=$((b + x)); each="$each $x"
  done
  echo "$b $t$each"
}

echo "offered_rps,accepted_rps,loss_pct,app_loss_records,kernel_drops,shard_cpu_pct,gen_cpu_pct,rss_mib,close_lag_p99_ms,shard_cpus" > "$out/steps.csv"
best=0; first_loss=""
for rate in $rates; do
  s0=$(status); k0=$(udp_rcvbuf); n0=$(softnet_drops); read -r b0 t0 e0 <<< "$(shards_busy)"; read -r gb0 gt0 <<< "$(cpu_busy "$gen_cpu")"
  # shellcheck disable=SC2086
  g=$(taskset -c "$gen_cpu" $bin gen $traffic --to "127.0.0.1:$port" --rate "$rate" --duration "$step" 2>&1 | tail -1)
  read -r b1 t1 e1 <<< "$(shards_busy)"; read -r gb1 gt1 <<< "$(cpu_busy "$gen_cpu")"
  each=$(python3 -c "import sys; a=sys.argv[1].split(); b=sys.argv[2].split(); t=max(1, float(sys.argv[3])); print('/'.join(f'{100*(float(y)-float(x))/t:.0f}' for x, y in zip(a, b)))" "$e0" "$e1" "$((t1 - t0))")
  sleep 2
  s1=$(status); k1=$(udp_rcvbuf); n1=$(softnet_drops)
  offered=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['records'])" "$g")
  secs=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['seconds'])" "$g")
  acc=$(( $(field records "$s1") - $(field records "$s0") ))
  kd=$((k1 - k0 + n1 - n0))
  lag=$(field close_lag_p99_ms "$s1")
  rss=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$fs/status)
  row=$(python3 - "$offered" "$acc" "$secs" "$b0" "$t0" "$b1" "$t1" "$gb0" "$gt0" "$gb1" "$gt1" <<'PY'
import sys
o, a, s, b0, t0, b1, t1, gb0, gt0, gb1, gt1 = map(float, sys.argv[1:])
loss = max(0.0, (o - a) / o * 100) if o else 0.0
cpu = 100 * (b1 - b0) / max(1, t1 - t0); gcpu = 100 * (gb1 - gb0) / max(1, gt1 - gt0)
print(f"{o/s:.0f},{a/s:.0f},{loss:.4f},{max(0,o-a):.0f},{cpu:.0f},{gcpu:.0f}")
PY
)
  echo "$row,$kd,$rss,$lag,$each" | awk -F, '{print $1","$2","$3","$4","$7","$5","$6","$8","$9","$10}' >> "$out/steps.csv"
  loss=$(echo "$row" | cut -d, -f3)
  echo "step $rate: $(tail -1 "$out/steps.csv")"
  # clean up to the first step that lost: a later clean step (the generator falling short of
  # its rate, or noise) does not raise it
  if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 0.01 else 1)" "$loss"; then
    [ -n "$first_loss" ] || best=$rate
  else
    [ -n "$first_loss" ] || first_loss=$rate
  fi
done

# Profile at the highest clean rate (or the first step).
prof=${best:-0}; [ "$prof" -gt 0 ] || prof=$(echo "$rates" | awk '{print $1}')
if command -v perf >/dev/null; then
  # shellcheck disable=SC2086
  taskset -c "$gen_cpu" $bin gen $traffic --to "127.0.0.1:$port" --rate "$prof" --duration 8 >/dev/null 2>&1 &
  gp=$!
  sleep 1
  perf record -F 499 -g -p $fs -o "$out/perf.data" -- sleep 5 >/dev/null 2>&1 || true
  wait $gp || true
  if command -v inferno-collapse-perf >/dev/null; then
    perf script -i "$out/perf.data" 2>/dev/null | inferno-collapse-perf > "$out/stacks.folded" || true
    inferno-flamegraph --title "flowshard at $prof records/s ($proto, $nshards shard(s)${spread:+, spread $spread})" < "$out/stacks.folded" > "$out/flamegraph.svg" || true
  else
    perf report -i "$out/perf.data" --no-children --stdio --percent-limit 1 > "$out/profile.txt" 2>/dev/null || true
    echo "inferno not installed (cargo install inferno): wrote profile.txt instead of flamegraph.svg" >&2
  fi
  rm -f "$out/perf.data"
fi
if [ $sinks = 1 ]; then
  sleep 5
  # CPU seconds per flowshard thread over the whole run (shard vs I/O vs sink threads).
  for t in /proc/$fs/task/*; do
    awk -v tck="$(getconf CLK_TCK)" '{c=$0; sub(/^[^(]*\(/, "", c); name=c; sub(/\).*/, "", name); sub(/^[^)]*\) /, "", c); split(c, f, " "); printf "%-20s %8.2f s\n", name, (f[12]+f[13])/tck}' "$t/stat"
  done | sort -k2 -nr > "$out/threads.txt"
  echo "CPU per thread:"; cat "$out/threads.txt"
  curl -s "127.0.0.1:$((port + 1))/metrics" | grep -E '^flowshard_(sink_|spool_|rollups_total)' > "$out/sinks.txt" || true
  echo "sinks (delivery lag p50/p99 s, records by result, spool):"; cat "$out/sinks.txt"
fi
if [ $flows = 1 ]; then
  sleep 5
  curl -s "127.0.0.1:$((port + 1))/metrics" | grep -E '^flowshard_(flows_encoded|sink_records_total\{sink="kafka_flows"|spool_(bytes|frames_total)\{sink="kafka_flows")' > "$out/flows.txt" || true
  echo "raw flows (encoded, delivered messages, dropped by reason):"; cat "$out/flows.txt"
fi
if [ -n "$hl" ]; then kill "$hl"; wait "$hl" 2>/dev/null || true; sleep 2; fi
kill -INT $fs; wait $fs || true; trap - EXIT
if [ -n "$hl" ]; then
  acc=$(tail -1 "$out/flowshard.log" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read()).get("host_lines", 0))')
  echo "host lines: offered $host_lines/s, sent $(cat "$out/hosts-sent.txt"), accepted $acc" | tee "$out/hosts.txt"
fi

python3 scripts/lib/plot.py "$out/steps.csv" "$out/capacity.svg" "flowshard capacity, $nshards shard(s)${spread:+ spread $spread}, $proto over loopback"
{
  echo "# flowshard capacity ($proto, $nshards shard core(s)${spread:+, spread $spread}, loopback)"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r). Shards on CPU(s) $shard_cpus, generator on CPU $gen_cpu, I/O thread on CPU $last. $(date -u +%FT%TZ)."
  echo
  echo "| offered rec/s | accepted rec/s | loss % | kernel drops (rcvbuf + backlog) | shard CPU % (each) | generator CPU % | RSS MiB | window-close lag p99 ms |"
  echo "|---|---|---|---|---|---|---|---|"
  tail -n +2 "$out/steps.csv" | awk -F, '{printf "| %s | %s | %s | %s | %s (%s) | %s | %s | %s |\n", $1, $2, $3, $5, $6, $10, $7, $8, $9}'
  echo
  echo "Clean (< 0.01 % loss) at every step up to **$best records/s**${first_loss:+; first loss at the $first_loss step}. Flamegraph: flamegraph.svg (at $prof records/s)."
} > "$out/table.md"
cat "$out/table.md"
echo "results in $out"
