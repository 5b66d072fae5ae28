#!/usr/bin/env bash
# Checks (default) or applies (--apply) flowshard's host settings. Each line: setting, current
# value, recommended value, and why. Exit status 1 in check mode when something differs.
# Usage: tuning/tune.sh [--apply] [--sysctl-root DIR]   (DIR defaults to /proc/sys; for tests)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
apply=0; root=/proc/sys
while [ $# -gt 0 ]; do
  case "$1" in
    --apply) apply=1 ;;
    --sysctl-root) root="$2"; shift ;;
    *) echo "usage: $0 [--apply] [--sysctl-root DIR]" >&2; exit 2 ;;
  esac
  shift
done
differs=0
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  key="${line%%=*}"; key="$(echo "$key" | xargs)"
  want="${line#*=}"; want="$(echo "$want" | xargs)"
  path="$root/${key//.//}"
  have="$(cat "$path" 2>/dev/null || echo missing)"
  if [ "$have" = "$want" ] || { [[ "$have" =~ ^[0-9]+$ ]] && [ "$have" -ge "$want" ]; }; then
    printf 'ok      %-32s %s (recommended %s)\n' "$key" "$have" "$want"
  else
    differs=1
    printf 'CHANGE  %-32s %s -> %s\n' "$key" "$have" "$want"
    if [ $apply = 1 ]; then echo "$want" > "$path"; fi
  fi
done < "$here/sysctl.d/60-flowshard.conf"
if [ $apply = 0 ] && [ $differs = 1 ]; then
  echo "dry run: nothing changed; run with --apply as root (and install sysctl.d/60-flowshard.conf in /etc/sysctl.d to keep it)"
  exit 1
fi
