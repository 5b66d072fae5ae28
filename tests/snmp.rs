//! Interface names against a real net-snmp `snmpd` (Debian `snmpd`) on loopback: a running
//! flowshard polls the agent of the exporter it receives NetFlow v5 from (127.0.0.1), and its
//! `exporter_in_if` / `exporter_out_if` rollups carry the names, descriptions and speeds that
//! Debian's `snmpwalk` reads independently from the same agent; a static entry in the config
//! wins; an interface the agent does not have is counted as unresolved. With `snmpd` stopped,
//! a restarted flowshard still names the interfaces (persisted in its state directory), counts
//! the failed polls and takes every record.
//!
//! Needs `snmpd` and `snmp` (`.ci/run` installs them).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const COMMUNITY: &str = "flowtest";
const IF_NAME: &str = ".1.3.6.1.2.1.31.1.1.1.1";
const IF_HIGH_SPEED: &str = ".1.3.6.1.2.1.31.1.1.1.15";
const IF_ALIAS: &str = ".1.3.6.1.2.1.31.1.1.1.18";

/// A real snmpd on 127.0.0.1:`port`, its state in `dir`; killed on drop.
struct Snmpd(Child);

impl Snmpd {
    fn start(dir: &Path, port: u16) -> Snmpd {
        let conf = format!("rocommunity {COMMUNITY} 127.0.0.1\nrwcommunity {COMMUNITY}rw 127.0.0.1\n");
        Snmpd::with_conf(dir, port, &conf, &["-v2c", "-c", COMMUNITY])
    }

