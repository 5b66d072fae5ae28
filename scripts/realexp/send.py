#!/usr/bin/env python3
"""send.py PCAP IFACE [STARTED_FILE]: sends a capture's frames out of IFACE (AF_PACKET) at the pace of their
timestamps, padded back to their original length, so that exporters listening live on the other end of a veth pair see the traffic
as a router would. Run it inside a network namespace of the harness's own (run.sh does)."""
import socket
import struct
import sys
import time

path, iface = sys.argv[1], sys.argv[2]
started = sys.argv[3] if len(sys.argv) > 3 else None  # file to write the wall-clock start to
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
d = open(path, "rb")
d.read(24)
t0 = None
start = time.monotonic()
n = 0
while True:
    h = d.read(16)
    if len(h) < 16:
        break
    sec, us, cl, orig = struct.unpack("<IIII", h)
    # captures are stored truncated to their headers; the wire carries the full frame
    frame = d.read(cl) + bytes(max(0, orig - cl))
    t = sec + us / 1e6
    if t0 is None:
        t0 = t
        start = time.monotonic()
        if started:
            # the capture's first second, on the wall clock the exporters stamp their exports with
            open(started, "w").write(f"{time.time() - (t - int(t)):.3f} {int(t)}\n")
    wait = (t - t0) - (time.monotonic() - start)
    if wait > 0.002:
        time.sleep(wait)
    s.send(frame)
    n += 1
print(f"sent {n} frames in {time.monotonic() - start:.0f} s", file=sys.stderr)
