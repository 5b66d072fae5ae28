//! `flowshard plan`: reads the host's CPUs, NUMA nodes and the capture NIC from `/sys` and
//! proposes a core layout — shards on the NIC's NUMA node (one per physical core, hyperthread
//! siblings left alone), CPUs kept for the NIC's interrupts and the OS, I/O cores preferably on
//! another node — printed with its reasoning and as the config's `[cores]` section.
//!
//! Pure over a `/sys` root, so it is tested against recorded trees of larger machines.
//!
//! Lives on: the main thread.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

/// What the planner read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// Online CPUs.
    pub cpus: Vec<usize>,
    /// NUMA nodes: (node id, its online CPUs).
    pub nodes: Vec<(usize, Vec<usize>)>,
    /// Groups of hyperthread siblings (each a physical core), sorted.
    pub cores: Vec<Vec<usize>>,
    /// The capture NIC: (name, NUMA node if known, interrupt count).
    pub nic: Option<(String, Option<usize>, usize)>,
}

/// The proposed layout and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Shard CPUs.
    pub shards: Vec<usize>,
    /// I/O CPUs.
    pub io: Vec<usize>,
    /// CPUs left for NIC interrupts and the OS.
    pub reserved: Vec<usize>,
    /// Pin threads.
    pub pin: bool,
    /// One line per decision.
    pub reasons: Vec<String>,
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_list(s: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    v.extend(a..=b.min(a + 65_536));
                }
            }
            None => {
                if let Ok(a) = part.trim().parse() {
                    v.push(a);
                }
            }
        }
    }
    v
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// Reads the host from a `/sys` root; `nic` names the capture interface (default: the first
/// interface with a PCI device).
pub fn read_host(sys: &Path, nic: Option<&str>) -> Host {
    let cpus = read(&sys.join("devices/system/cpu/online")).map(|s| parse_list(&s)).unwrap_or_else(|| vec![0]);
    let mut nodes = Vec::new();
    if let Ok(rd) = std::fs::read_dir(sys.join("devices/system/node")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(id) = name.strip_prefix("node").and_then(|n| n.parse::<usize>().ok()) {
                let list = read(&e.path().join("cpulist")).map(|s| parse_list(&s)).unwrap_or_default();
                let list: Vec<usize> = list.into_iter().filter(|c| cpus.contains(c)).collect();
                nodes.push((id, list));
            }
        }
    }
    nodes.sort();
    if nodes.is_empty() {
        nodes.push((0, cpus.clone()));
    }
    let mut seen = BTreeSet::new();
    let mut cores = Vec::new();
    for &c in &cpus {
        if seen.contains(&c) {
            continue;
        }
        let sib = read(&sys.join(format!("devices/system/cpu/cpu{c}/topology/thread_siblings_list")))
            .map(|s| parse_list(&s))
            .filter(|v| v.contains(&c))
            .unwrap_or_else(|| vec![c]);
        let sib: Vec<usize> = sib.into_iter().filter(|x| cpus.contains(x)).collect();
        seen.extend(sib.iter().copied());
        cores.push(sib);
    }
    let nic_name = nic.map(str::to_string).or_else(|| {
        let mut names: Vec<String> = std::fs::read_dir(sys.join("class/net"))
            .ok()?
            .flatten()
            .filter(|e| e.path().join("device").exists())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names.into_iter().next()
    });
    let nic = nic_name.map(|n| {
        let dev = sys.join("class/net").join(&n).join("device");
        let node = read(&dev.join("numa_node"))
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|&x| x >= 0)
            .map(|x| x as usize);
        let irqs = std::fs::read_dir(dev.join("msi_irqs")).map(|d| d.count()).unwrap_or(0);
        (n, node, irqs)
    });
    Host { cpus, nodes, cores, nic }
}

