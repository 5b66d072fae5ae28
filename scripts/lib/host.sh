# Shared by the benchmark scripts: raise the UDP receive limits when we may (root), else warn.
# rmem_max caps each shard socket's SO_RCVBUF; loopback datagrams also pass the per-CPU backlog
# queue, whose default of 1000 drops bursts. tuning/tune.sh explains and persists both.
raise_udp_limits() {
  local k f v
  for k in rmem_max:67108864 netdev_max_backlog:250000; do
    f=/proc/sys/net/core/${k%%:*}; v=${k##*:}
    if [ "$(cat "$f")" -lt "$v" ]; then
      if [ -w "$f" ]; then echo "$v" > "$f"; else echo "warning: net.core.${k%%:*} < $v; run tuning/tune.sh --apply" >&2; fi
    fi
  done
}
