#!/usr/bin/env bash
# tuning/irq-affinity.sh NIC CPULIST [--apply]
#
# Pins the capture NIC's interrupts to CPULIST (the CPUs `flowshard plan` reserves for
# interrupts and the OS, e.g. "32,96,33,97") and turns RPS off on its receive queues (with
# one SO_REUSEPORT socket per shard, steering already happens in the socket layer; RPS would add
# an inter-processor hop). Dry run by default: prints what it would write.
# Also stop irqbalance, or it will move the interrupts back: systemctl disable --now irqbalance
set -euo pipefail
nic=${1:?usage: $0 NIC CPULIST [--apply]}; cpus=${2:?usage: $0 NIC CPULIST [--apply]}; apply=0
[ "${3:-}" = "--apply" ] && apply=1
w() { if [ $apply = 1 ]; then echo "$2" > "$1"; echo "wrote $1 = $2"; else echo "would write $1 = $2"; fi; }
irqs=$(ls "/sys/class/net/$nic/device/msi_irqs" 2>/dev/null || true)
[ -n "$irqs" ] || echo "no MSI interrupts listed for $nic (virtual NIC?): nothing to pin"
for irq in $irqs; do
  [ -e "/proc/irq/$irq/smp_affinity_list" ] && w "/proc/irq/$irq/smp_affinity_list" "$cpus"
done
for q in /sys/class/net/"$nic"/queues/rx-*/rps_cpus; do
  [ -e "$q" ] && w "$q" 0
done
[ $apply = 1 ] || echo "dry run: nothing changed (add --apply as root)"
