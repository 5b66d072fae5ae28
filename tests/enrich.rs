//! Enrichment against independent readers: the flattened GeoIP table answers exactly what
//! Python's `maxminddb` reads from a real GeoLite2 database, and a real exporter's capture
//! replayed with country and ASN databases (written by `mmdb-writer`) and a networks file sums
//! per country, AS, network and boundary to what tshark's records looked up independently give.
//!
//! Needs tshark and, under `.cache/py`, the PyPI packages `maxminddb`, `mmdb-writer` and
//! `maxminddb-geolite2` (`.ci/run` installs them).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn pydir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/py")
}

fn helper() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/enrich/independent.py")
}

/// Runs the independent helper; `input` on its stdin.
fn py(args: &[&str], input: Option<&str>) -> String {
    assert!(
        pydir().join("maxminddb").is_dir(),
        "{} lacks the Python packages: pip install --target .cache/py maxminddb mmdb-writer maxminddb-geolite2 (.ci/run does)",
        pydir().display()
    );
    let mut c = Command::new("python3")
        .arg(helper())
        .args(args)
        .env("PYTHONPATH", pydir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = c.stdin.take().unwrap();
    let text = input.unwrap_or_default().to_string();
    let w = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = c.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(out.status.success(), "independent.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn flowshard(args: &[&str], input: Option<&str>) -> (String, String) {
    let mut c = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let text = input.unwrap_or_default().to_string();
    let w = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = c.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "flowshard {args:?}: {err}");
    (String::from_utf8(out.stdout).unwrap(), err)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn a_real_geolite2_database_answers_what_an_independent_reader_says() {
    let db = pydir().join("_maxminddb_geolite2/GeoLite2-City.mmdb");
    assert!(db.is_file(), "{} missing (pip install --target .cache/py maxminddb-geolite2)", db.display());
    let db = db.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", &format!("[enrich]\ngeoip = {db:?}\n"));
    let addrs = py(&["sample", &db, "20000"], None);
    let theirs = py(&["lookup", &db], Some(&addrs));
    let (ours, err) = flowshard(&["enrich", "-c", &cfg], Some(&addrs));
    let (theirs, ours): (Vec<serde_json::Value>, Vec<serde_json::Value>) = (
        theirs.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
        ours.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
    );
    assert_eq!(theirs.len(), ours.len(), "{err}");
    assert!(theirs.len() >= 60_000, "{} addresses", theirs.len());
    let mut with_country = 0;
    for (t, o) in theirs.iter().zip(&ours) {
        assert_eq!((&t["ip"], &t["country"]), (&o["ip"], &o["country"]), "{err}");
        with_country += usize::from(!t["country"].is_null());
    }
    assert!(with_country > theirs.len() / 2, "{with_country} of {} have a country", theirs.len());
    eprintln!("{} addresses, {with_country} with a country, all equal; {}", theirs.len(), err.trim());
    // a city dimension configured: the same lookups give each address its City record's
    // GeoNames id, and the countries do not change
    let cfg = write(
        dir.path(),
        "city.toml",
        &format!("[enrich]\ngeoip = {db:?}\n[aggregate]\ndimensions = [\"total\", \"src_city\"]\n"),
    );
    let addrs: String = theirs.iter().map(|t| format!("{}\n", t["ip"].as_str().unwrap())).collect();
    let (ours, err) = flowshard(&["enrich", "-c", &cfg], Some(&addrs));
    let ours: Vec<serde_json::Value> = ours.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(theirs.len(), ours.len(), "{err}");
    let mut with_city = 0;
    for (t, o) in theirs.iter().zip(&ours) {
        assert_eq!((&t["ip"], &t["country"], &t["city"]), (&o["ip"], &o["country"], &o["city"]), "{err}");
        if t["city"] != 0 {
            with_city += 1;
            assert!(o["city_name"].as_str().is_some_and(|n| !n.is_empty()), "{o}");
        }
    }
    assert!(with_city > theirs.len() / 5, "{with_city} of {} have a city", theirs.len());
    eprintln!("with cities: {with_city} of {} addresses in a city, all equal; {}", theirs.len(), err.trim());
}

#[test]
fn a_capture_sums_per_country_as_network_and_boundary_as_independent_lookups_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    py(&["mkdbs", &d], None);
    let nets = write(
        dir.path(),
        "networks.csv",
        "prefix,name,boundary,role,site,tenant\n\
         10.1.0.0/16,campus,internal,users,hq,\n\
         10.1.3.0/24,servers,internal,servers,hq,\n\
         192.0.2.0/24,dc,internal,servers,dc1,acme\n\
         192.0.2.32/27,dmz,external,dmz,dc1,\n\
         2001:db8::/32,v6lab\n",
    );
    let (country, asn) = (format!("{d}/country.mmdb"), format!("{d}/asn.mmdb"));
    let cfg = write(
        dir.path(),
        "c.toml",
        &format!(
            "[enrich]\ngeoip = {country:?}\nasn = {asn:?}\nnetworks = {nets:?}\n[aggregate]\n\
             dimensions = [\"total\", \"src_country\", \"dst_country\", \"src_as\", \"dst_as\", \"src_net\", \"dst_net\", \"boundary\",\
             \"src_city\", \"dst_city\", \"src_site\", \"dst_site\", \"src_tenant\", \"dst_tenant\", \"src_role\", \"dst_role\"]\n\
             [layer3]\nenabled = false\n"
        ),
    );
    let pcap = captures().join("softflowd-v5.pcap").display().to_string();
    let want: BTreeMap<String, u64> = serde_json::from_str(&py(&["sums", &pcap, &country, &asn, &nets], None)).unwrap();
    assert!(want.len() > 12, "{want:?}");
    for shards in ["1", "2"] {
        let (out, _) = flowshard(&["replay", "--quiet", "--shards", shards, "-c", &cfg, &pcap], None);
        assert!(out.is_empty());
        let (out, _) = flowshard(&["replay", "--shards", shards, "-c", &cfg, &pcap], None);
        let s = sum_lines(&out);
        let got: BTreeMap<String, u64> = s.by_key.iter().map(|((dim, k), b)| (format!("{dim}:{k}"), *b)).collect();
        assert!(!got.keys().any(|k| k.ends_with(":other")), "nothing folded: {got:?}");
        // AS rows carry the organization the ASN database gives that AS (AS0: none)
        let names: BTreeMap<String, String> =
            serde_json::from_str(&py(&["asnames", &asn, "192.0.2.1", "198.51.100.1", "203.0.113.1"], None)).unwrap();
        assert_eq!(names.len(), 3, "{names:?}");
        let mut named = 0;
        for line in
            out.lines().filter(|l| l.contains("\"dimension\":\"src_as\"") || l.contains("\"dimension\":\"dst_as\""))
        {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = v["key"].as_str().unwrap();
            assert_eq!(v["as_name"].as_str(), names.get(key).map(String::as_str), "{line}");
            named += usize::from(v.get("as_name").is_some());
        }
        assert!(named > 0, "no AS row named");
        // network rows carry the networks file's role, site and tenant (the empty ones omitted)
        let mut nets = 0;
        for line in
            out.lines().filter(|l| l.contains("\"dimension\":\"src_net\"") || l.contains("\"dimension\":\"dst_net\""))
        {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let want = match v["key"].as_str().unwrap() {
                "campus" => (Some("users"), Some("hq"), None),
                "servers" => (Some("servers"), Some("hq"), None),
                "dc" => (Some("servers"), Some("dc1"), Some("acme")),
                "dmz" => (Some("dmz"), Some("dc1"), None),
                _ => (None, None, None),
            };
            assert_eq!((v["net_role"].as_str(), v["net_site"].as_str(), v["net_tenant"].as_str()), want, "{line}");
            nets += usize::from(want.0.is_some());
        }
        assert!(nets > 0, "no network row with a role");
        assert_eq!(got, want, "{shards} shard(s): flowshard (left) vs tshark + maxminddb + ipaddress (right)");
        // every dimension accounts for every byte: unknowns are a key of their own
        let total = want["total:total"];
        for dim in [
            "src_country",
            "dst_country",
            "src_as",
            "dst_as",
            "src_net",
            "dst_net",
            "boundary",
            "src_city",
            "dst_city",
            "src_site",
            "dst_site",
            "src_tenant",
            "dst_tenant",
            "src_role",
            "dst_role",
        ] {
            let sum: u64 = got.iter().filter(|(k, _)| k.starts_with(&format!("{dim}:"))).map(|(_, b)| b).sum();
            assert_eq!(sum, total, "{dim}");
        }
    }
    assert!(want.contains_key("src_country:unknown") && want.contains_key("boundary:in"), "{want:?}");
    for k in [
        "src_city:New York, US (5128581)",
        "dst_city:Berlin, DE (2950159)",
        "src_site:hq",
        "dst_tenant:acme",
        "src_role:servers",
    ] {
        assert!(want.contains_key(k), "the capture exercises {k}: {want:?}");
    }
}

#[test]
fn a_dimension_without_its_table_and_a_bad_networks_line_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", "[aggregate]\ndimensions = [\"total\", \"src_country\"]\n");
    let out = Command::new(bin()).args(["validate", &cfg]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("aggregate.dimensions[1]") && text.contains("enrich.geoip"), "{text}");
    let nets = write(dir.path(), "n.csv", "10.0.0.0/8,corp\n10.0.0.0/40,bad\n");
    let cfg = write(dir.path(), "d.toml", &format!("[enrich]\nnetworks = {nets:?}\n"));
    let out = Command::new(bin()).args(["enrich", "-c", &cfg, "10.0.0.1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("n.csv:2") && text.contains("prefix length 40") && text.contains("fix:"), "{text}");
}

/// Reloads while records arrive: the networks file is rewritten (a network renamed) while a
/// real exporter's capture is sent in a loop, then a SIGHUP; every record is counted once under
/// one of the names (per-second sums over `src_net` equal `total`, and the run's totals equal
/// what was sent), and both names appear.
#[test]
fn a_reload_under_load_loses_no_record_and_counts_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let nets = dir.path().join("networks.csv");
    std::fs::write(&nets, "10.1.0.0/16,campus\n192.0.2.0/24,dc\n").unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        &format!(
            "[enrich]\nnetworks = {:?}\n[aggregate]\ndimensions = [\"total\", \"src_net\", \"boundary\"]\n[layer3]\nenabled = false\n",
            nets.display().to_string()
        ),
    );
    let state = dir.path().join("state");
    let run = Running::start(2, &state, &["--config", &cfg]);
    let http = run.http.clone().unwrap();
    let reloads = || metric(&http, "flowshard_sink_records_total", "sink=\"enrich\",result=\"delivered\"");
    let pcap = captures().join("softflowd-v5.pcap");
    let t = &truth()["softflowd-v5.pcap"];
    let (per_loop_bytes, per_loop_records) = (t["octets"].as_u64().unwrap(), t["flow_records"].as_u64().unwrap());
    let mut loops = 0u64;
    let mut send = |n: usize| {
        for _ in 0..n {
            send_capture(&pcap, &run.addr, "127.0.0.1", |_| true);
            loops += 1;
        }
    };
    send(3);
    assert_eq!(reloads(), 0.0);
    // rewritten in place (not renamed): the reloader must wait for the write to settle
    std::fs::write(&nets, "10.1.0.0/16,campus-renamed\n192.0.2.0/24,dc\n").unwrap();
    send(3);
    wait_until("the file-change reload", 20, || reloads() >= 1.0);
    send(3);
    // SIGHUP reloads the same files again
    let pid = run.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_until("the SIGHUP reload", 20, || reloads() >= 2.0);
    send(3);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (ok, out, err) = run.stop();
    assert!(ok, "{}", err.join("\n"));
    let s = sum_lines(&out);
    let sum = summary(&err);
    assert_eq!(sum["records"].as_u64(), Some(loops * per_loop_records), "{sum}");
    assert_eq!(s.total_bytes, loops * per_loop_bytes);
    let net_sum: u64 = s.by_key.iter().filter(|((d, _), _)| d == "src_net").map(|(_, b)| b).sum();
    let boundary_sum: u64 = s.by_key.iter().filter(|((d, _), _)| d == "boundary").map(|(_, b)| b).sum();
    assert_eq!((net_sum, boundary_sum), (s.total_bytes, s.total_bytes));
    let key = |k: &str| s.by_key.get(&("src_net".to_string(), k.to_string())).copied().unwrap_or(0);
    assert!(key("campus") > 0 && key("campus-renamed") > 0, "{:?}", s.by_key);
    assert!(err.iter().any(|l| l.contains("enrichment tables reloaded") && l.contains("SIGHUP")), "{}", err.join("\n"));
}
