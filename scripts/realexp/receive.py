#!/usr/bin/env python3
"""receive.py PORT OUT.pcap: records the flow-export datagrams a real exporter sends to
127.0.0.1:PORT into a pcap, each stamped with the export time in its own header (NetFlow v5/v9
unix_secs, IPFIX export time, or the arrival time for sFlow): an exporter reading a capture
offline (softflowd -r) sends an hour of exports in seconds, and the header says when a live
exporter would have sent each one. Stops once OUT.pcap.stop exists and 3 s passed without a
datagram (run.sh creates it after stopping the exporter). The datagrams keep 192.0.2.10 as their source (the exporter's address)."""
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
n, last = 0, 0
print("ready", flush=True)
while True:
    try:
        d, _ = s.recvfrom(65535)
    except socket.timeout:
        if os.path.exists(out + ".stop"):
            break
        continue
    ver = struct.unpack(">H", d[:2])[0]
    if ver in (5, 9) and len(d) >= 12:
        ts = struct.unpack(">I", d[8:12])[0]
    elif ver == 10 and len(d) >= 8:
        ts = struct.unpack(">I", d[4:8])[0]
    else:
        ts = int(time.time())
    ts = max(ts, last)  # export order is arrival order
    last = ts
    udp = struct.pack(">HHHH", 9995, port, 8 + len(d), 0) + d
    iph = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([192, 0, 2, 10]), bytes([127, 0, 0, 1]))
    frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + iph + udp
    f.write(struct.pack("<IIII", ts, n % 1000000, len(frame), len(frame)) + frame)
    n += 1
f.close()
print(f"{n} datagrams", file=sys.stderr)