/// Proposes a layout for `host`.
pub fn plan(host: &Host) -> Plan {
    let mut reasons = Vec::new();
    let n = host.cpus.len();
    if n <= 1 {
        reasons.push("one CPU: one shard and the I/O thread share it, unpinned".into());
        return Plan { shards: host.cpus.clone(), io: host.cpus.clone(), reserved: vec![], pin: false, reasons };
    }
    if n == 2 {
        reasons.push(format!(
            "two CPUs: one shard on CPU {}, the I/O thread (and the OS, NIC interrupts, a load generator) on CPU {}",
            host.cpus[0], host.cpus[1]
        ));
        return Plan { shards: vec![host.cpus[0]], io: vec![host.cpus[1]], reserved: vec![], pin: true, reasons };
    }
    let nic_node = host.nic.as_ref().and_then(|n| n.1);
    let home = match (nic_node, &host.nic) {
        (Some(node), Some((name, _, _))) if host.nodes.iter().any(|(id, _)| *id == node) => {
            reasons.push(format!(
                "NIC {name} is attached to NUMA node {node}: shards go there, next to its memory and interrupts"
            ));
            node
        }
        (_, Some((name, _, _))) => {
            reasons.push(format!("NIC {name} reports no NUMA node: using node {}", host.nodes[0].0));
            host.nodes[0].0
        }
        _ => {
            reasons.push(format!("no NIC with a device found: using node {}", host.nodes[0].0));
            host.nodes[0].0
        }
    };
    let home_cpus: BTreeSet<usize> =
        host.nodes.iter().find(|(id, _)| *id == home).map(|(_, c)| c.iter().copied().collect()).unwrap_or_default();
    let home_cores: Vec<&Vec<usize>> = host.cores.iter().filter(|c| c.iter().all(|x| home_cpus.contains(x))).collect();
    let other_cores: Vec<&Vec<usize>> =
        host.cores.iter().filter(|c| !c.iter().all(|x| home_cpus.contains(x))).collect();
    let smt = host.cores.iter().any(|c| c.len() > 1);
    // Keep 1 core per 8 on the NIC's node (at least one) for its interrupts and the OS.
    let keep = (home_cores.len() / 8).max(1);
    let reserved_cores: Vec<&Vec<usize>> = home_cores.iter().take(keep).copied().collect();
    let reserved: Vec<usize> = reserved_cores.iter().flat_map(|c| c.iter().copied()).collect();
    let irqs = host.nic.as_ref().map_or(0, |n| n.2);
    reasons.push(format!(
        "{keep} core(s) of node {home} (CPUs {reserved:?}) left for the NIC's {irqs} interrupt(s) and the OS (1 per 8 cores); point IRQ affinity there (tuning/)"
    ));
    let mut candidates: Vec<&Vec<usize>> = home_cores.iter().skip(keep).copied().collect();
    // I/O cores: 1 per 16 shards, preferably off the NIC node (sinks move far less data).
    let io_count = (candidates.len() / 16).max(1);
    let io: Vec<usize> = if other_cores.len() >= io_count {
        reasons.push(format!("{io_count} I/O core(s) on another node: sinks move ~1/100 of the ingest volume"));
        other_cores.iter().take(io_count).map(|c| c[0]).collect()
    } else if candidates.len() > io_count {
        reasons.push(format!("{io_count} I/O core(s) on node {home} (no other node)"));
        let v: Vec<usize> = candidates.iter().rev().take(io_count).map(|c| c[0]).collect();
        candidates.truncate(candidates.len() - io_count);
        v
    } else {
        reasons.push("I/O shares the reserved core (too few cores)".into());
        vec![reserved[0]]
    };
    let shards: Vec<usize> = candidates.iter().map(|c| c[0]).collect();
    let shards = if shards.is_empty() { vec![home_cpus.iter().next().copied().unwrap_or(0)] } else { shards };
    reasons.push(format!(
        "{} shard(s), one per physical core on node {home}{}",
        shards.len(),
        if smt {
            ": hyperthread siblings left idle (two shards on one core share its caches and halve each other)"
        } else {
            ""
        }
    ));
    Plan { shards, io, reserved, pin: true, reasons }
}

/// The plan as the config's `[cores]` section, with the reasoning as comments.
pub fn toml(p: &Plan) -> String {
    let mut s = String::from("# flowshard plan\n");
    for r in &p.reasons {
        let _ = writeln!(s, "# - {r}");
    }
    let _ = writeln!(s, "# reserved for interrupts/OS: {:?}", p.reserved);
    let _ = writeln!(s, "[cores]\nshards = {:?}\nio = {:?}\npin = {}", p.shards, p.io, p.pin);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(parse_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_list(""), Vec::<usize>::new());
    }

    #[test]
    fn two_cpu_vm_is_degenerate_but_valid() {
        let h = Host { cpus: vec![0, 1], nodes: vec![(0, vec![0, 1])], cores: vec![vec![0], vec![1]], nic: None };
        let p = plan(&h);
        assert_eq!((p.shards, p.io, p.pin), (vec![0], vec![1], true));
    }
}
