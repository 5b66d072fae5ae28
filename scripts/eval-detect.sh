#!/usr/bin/env bash
# scripts/eval-detect.sh [--quick] [--out DIR]
#
# Evaluates layer-1 detection on the generator's labeled scenarios: one run with every
# incident (volumetric DDoS, SYN port scan, link failure, slow exfiltration, off-hours), one
# clean hour with steady elephant flows; for each, `flowshard evaluate` reports per incident the
# detection delay, and overall recall, precision and false alerts per hour.
# --quick: shorter runs (the same incidents, 40 minutes + 30 clean minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0; out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
out=${out:-results/eval-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
cargo build --release --quiet
bin=target/release/flowshard
if [ $quick = 1 ]; then
  dur=2400; clean=1800
  inc=(--scenario ddos@600+60 --scenario scan@900+30 --scenario link_failure@1200+60 --scenario exfil@1500+600 --scenario offhours@2100+240)
else
  dur=7200; clean=3600
  inc=(--scenario ddos@1200+60 --scenario scan@2400+30 --scenario link_failure@3600+60 --scenario exfil@4200+900 --scenario offhours@6000+600)
fi
$bin gen --protocol ipfix --rate 1000 --duration $dur --seed 21 "${inc[@]}" --pcap "$out/incidents.pcap" 2>/dev/null
$bin gen --protocol ipfix --rate 1000 --duration $clean --seed 22 --elephants 8 --pcap "$out/clean.pcap" 2>/dev/null
{
  echo "# Layer-1 detection on labeled generated traffic"
  echo
  echo "IPFIX, 1,000 records/s base rate (diurnal curve, noise, Zipf hosts), 2 shards, default detector."
  echo
  echo "## Incidents ($((dur / 60)) minutes)"
  echo
  $bin evaluate --pcap "$out/incidents.pcap"
  echo
  echo "## Clean traffic with 8 steady elephant flows ($((clean / 60)) minutes)"
  echo
  $bin evaluate --pcap "$out/clean.pcap"
} > "$out/eval.md"
rm -f "$out"/*.pcap
cat "$out/eval.md"
