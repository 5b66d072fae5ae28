#!/usr/bin/env python3
"""What an independent reader says, for tests/enrich.rs (Python `maxminddb`, `mmdb-writer`,
`ipaddress` and tshark; nothing of flowshard's).

  independent.py mkdbs DIR            writes DIR/country.mmdb (IPv6 tree, IPv4-compatible) and
                                      DIR/asn.mmdb (IPv4 tree) over the captures' documentation
                                      ranges, with mmdb-writer
  independent.py sample DB N          prints addresses to check in a real database: N pseudo-random
                                      addresses (3/4 IPv4, 1/4 in 2a00::/12; deterministic), each
                                      with the first, last and one-past-last address of the
                                      network the database holds it in
  independent.py lookup DB            addresses on stdin -> JSON lines {ip, country, asn, city}
                                      (city: the record's city.geoname_id, 0 if none)
  independent.py asnames DB ADDR...   {"AS<n>": organization} of the ASes holding the addresses
  independent.py sums PCAP COUNTRY_DB ASN_DB NETWORKS
                                      per (dimension, key) octet sums of a NetFlow v5 capture
                                      decoded by tshark, looked up independently (JSON); cities
                                      keyed "Name, CC (geoname_id)"; site, tenant and role are
                                      the networks file's columns of the longest match
Needs PYTHONPATH with maxminddb, mmdb_writer (scripts put them in .cache/py).
"""
import collections
import ipaddress
import json
import random
import subprocess
import sys

import maxminddb


def country_asn(reader, ip):
    rec = reader.get(ip) or {}
    c = (rec.get("country") or {}).get("iso_code")
    return c, rec.get("autonomous_system_number") or 0


