#!/usr/bin/env python3
"""mkpackets.py OUT.pcap DURATION_S SEED [incidents] [--warmup=W]: packet-level traffic with labeled
incidents, for real flow exporters (softflowd, pmacctd) to turn into flow exports (see run.sh).

The packets are written truncated to their headers (caplen 54 or 42, the IP total length
carries the real size): exporters count octets from the IP header, and an hour of traffic then
fits in a few hundred MB. Standard library only, deterministic for a seed.

Traffic (independent of flowshard's own generator): inside hosts 10.1.0.0/22 talk to outside
servers; TCP connections with handshake, data both ways and FIN; DNS over UDP; a swell over the
run; occasional bursts; two steady elephants (a 300 KB/s rsync upload and a 90 KB/s SSH
download) that run from start to end; with `incidents`, labeled: a UDP reflection DDoS on one
inside host, a horizontal SYN scan, a slow upload ramp (exfiltration) and a new service.
With `--warmup=W` the incidents happen in the last DURATION_S - W seconds, after W seconds of
normal traffic (a per-source model needs history before it may page), and two more inside hosts
keep a steady habit from the first second: 10.1.2.99 browses lightly (and is the exfiltrating
host) and 10.1.3.20 polls 40 servers on port 443 once a second; with `incidents` the poller keeps
its rate and sizes but turns to 40 ports of one server (`port_mix`, a change no volume counter
sees). Without `--warmup` the output is what it always was.
Writes OUT.pcap.labels.json in the format of ../shared/data/scenarios/mkdev.py; `max_delay_s`
includes the exporter's inactive timeout (the soonest a flow exporter can report anything).
"""
import json
import math
import random
import struct
import sys

opts = [a for a in sys.argv[1:] if a.startswith("--")]
pos = [a for a in sys.argv[1:] if not a.startswith("--")]
out, dur, seed = pos[0], int(pos[1]), int(pos[2])
with_incidents = len(pos) > 3 and pos[3] == "incidents"
warm = 0
for o in opts:
    if o.startswith("--warmup="):
        warm = int(o.split("=", 1)[1])
    else:
        sys.exit(f"mkpackets.py: unknown option {o} (known: --warmup=SECONDS)")
if not 0 <= warm < dur:
    sys.exit(f"mkpackets.py: --warmup={warm} must be below the duration {dur}")
span = dur - warm  # the incidents' window: [warm, dur)
INACTIVE = 15  # the exporter's inactive timeout run.sh configures
T0 = 1_780_000_000
rnd = random.Random(seed)
f = open(out, "wb")
f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
ETH = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
packets = []  # (t, bytes) per second, flushed in time order


def ip4(s):
    return bytes(int(x) for x in s.split("."))


def tcp(t, src, dst, sp, dp, flags, size):
    iph = struct.pack(">BBHHHBBH4s4s", 0x45, 0, size, 0, 0x4000, 64, 6, 0, src, dst)
    th = struct.pack(">HHIIBBHHH", sp, dp, 0, 0, 0x50, flags, 65535, 0, 0)
    packets.append((t, ETH + iph + th, 14 + size))


