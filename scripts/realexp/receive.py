#!/usr/bin/env python3
"""receive.py PORT OUT.pcap: records the flow-export datagrams a real exporter sends to
127.0.0.1:PORT into a pcap, each stamped with its arrival time (the exporters run live, so
arrival is what a collector sees). Stops once OUT.pcap.stop exists and 3 s passed without a
datagram (run.sh creates it after stopping the exporter). The datagrams keep 192.0.2.10 as
their source (the exporter's address)."""
import os
import socket
import struct
import sys
import time

port, out = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
s.bind(("127.0.0.1", port))
s.settimeout(3.0)
f = open(out, "wb")
f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
n = 0
print("ready", flush=True)
while True:
    try:
        d, _ = s.recvfrom(65535)
    except socket.timeout:
        if os.path.exists(out + ".stop"):
            break
        continue
    now = time.time()
    ts, us = int(now), int((now - int(now)) * 1e6)
    udp = struct.pack(">HHHH", 9995, port, 8 + len(d), 0) + d
    iph = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([192, 0, 2, 10]), bytes([127, 0, 0, 1]))
    frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + iph + udp
    f.write(struct.pack("<IIII", ts, us, len(frame), len(frame)) + frame)
    n += 1
f.close()
print(f"{n} datagrams", file=sys.stderr)