def main():
    cmd = sys.argv[1]
    if cmd == "mkdbs":
        from mmdb_writer import MMDBWriter
        from netaddr import IPSet

        out = sys.argv[2]
        w = MMDBWriter(ip_version=6, database_type="Test-Country", ipv4_compatible=True)
        for net, cc, city in [("192.0.2.0/26", "DE", (2950159, "Berlin")), ("192.0.2.64/26", "FR", None),
                              ("198.51.100.0/25", "US", (5128581, "New York")),
                              ("198.51.100.128/25", "US", (4887398, "Chicago")),
                              ("203.0.113.0/24", "NL", None), ("2001:db8::/32", "JP", (1850147, "Tokyo"))]:
            rec = {"country": {"iso_code": cc, "names": {"en": cc}}}
            if city:
                rec["city"] = {"geoname_id": city[0], "names": {"en": city[1]}}
            w.insert_network(IPSet([net]), rec)
        w.to_db_file(f"{out}/country.mmdb")
        w = MMDBWriter(ip_version=4, database_type="Test-ASN")
        for net, asn in [("192.0.2.0/26", 64502), ("198.51.100.0/24", 64500), ("203.0.113.0/25", 64501)]:
            org = f'Example "Net" {asn}, Ltd'  # quotes and a comma: written escaped
            w.insert_network(IPSet([net]), {"autonomous_system_number": asn, "autonomous_system_organization": org})
        w.to_db_file(f"{out}/asn.mmdb")
    elif cmd == "sample":
        # random addresses, and around each the edges of the network the database holds it in
        # (first, last, one past the last): where a flattened copy would go wrong
        reader = maxminddb.open_database(sys.argv[2])
        n = int(sys.argv[3])
        rnd = random.Random(7)
        for k in range(n):
            if k % 4 == 3:  # IPv6, inside a densely allocated block
                a = ipaddress.IPv6Address((0x2A00 << 112) | rnd.getrandbits(116))
            else:
                a = ipaddress.IPv4Address(rnd.getrandbits(32))
            _rec, plen = reader.get_with_prefix_len(a)
            net = ipaddress.ip_network(f"{a}/{plen}", strict=False)
            print(a)
            print(net.network_address)
            print(net.broadcast_address)
            if int(net.broadcast_address) < (1 << net.max_prefixlen) - 1:
                print(net.broadcast_address + 1)
    elif cmd == "asnames":
        reader = maxminddb.open_database(sys.argv[2])
        out = {}
        for a in sys.argv[3:]:
            rec = reader.get(a) or {}
            if rec.get("autonomous_system_number"):
                out[f"AS{rec['autonomous_system_number']}"] = rec.get("autonomous_system_organization")
        print(json.dumps(out))
    elif cmd == "lookup":
        reader = maxminddb.open_database(sys.argv[2])
        for line in sys.stdin:
            ip = line.strip()
            if ip:
                c, a = country_asn(reader, ip)
                city = ((reader.get(ip) or {}).get("city") or {}).get("geoname_id") or 0
                print(json.dumps({"ip": str(ipaddress.ip_address(ip)), "country": c, "asn": a, "city": city}))
    elif cmd == "sums":
        pcap, cdb, adb, nets_path = sys.argv[2:6]
        cr, ar = maxminddb.open_database(cdb), maxminddb.open_database(adb)
        nets = []
        for line in open(nets_path):
            line = line.strip()
            if not line or line.startswith("#") or line.startswith("prefix"):
                continue
            f = [x.strip() for x in line.split(",")]
            f += [""] * (6 - len(f))
            # (network, name, internal, {role, site, tenant})
            nets.append((ipaddress.ip_network(f[0]), f[1], (f[2] or "internal") == "internal",
                         {"role": f[3], "site": f[4], "tenant": f[5]}))

        def net_of(ip):
            a = ipaddress.ip_address(ip)
            best = None
            for n, name, internal, attrs in nets:
                if a.version == n.version and a in n and (best is None or n.prefixlen > best[0].prefixlen):
                    best = (n, name, internal, attrs)
            return best

        def city_of(ip):
            rec = cr.get(ip) or {}
            c = rec.get("city")
            if not c:
                return "unknown"
            return f"{c['names']['en']}, {rec['country']['iso_code']} ({c['geoname_id']})"

        rows = subprocess.run(["tshark", "-r", pcap, "-d", "udp.port==29995,cflow", "-T", "fields", "-E", "occurrence=a",
                               "-e", "cflow.srcaddr", "-e", "cflow.dstaddr", "-e", "cflow.octets"],
                              capture_output=True, text=True, check=True).stdout.splitlines()
        sums = collections.Counter()
        for r in rows:
            a = r.split("\t")
            if len(a) < 3 or not a[2]:
                continue
            for s, d, o in zip(a[0].split(","), a[1].split(","), a[2].split(",")):
                o = int(o)
                sums["total:total"] += o
                (sc, sa), (dc, da) = country_asn(cr, s), country_asn(cr, d)
                sa = sa or country_asn(ar, s)[1]
                da = da or country_asn(ar, d)[1]
                sums[f"src_country:{sc or 'unknown'}"] += o
                sums[f"dst_country:{dc or 'unknown'}"] += o
                sums[f"src_as:AS{sa}"] += o
                sums[f"dst_as:AS{da}"] += o
                sn, dn = net_of(s), net_of(d)
                sums[f"src_net:{sn[1] if sn else 'unknown'}"] += o
                sums[f"dst_net:{dn[1] if dn else 'unknown'}"] += o
                si, di = bool(sn and sn[2]), bool(dn and dn[2])
                b = {(True, True): "internal", (False, True): "in", (True, False): "out", (False, False): "transit"}[(si, di)]
                sums[f"boundary:{b}"] += o
                sums[f"src_city:{city_of(s)}"] += o
                sums[f"dst_city:{city_of(d)}"] += o
                # a network's first line gives its attributes (names repeat only in tests)
                for side, n in (("src", sn), ("dst", dn)):
                    for attr in ("site", "tenant", "role"):
                        v = n[3][attr] if n else ""
                        sums[f"{side}_{attr}:{v or 'unknown'}"] += o
        print(json.dumps(dict(sums), sort_keys=True))
    else:
        sys.exit(f"unknown command {cmd}")


main()
