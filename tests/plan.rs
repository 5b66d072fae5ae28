//! `flowshard plan` on recorded `/sys` trees of larger machines, and the binary's output.

#![allow(clippy::unwrap_used)]

use flowshard::ops::plan::{plan, read_host};
use std::path::Path;

fn tree(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sys").join(name)
}

#[test]
fn dual_socket_with_nic_on_node_1() {
    let h = read_host(&tree("dual-socket-64c-smt-nic-node1"), None);
    assert_eq!(h.cpus.len(), 128);
    assert_eq!(h.cores.len(), 64);
    assert_eq!(h.nic, Some(("ens1f0".to_string(), Some(1), 64)));
    let p = plan(&h);
    // 4 cores of node 1 (32-35 and their siblings) kept for interrupts and the OS
    assert_eq!(p.reserved, vec![32, 96, 33, 97, 34, 98, 35, 99]);
    // one shard per remaining physical core of node 1, no hyperthread siblings
    assert_eq!(p.shards, (36..64).collect::<Vec<_>>());
    // I/O on the other node
    assert_eq!(p.io, vec![0]);
    assert!(p.pin);
    assert!(p.reasons.iter().any(|r| r.contains("NUMA node 1")));
}

#[test]
fn single_socket_without_numa_info() {
    let h = read_host(&tree("single-socket-16c"), None);
    let p = plan(&h);
    assert_eq!(p.reserved, vec![0, 1]);
    assert_eq!(p.io, vec![15]);
    assert_eq!(p.shards, (2..15).collect::<Vec<_>>());
    assert!(p.reasons.iter().any(|r| r.contains("no NUMA node")));
}

#[test]
fn plan_command_writes_a_valid_cores_section() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cores.toml");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_flowshard"))
        .args(["plan", "--sys-root"])
        .arg(tree("dual-socket-64c-smt-nic-node1"))
        .arg("--write")
        .arg(&out)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let cfg = flowshard::config::Config::parse(&text).unwrap();
    assert_eq!(cfg.cores.shards.len(), 28);
    // valid on that machine
    let host = flowshard::config::HostInfo { cpus: (0..128).collect() };
    assert_eq!(cfg.validate(&host), vec![]);
    // and the plan for this VM is valid here
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_flowshard")).args(["plan"]).output().unwrap();
    assert!(st.status.success());
    let here = flowshard::config::Config::parse(&String::from_utf8_lossy(&st.stdout)).unwrap();
    assert_eq!(here.validate(&flowshard::config::HostInfo::detect()), vec![]);
}
