#!/usr/bin/env bash
# run.sh OUTDIR [DURATION_S [WARMUP_S]]: traffic flowshard did not write, through a real exporter,
# scored.
#   1. mkpackets.py writes two packet-level captures of DURATION_S seconds (default 1800): a
#      clean one and one with labeled incidents (with WARMUP_S, all of them after that many
#      seconds of normal traffic, plus hosts with a steady habit and a port-mix change: see
#      mkpackets.py --warmup; e.g. `run.sh OUT 5400 2700` for per-source models' history);
#   2. in a network namespace of its own (veth pairs, nothing leaves it), send.py plays each
#      capture in real time into softflowd (Debian) instances listening live, one per exporter
#      configuration: NetFlow v9 with a 60-s active timeout, IPFIX with 300 s, NetFlow v5 with
#      1,800 s (Cisco's default), and NetFlow v9 with 60 s sampled 1-in-100, 1-in-1000 and
#      1-in-10000; all with a 15-s inactive timeout;
#   3. receive.py records each exporter's datagrams (stamped with their arrival time);
#   4. scripts/eval-scenarios replays every export capture through flowshard and scores its
#      incidents against the labels (false incidents per hour on the clean ones).
# Takes DURATION_S of wall time (both captures play at once). Needs root (netns), softflowd and
# python3. Keeps OUTDIR/*.pcap for later runs of scripts/eval-scenarios.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: run.sh OUTDIR [DURATION_S]}
dur=${2:-1800}
warm=${3:-0}
mkdir -p "$out"
out=$(cd "$out" && pwd)
command -v softflowd >/dev/null || { echo "needs softflowd (apt-get install softflowd)"; exit 1; }
python3 "$here/mkpackets.py" "$out/clean.pkts.pcap" "$dur" 41 --warmup="$warm"
python3 "$here/mkpackets.py" "$out/incidents.pkts.pcap" "$dur" 42 incidents --warmup="$warm"
ns="fsrx$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ipn() { ip netns exec "$ns" "$@"; }
ipn ip link set lo up
CONFIGS=("v9-a60 9 60 1" "ipfix-a300 10 300 1" "v5-a1800 5 1800 1" "v9-s100 9 60 100" "v9-s1000 9 60 1000" "v9-s10000 9 60 10000")
port=29100
caps=()
exporters=()
receivers=()
for pk in clean incidents; do
  ipn ip link add "$pk-tx" type veth peer name "$pk-rx"
  ipn ip link set "$pk-tx" up
  ipn ip link set "$pk-rx" up
  for cfg in "${CONFIGS[@]}"; do
    set -- $cfg
    name="$pk-$1"; port=$((port + 1))
    args=(); [ "$4" -gt 1 ] && args=(-s "$4")
    ipn python3 "$here/receive.py" "$port" "$out/$name.pcap" > "$out/$name.recv" 2>&1 &
    receivers+=($!)
    until grep -q ready "$out/$name.recv" 2>/dev/null; do sleep 0.1; done
    ipn softflowd -d -i "$pk-rx" -n "127.0.0.1:$port" -v "$2" -m 65536 "${args[@]}" \
      -t maxlife="$3" -t tcp=15 -t tcp.fin=5 -t tcp.rst=5 -t udp=15 -t icmp=15 -t general=15 -t expint=1 \
      -p "$out/$name.pid" -c "$out/$name.ctl" > "$out/$name.log" 2>&1 &
    exporters+=($!)
    pids+=($!)
    caps+=("$out/$name.pcap")
  done
done
sleep 2
senders=()
for pk in clean incidents; do
  ipn python3 "$here/send.py" "$out/$pk.pkts.pcap" "$pk-tx" "$out/$pk.started" &
  senders+=($!)
done
for p in "${senders[@]}"; do wait "$p"; done
sleep 20 # the inactive timeout, then stop: the exporters export what they still hold
for p in "${exporters[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${exporters[@]}"; do wait "$p" 2>/dev/null || true; done
for c in "${caps[@]}"; do touch "$c.stop"; done
for p in "${receivers[@]}"; do wait "$p" || true; done
rm -f "$out"/*.stop
# labels on the exporters' clock: the capture's first second is when send.py started it
for pk in clean incidents; do
  for cfg in "${CONFIGS[@]}"; do
    set -- $cfg
    python3 - "$out/$pk.pkts.pcap.labels.json" "$out/$pk.started" "$out/$pk-$1.pcap.labels.json" <<'PY'
import json, sys
lab = json.load(open(sys.argv[1]))
wall, first = open(sys.argv[2]).read().split()
shift = int(float(wall)) - int(first)
lab["t0"] += shift
for i in lab["incidents"]:
    i["start"] += shift
    i["end"] += shift
json.dump(lab, open(sys.argv[3], "w"), indent=1)
PY
  done
done
for c in "${caps[@]}"; do echo "$(basename "$c"): $(cat "${c%.pcap}.recv" | tail -1)"; done
"$here/../eval-scenarios" "${caps[@]}"