def udp(t, src, dst, sp, dp, size):
    iph = struct.pack(">BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 17, 0, src, dst)
    uh = struct.pack(">HHHH", sp, dp, size - 20, 0)
    packets.append((t, ETH + iph + uh, 14 + size))


def flush(upto):
    global packets
    packets.sort(key=lambda p: p[0])
    keep = []
    for t, frame, orig in packets:
        if t >= upto:
            keep.append((t, frame, orig))
            continue
        sec = int(t)
        us = int((t - sec) * 1e6)
        f.write(struct.pack("<IIII", T0 + sec, us, len(frame), orig) + frame)
    packets = keep


inside = [ip4(f"10.1.{i // 250}.{i % 250 + 1}") for i in range(600)]
outside = [ip4(f"203.0.113.{i + 1}") for i in range(200)] + [ip4(f"198.51.100.{i + 1}") for i in range(200)]
resolvers = [ip4("10.1.3.250"), ip4("10.1.3.251")]


def pick(n, a=1.2):
    return min(int(rnd.paretovariate(a)) - 1, n - 1)


def connection(t, c, s, dport, dur_s, down_bytes, up_bytes):
    sp = rnd.randint(20000, 60999)
    tcp(t, c, s, sp, dport, 0x02, 60)
    tcp(t + 0.001, s, c, dport, sp, 0x12, 60)
    tcp(t + 0.002, c, s, sp, dport, 0x10, 52)
    n_down = max(1, down_bytes // 1400)
    n_up = max(1, up_bytes // 1400)
    for i in range(n_down):
        tcp(t + 0.003 + dur_s * i / n_down, s, c, dport, sp, 0x18, min(1400, down_bytes) + 52)
    for i in range(n_up):
        tcp(t + 0.003 + dur_s * i / n_up, c, s, sp, dport, 0x18, min(1400, up_bytes) + 52)
    tcp(t + dur_s + 0.004, c, s, sp, dport, 0x11, 52)
    tcp(t + dur_s + 0.005, s, c, dport, sp, 0x11, 52)


ELEPHANTS = [  # (client, server, port, bytes/s, upload)
    (ip4("10.1.0.7"), ip4("203.0.113.77"), 873, 300_000, True),
    (ip4("10.1.1.20"), ip4("198.51.100.22"), 22, 90_000, False),
]
eport = {e: rnd.randint(40000, 49999) for e in range(len(ELEPHANTS))}
HABITS = warm > 0  # steady hosts with a history (see the module doc)
BROWSER, POLLER = ip4("10.1.2.99"), ip4("10.1.3.20")
POLLED = outside[100:140]
SWITCH_TO = ip4("198.51.100.50")
SWITCH_PORTS = [1000 + 37 * k for k in range(40)]
incidents = []
if with_incidents:
    incidents = [
        dict(name="ddos", dimension="dst_ip", key="10.1.0.80", start=warm + span // 3, end=warm + span // 3 + 90, max_delay_s=INACTIVE + 5),
        dict(name="horizontal_scan", dimension="src_ip", key="198.18.7.7", start=warm + span // 2, end=warm + span // 2 + 60, max_delay_s=INACTIVE + 5),
        dict(name="exfiltration", dimension="src_ip", key="10.1.2.99", start=warm + span // 6, end=warm + span // 6 + span // 2, max_delay_s=600 + 60),
        dict(name="new_service", dimension="dst_port", key="8443/tcp", start=warm + 2 * span // 3, end=warm + 2 * span // 3 + 300, max_delay_s=120 + INACTIVE),
    ]
    if HABITS:
        incidents.append(dict(name="port_mix", dimension="src_ip", key="10.1.3.20", start=warm + span // 4, end=min(dur, warm + span // 4 + 900), max_delay_s=600 + 60))
for t in range(dur):
    swell = 1 + 0.5 * math.sin(2 * math.pi * t / max(dur, 1) - 1.2)
    lam = 25 * swell * (1.7 if rnd.random() < 0.02 else 1.0)
    for _ in range(max(0, int(rnd.gauss(lam, math.sqrt(lam))))):
        ts = t + rnd.random()
        c, s = inside[pick(len(inside))], outside[pick(len(outside))]
        port = rnd.choice([443, 443, 443, 80, 993, 5432])
        connection(ts, c, s, port, min(20.0, rnd.expovariate(0.5)), int(rnd.lognormvariate(8.5, 1.3)), int(rnd.lognormvariate(6.5, 1.0)))
    for _ in range(max(0, int(rnd.gauss(12 * swell, 3)))):
        ts = t + rnd.random()
        c = inside[pick(len(inside))]
        sp = rnd.randint(1024, 65535)
        r = rnd.choice(resolvers)
        udp(ts, c, r, sp, 53, rnd.randint(60, 90))
        udp(ts + 0.002, r, c, 53, sp, rnd.randint(90, 400))
    for i, (c, s, port, rate, up) in enumerate(ELEPHANTS):
        n = rate // 1400
        for k in range(n):
            ts = t + k / n
            if up:
                tcp(ts, c, s, eport[i], port, 0x18, 1452)
            else:
                tcp(ts, s, c, port, eport[i], 0x18, 1452)
            if k % 8 == 0:  # acknowledgements
                if up:
                    tcp(ts + 0.0005, s, c, port, eport[i], 0x10, 52)
                else:
                    tcp(ts + 0.0005, c, s, eport[i], port, 0x10, 52)
    if HABITS:
        if rnd.random() < 0.2:
            connection(t + rnd.random(), BROWSER, outside[rnd.randrange(len(outside))], 443, rnd.uniform(0.5, 5.0), int(rnd.lognormvariate(9.0, 1.0)), int(rnd.lognormvariate(6.5, 0.5)))
        mixed = any(i["name"] == "port_mix" and i["start"] <= t < i["end"] for i in incidents)
        s, port = (SWITCH_TO, SWITCH_PORTS[t % 40]) if mixed else (POLLED[rnd.randrange(40)], 443)
        connection(t + rnd.random(), POLLER, s, port, rnd.uniform(0.05, 0.3), rnd.randint(1500, 2500), rnd.randint(300, 500))
    for inc in incidents:
        if not inc["start"] <= t < inc["end"]:
            continue
        if inc["name"] == "ddos":
            for _ in range(1200):
                src = ip4(f"100.{rnd.randint(64, 127)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}")
                udp(t + rnd.random(), src, ip4(inc["key"]), 123, rnd.randint(1024, 65535), 468)
        elif inc["name"] == "horizontal_scan":
            for k in range(60):
                n = (t - inc["start"]) * 60 + k
                tcp(t + k / 60, ip4(inc["key"]), ip4(f"10.1.{(n // 250) % 4}.{n % 250 + 1}"), 41000 + n % 20000, 445, 0x02, 60)
        elif inc["name"] == "exfiltration":
            frac = (t - inc["start"]) / (inc["end"] - inc["start"])
            rate = int(5_000 + frac * 400_000)
            n = max(1, rate // 1400)
            for k in range(n):
                tcp(t + k / n, ip4(inc["key"]), ip4("192.0.2.77"), 51515, 443, 0x18, min(1452, rate + 52))
        elif inc["name"] == "new_service":
            for _ in range(8):
                c = outside[rnd.randrange(len(outside))]
                connection(t + rnd.random(), c, ip4("10.1.0.55"), 8443, rnd.uniform(0.2, 3.0), int(rnd.lognormvariate(9.0, 0.8)), 600)
    flush(t - 25)
flush(dur + 100)
f.close()
labels = {"t0": T0, "duration": dur, "incidents": [dict(i, start=T0 + i["start"], end=T0 + i["end"]) for i in incidents],
          "must_not_alert": ["10.1.0.7", "203.0.113.77", "10.1.1.20", "198.51.100.22"]}
json.dump(labels, open(out + ".labels.json", "w"), indent=1)