    /// snmpd with `conf`, ready once `snmpwalk` with `auth` reads ifName.
    fn with_conf(dir: &Path, port: u16, conf_text: &str, auth: &[&str]) -> Snmpd {
        let conf = dir.join("snmpd.conf");
        std::fs::write(&conf, conf_text).unwrap();
        let child = Command::new("/usr/sbin/snmpd")
            .args(["-f", "-Lo", "-C", "-M", "/dev/null", "-c"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.join("snmpd.pid"))
            .arg(format!("--persistentDir={}", dir.join("persist").display()))
            .arg(format!("udp:127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/sbin/snmpd (Debian package snmpd; .ci/run installs it)");
        let s = Snmpd(child);
        wait_until("snmpd answers", 20, || !walk_as(auth, port, IF_NAME).is_empty());
        s
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One column read by net-snmp's own `snmpwalk` (v2c): ifIndex → value as text.
fn walk(port: u16, column: &str) -> BTreeMap<u32, String> {
    walk_as(&["-v2c", "-c", COMMUNITY], port, column)
}

/// One column read by `snmpwalk` with the version and credentials `auth`.
fn walk_as(auth: &[&str], port: u16, column: &str) -> BTreeMap<u32, String> {
    let out = Command::new("snmpwalk")
        .args(auth)
        .args(["-On", "-Oq", "-t", "1", "-r", "0", &format!("127.0.0.1:{port}"), column])
        .output()
        .expect("snmpwalk (Debian package snmp)");
    // "<oid> <value>" per line
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (oid, v) = l.split_once(' ').unwrap_or((l, ""));
            let index = oid.strip_prefix(column)?.strip_prefix('.')?.parse().ok()?;
            Some((index, v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A NetFlow v5 datagram of one record per (in, out) interface pair, 1000 bytes each.
fn v5(pairs: &[(u16, u16)], seq: u32) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as u32;
    let mut d = Vec::with_capacity(24 + 48 * pairs.len());
    d.extend_from_slice(&5u16.to_be_bytes());
    d.extend_from_slice(&(pairs.len() as u16).to_be_bytes());
    d.extend_from_slice(&100_000u32.to_be_bytes()); // uptime, ms
    d.extend_from_slice(&now.to_be_bytes());
    d.extend_from_slice(&0u32.to_be_bytes());
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend_from_slice(&[0, 0, 0, 0]); // engine, sampling
    for (i, &(inp, out)) in pairs.iter().enumerate() {
        d.extend_from_slice(&[10, 0, 0, 1 + i as u8]); // src
        d.extend_from_slice(&[192, 0, 2, 10]); // dst
        d.extend_from_slice(&[0, 0, 0, 0]); // next hop
        d.extend_from_slice(&inp.to_be_bytes());
        d.extend_from_slice(&out.to_be_bytes());
        d.extend_from_slice(&10u32.to_be_bytes()); // packets
        d.extend_from_slice(&1000u32.to_be_bytes()); // bytes
        d.extend_from_slice(&99_000u32.to_be_bytes()); // first
        d.extend_from_slice(&99_500u32.to_be_bytes()); // last
        d.extend_from_slice(&40_000u16.to_be_bytes());
        d.extend_from_slice(&443u16.to_be_bytes());
        d.extend_from_slice(&[0, 0x1b, 6, 0]); // pad, flags (FIN), tcp, tos
        d.extend_from_slice(&[0; 8]); // AS, masks, pad
    }
    d
}

/// The interface fields of every `exporter_in_if` / `exporter_out_if` rollup line, by
/// (dimension, key): the set of (if_name, if_alias, if_speed_mbps) seen.
type Named = BTreeMap<(String, String), (Option<String>, Option<String>, Option<u64>)>;

fn named(out: &str) -> Named {
    let mut m = Named::new();
    for l in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else { continue };
        let d = v["dimension"].as_str().unwrap_or_default();
        if v["type"] != "rollup" || !d.starts_with("exporter_") || !d.ends_with("_if") {
            continue;
        }
        let s = |f: &str| v[f].as_str().map(str::to_string);
        m.insert(
            (d.to_string(), v["key"].as_str().unwrap().to_string()),
            (s("if_name"), s("if_alias"), v["if_speed_mbps"].as_u64()),
        );
    }
    m
}

#[test]
fn interface_names_come_from_a_real_snmpd_and_stay_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let agent = Snmpd::start(dir.path(), port);
    // an operator's description on interface 1, set through the agent itself
    let set = Command::new("snmpset")
        .args(["-v2c", "-c", &format!("{COMMUNITY}rw"), &format!("127.0.0.1:{port}"), &format!("{IF_ALIAS}.1")])
        .args(["s", "uplink to the flowshard test"])
        .output()
        .unwrap();
    assert!(set.status.success(), "snmpset ifAlias: {}", String::from_utf8_lossy(&set.stderr));
    let (names, speeds, aliases) = (walk(port, IF_NAME), walk(port, IF_HIGH_SPEED), walk(port, IF_ALIAS));
    assert_eq!(aliases.get(&1).map(String::as_str), Some("uplink to the flowshard test"));
    let indexes: Vec<u16> = names.keys().filter_map(|&i| u16::try_from(i).ok()).collect();
    assert!(!indexes.is_empty());

    let cfg = dir.path().join("c.toml");
    let write_cfg = |retry: u64| {
        std::fs::write(
            &cfg,
            format!(
                "[enrich.snmp]\nenabled = true\ncommunity = \"{COMMUNITY}\"\nport = {port}\npoll_s = 3600\nretry_s = {retry}\ntimeout_ms = 300\n\
                 [[enrich.interface]]\nexporter = \"127.0.0.1\"\nindex = 77\nname = \"static-77\"\nalias = \"from the config\"\nspeed_mbps = 40000\n\
                 [aggregate]\ndimensions = [\"total\", \"exporter_in_if\", \"exporter_out_if\"]\n[layer3]\nenabled = false\n"
            ),
        )
        .unwrap();
    };
    write_cfg(3600);
    let state = dir.path().join("state");
    // every interface the agent has, the static one and one nobody knows, as input and output
    let mut pairs: Vec<(u16, u16)> = indexes.iter().map(|&i| (i, 77)).collect();
    pairs.push((999, indexes[0]));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let send_for = |to: &str, secs: u64, seq: &mut u32| -> u64 {
        let mut n = 0;
        let end = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < end {
            sock.send_to(&v5(&pairs, *seq), to).unwrap();
            *seq += pairs.len() as u32;
            n += pairs.len() as u64;
            std::thread::sleep(Duration::from_millis(100));
        }
        n
    };
    let mut seq = 0;

    let run = Running::start(1, &state, &["--config", cfg.to_str().unwrap()]);
    let http = run.http.clone().unwrap();
    let mut sent = send_for(&run.addr, 1, &mut seq);
    wait_until("a successful poll", 30, || {
        sent += send_for(&run.addr, 1, &mut seq);
        metric(&http, "flowshard_sink_records_total", "sink=\"snmp\",result=\"delivered\"") >= 1.0
    });
    sent += send_for(&run.addr, 3, &mut seq);
    assert!(metric(&http, "flowshard_interfaces", "state=\"unresolved\"") >= 1.0, "interface 999 is unresolved");
    assert!(metric(&http, "flowshard_interfaces", "state=\"named\"") >= indexes.len() as f64 + 1.0);
    let (ok, out, err) = run.stop();
    assert!(ok, "{}", err.join("\n"));
    assert_eq!(summary(&err)["records"].as_u64(), Some(sent));
    let got = named(&out);
    for &i in &indexes {
        let i32 = u32::from(i);
        let want = (
            Some(names[&i32].clone()),
            Some(aliases.get(&i32).cloned().unwrap_or_default()),
            Some(speeds.get(&i32).and_then(|v| v.parse().ok()).unwrap_or(0)),
        );
        assert_eq!(got.get(&("exporter_in_if".into(), format!("127.0.0.1:{i}"))), Some(&want), "{got:?}");
    }
    let static77 = (Some("static-77".to_string()), Some("from the config".to_string()), Some(40_000));
    assert_eq!(got.get(&("exporter_out_if".into(), "127.0.0.1:77".into())), Some(&static77));
    assert_eq!(got.get(&("exporter_in_if".into(), "127.0.0.1:999".into())), Some(&(None, None, None)));
    assert!(state.join("interfaces.json").is_file(), "persisted: {}", err.join("\n"));

    // the agent stops: a restart still names the interfaces, counts the failed polls, takes
    // every record
    drop(agent);
    write_cfg(1);
    let run = Running::start(1, &state, &["--config", cfg.to_str().unwrap()]);
    let http = run.http.clone().unwrap();
    let mut sent = 0;
    wait_until("failed polls counted", 30, || {
        sent += send_for(&run.addr, 1, &mut seq);
        metric(&http, "flowshard_sink_failures_total", "sink=\"snmp\"") >= 2.0
    });
    assert_eq!(metric(&http, "flowshard_sink_up", "sink=\"snmp\""), 0.0);
    let (ok, out, err) = run.stop();
    assert!(ok, "{}", err.join("\n"));
    assert_eq!(summary(&err)["records"].as_u64(), Some(sent), "ingest unaffected");
    let got = named(&out);
    let i = indexes[0];
    assert_eq!(
        got.get(&("exporter_in_if".into(), format!("127.0.0.1:{i}"))).and_then(|x| x.0.clone()),
        Some(names[&(i as u32)].clone()),
        "the persisted name"
    );
}

/// SNMP v3 (USM): a user with SHA authentication and AES privacy reads the same names, speeds
/// and descriptions as net-snmp's `snmpwalk -v3` with that user; a wrong pass phrase is a failed
/// poll, counted, and names nothing.
#[test]
fn snmp_v3_with_authentication_and_privacy_reads_what_snmpwalk_reads() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let conf = "createUser flowv3 SHA \"flowshard-auth\" AES \"flowshard-priv\"\nrouser flowv3 priv\n";
    let auth = [
        "-v3",
        "-l",
        "authPriv",
        "-u",
        "flowv3",
        "-a",
        "SHA",
        "-A",
        "flowshard-auth",
        "-x",
        "AES",
        "-X",
        "flowshard-priv",
    ];
    let _agent = Snmpd::with_conf(dir.path(), port, conf, &auth);
    let (names, speeds, aliases) =
        (walk_as(&auth, port, IF_NAME), walk_as(&auth, port, IF_HIGH_SPEED), walk_as(&auth, port, IF_ALIAS));
    let indexes: Vec<u16> = names.keys().filter_map(|&i| u16::try_from(i).ok()).collect();
    assert!(!indexes.is_empty());
    let pairs: Vec<(u16, u16)> = indexes.iter().map(|&i| (i, i)).collect();
    for (tag, password, want_named) in [("good", "flowshard-priv", true), ("wrong", "not-the-pass-phrase", false)] {
        let cfg = dir.path().join(format!("{tag}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[enrich.snmp]\nenabled = true\nversion = 3\nuser = \"flowv3\"\nsecurity_level = \"authPriv\"\n\
                 auth_protocol = \"sha\"\nauth_password = \"flowshard-auth\"\npriv_protocol = \"aes\"\npriv_password = \"{password}\"\n\
                 port = {port}\npoll_s = 3600\nretry_s = 1\ntimeout_ms = 300\n\
                 [aggregate]\ndimensions = [\"total\", \"exporter_in_if\"]\n[layer3]\nenabled = false\n"
            ),
        )
        .unwrap();
        let run = Running::start(1, &dir.path().join(format!("state-{tag}")), &["--config", cfg.to_str().unwrap()]);
        let http = run.http.clone().unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut seq = 0;
        let what = if want_named { "a successful v3 poll" } else { "failed v3 polls counted" };
        wait_until(what, 30, || {
            sock.send_to(&v5(&pairs, seq), &run.addr).unwrap();
            seq += pairs.len() as u32;
            std::thread::sleep(Duration::from_millis(300));
            if want_named {
                metric(&http, "flowshard_sink_records_total", "sink=\"snmp\",result=\"delivered\"") >= 1.0
            } else {
                metric(&http, "flowshard_sink_failures_total", "sink=\"snmp\"") >= 2.0
            }
        });
        // a second of flows after the names are in
        for _ in 0..5 {
            sock.send_to(&v5(&pairs, seq), &run.addr).unwrap();
            seq += pairs.len() as u32;
            std::thread::sleep(Duration::from_millis(300));
        }
        let (ok, out, err) = run.stop();
        assert!(ok, "{}", err.join("\n"));
        let got = named(&out);
        for &i in &indexes {
            let i32 = u32::from(i);
            let want = if want_named {
                (
                    Some(names[&i32].clone()),
                    Some(aliases.get(&i32).cloned().unwrap_or_default()),
                    Some(speeds.get(&i32).and_then(|v| v.parse().ok()).unwrap_or(0)),
                )
            } else {
                (None, None, None)
            };
            assert_eq!(got.get(&("exporter_in_if".into(), format!("127.0.0.1:{i}"))), Some(&want), "{tag}: {got:?}");
        }
    }
}
