#!/usr/bin/env bash
# scripts/install.sh [--destdir DIR] [--binary PATH] [--nic NAME] [--uninstall [--purge]]
#
# Installs flowshard as an appliance: the release binary, a system user (sysusers.d), the config
# (/etc/flowshard/flowshard.toml with a [cores] section from `flowshard plan`, kept if present),
# the state directory, the hardened systemd unit (CPUAffinity from the plan) and the sysctl file;
# validates the config. With --destdir everything goes under DIR and nothing on the running
# system is touched (no user created, no systemctl/sysctl calls) — that is how CI checks it.
# --uninstall removes what was installed (config and state kept unless --purge).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
destdir=""; binary=""; nic=""; uninstall=0; purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) destdir="$2"; shift ;;
    --binary) binary="$2"; shift ;;
    --nic) nic="$2"; shift ;;
    --uninstall) uninstall=1 ;;
    --purge) purge=1 ;;
    *) echo "usage: $0 [--destdir DIR] [--binary PATH] [--nic NAME] [--uninstall [--purge]]" >&2; exit 2 ;;
  esac
  shift
done
D="${destdir%/}"
live=1; [ -n "$D" ] && live=0
run() { if [ $live = 1 ]; then "$@"; else echo "(destdir: skipped) $*"; fi; }

bin="$D/usr/local/bin/flowshard"
unit="$D/etc/systemd/system/flowshard.service"
sysctl="$D/etc/sysctl.d/60-flowshard.conf"
sysusers="$D/usr/lib/sysusers.d/flowshard.conf"
conf="$D/etc/flowshard/flowshard.toml"
state="$D/var/lib/flowshard"
doc="$D/usr/local/share/doc/flowshard"

if [ $uninstall = 1 ]; then
  run systemctl disable --now flowshard.service || true
  rm -f "$bin" "$unit" "$sysctl" "$sysusers"
  rm -rf "$doc"
  if [ $purge = 1 ]; then rm -rf "$D/etc/flowshard" "$state"; fi
  run systemctl daemon-reload
  if [ $purge = 1 ]; then echo "flowshard uninstalled (config and state purged)"; else echo "flowshard uninstalled (config and state kept)"; fi
  exit 0
fi

if [ -z "$binary" ]; then
  (cd "$here" && cargo build --release --locked --quiet)
  binary="$here/target/release/flowshard"
fi
[ -x "$binary" ] || { echo "no executable at $binary" >&2; exit 1; }

install -D -m 0755 "$binary" "$bin"
install -D -m 0644 "$here/tuning/sysctl.d/60-flowshard.conf" "$sysctl"
install -D -m 0644 "$here/README.md" "$doc/README.md"
install -d -m 0755 "$(dirname "$sysusers")"
echo 'u flowshard - "flowshard flow collector" /var/lib/flowshard /usr/sbin/nologin' > "$sysusers"
install -d -m 0750 "$state" "$D/etc/flowshard"

# Core layout for this host.
plan_args=(plan --write "$D/etc/flowshard/cores.toml")
[ -n "$nic" ] && plan_args+=(--nic "$nic")
"$binary" "${plan_args[@]}"
if [ ! -f "$conf" ]; then
  { cat "$here/docs/flowshard.toml"; echo; cat "$D/etc/flowshard/cores.toml"; } > "$conf"
  chmod 0640 "$conf"
  echo "wrote $conf"
else
  echo "kept existing $conf (the proposed layout is in $D/etc/flowshard/cores.toml)"
fi
affinity=$(python3 - "$conf" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
cpus = []
for k in ("shards", "io"):
    m = re.search(r"^%s\s*=\s*\[([^\]]*)\]" % k, t, re.M)
    if m:
        cpus += [c.strip() for c in m.group(1).split(",") if c.strip()]
print(" ".join(sorted(set(cpus), key=int)))
PY
)
install -D -m 0644 "$here/systemd/flowshard.service" "$unit"
if [ -n "$affinity" ]; then
  sed -i "s/^#CPUAffinity=.*/CPUAffinity=$affinity/" "$unit"
fi

"$bin" validate "$conf"

run systemd-sysusers "$sysusers"
run chown -R flowshard:flowshard "$state"
run chgrp flowshard "$conf"
run sysctl -p "$sysctl"
run systemctl daemon-reload
run systemctl enable flowshard.service
echo "installed flowshard into ${D:-/} (start with: systemctl start flowshard; check the host with: flowshard doctor)"
