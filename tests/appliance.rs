//! The appliance pieces: the systemd unit verifies and scores as well-hardened, the install
//! script installs into a DESTDIR-style root (and uninstalls), readiness reaches a
//! NOTIFY_SOCKET, and `flowshard doctor` fails on a host whose rmem_max caps the socket buffer.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn have(cmd: &str) -> bool {
    Command::new(cmd).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// The unit with its binary paths pointed at the built binary (verify checks they exist).
fn unit_copy(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("systemd/flowshard.service")).unwrap();
    let p = dir.join("flowshard.service");
    std::fs::write(&p, text.replace("/usr/local/bin/flowshard", bin())).unwrap();
    p
}

#[test]
fn unit_verifies_and_is_well_hardened() {
    if !have("systemd-analyze") {
        assert!(std::env::var("FLOWSHARD_SKIP_SYSTEMD").is_ok(), "systemd-analyze missing (install Debian's systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let v = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    assert!(v.status.success(), "verify: {}", String::from_utf8_lossy(&v.stderr));
    let s = Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&unit).output().unwrap();
    let text = String::from_utf8_lossy(&s.stdout).to_string() + &String::from_utf8_lossy(&s.stderr);
    let line = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{text}"));
    let score: f64 = line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(score <= 2.0, "exposure {score} (lower is better): {line}");
}

#[test]
fn install_script_into_destdir_and_uninstall() {
    let root = tempfile::tempdir().unwrap();
    let st = Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .args(["--destdir"])
        .arg(root.path())
        .args(["--binary", bin()])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}\n{}", String::from_utf8_lossy(&st.stdout), String::from_utf8_lossy(&st.stderr));
    let r = root.path();
    for f in [
        "usr/local/bin/flowshard",
        "etc/flowshard/flowshard.toml",
        "etc/systemd/system/flowshard.service",
        "etc/sysctl.d/60-flowshard.conf",
        "usr/lib/sysusers.d/flowshard.conf",
    ] {
        assert!(r.join(f).is_file(), "{f} missing");
    }
    assert!(r.join("var/lib/flowshard").is_dir());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(r.join("usr/local/bin/flowshard")).unwrap().permissions().mode() & 0o111, 0o111);
    // the installed config is valid and carries the planned cores
    let conf = std::fs::read_to_string(r.join("etc/flowshard/flowshard.toml")).unwrap();
    let cfg = flowshard::config::Config::parse(&conf).unwrap();
    assert!(!cfg.cores.shards.is_empty());
    assert_eq!(cfg.validate(&flowshard::config::HostInfo::detect()), vec![]);
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/flowshard.service")).unwrap();
    assert!(unit.lines().any(|l| l.starts_with("CPUAffinity=") && l.len() > "CPUAffinity=".len()));
    // nothing outside the root was touched: the messages say so
    assert!(String::from_utf8_lossy(&st.stdout).contains("(destdir: skipped) systemctl enable"));
    // a second install keeps the config
    std::fs::write(r.join("etc/flowshard/flowshard.toml"), format!("{conf}\n# operator edit\n")).unwrap();
    let st = Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .arg("--destdir")
        .arg(r)
        .args(["--binary", bin()])
        .output()
        .unwrap();
    assert!(st.status.success());
    assert!(std::fs::read_to_string(r.join("etc/flowshard/flowshard.toml")).unwrap().contains("# operator edit"));
    let st = Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .arg("--destdir")
        .arg(r)
        .arg("--uninstall")
        .output()
        .unwrap();
    assert!(st.status.success());
    assert!(!r.join("usr/local/bin/flowshard").exists());
    assert!(!r.join("etc/systemd/system/flowshard.service").exists());
    assert!(r.join("etc/flowshard/flowshard.toml").exists(), "config kept without --purge");
}

#[test]
fn readiness_watchdog_and_stopping_reach_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--listen", "127.0.0.1:0", "--no-pin", "--shards", "1", "--state-dir"])
        .arg(dir.path().join("state"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    assert!(msg.contains("STATUS=listening on 127.0.0.1:"));
    // the watchdog is pinged (every half interval) while shards report
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"WATCHDOG=1");
    unsafe_kill(child.id());
    let mut last = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        last = buf[..n].to_vec();
        if last == b"STOPPING=1" {
            break;
        }
    }
    assert_eq!(last, b"STOPPING=1");
    assert!(child.wait().unwrap().success());
}

fn unsafe_kill(pid: u32) {
    Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
}

#[test]
fn doctor_fails_when_rmem_max_caps_the_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("sys/net/core");
    std::fs::create_dir_all(&core).unwrap();
    std::fs::write(core.join("rmem_max"), "212992\n").unwrap();
    let out = Command::new(bin()).args(["doctor", "--proc-root"]).arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("FAIL") && l.contains("rmem_max vs listener.recv_buffer_bytes")),
        "{text}"
    );
    // and the shell script reads the same file and agrees
    let sh = Command::new("bash")
        .arg(repo().join("tuning/tune.sh"))
        .arg("--sysctl-root")
        .arg(dir.path().join("sys"))
        .output()
        .unwrap();
    assert!(!sh.status.success());
    assert!(String::from_utf8_lossy(&sh.stdout).contains("CHANGE  net.core.rmem_max"));
}
