//! Host checks, shared by `flowshard doctor`, the start-up warnings and `tuning/tune.sh`: the
//! recommended kernel settings come from the same file the script applies
//! (`tuning/sysctl.d/60-flowshard.conf`, embedded here), so the two never disagree.
//!
//! Pure over a `/proc` and `/sys` root passed in, so the tests run against fake trees.
//!
//! Lives on: the main thread.

use std::fmt;
use std::path::{Path, PathBuf};

/// The sysctl file `tuning/tune.sh` applies.
pub const SYSCTL_FILE: &str = include_str!("../../tuning/sysctl.d/60-flowshard.conf");

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// As recommended.
    Ok,
    /// Works, but loses performance or headroom.
    Warn,
    /// Will lose data or fail.
    Fail,
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Result.
    pub level: Level,
    /// What was checked.
    pub name: String,
    /// Current value.
    pub current: String,
    /// Recommended value.
    pub recommended: String,
    /// Why it matters / what to do.
    pub why: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(
            f,
            "{l}  {:<34} current {:<14} recommended {:<14} {}",
            self.name, self.current, self.recommended, self.why
        )
    }
}

/// Where to read the host from.
#[derive(Clone, Debug)]
pub struct Roots {
    /// Usually `/proc`.
    pub proc_root: PathBuf,
    /// Usually `/sys`.
    pub sys_root: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots { proc_root: PathBuf::from("/proc"), sys_root: PathBuf::from("/sys") }
    }
}

/// The (key, value, comment) settings of the sysctl file.
pub fn recommended_sysctls() -> Vec<(String, u64, String)> {
    let mut why = String::new();
    let mut out = Vec::new();
    for line in SYSCTL_FILE.lines() {
        let l = line.trim();
        if let Some(c) = l.strip_prefix('#') {
            if !why.is_empty() {
                why.push(' ');
            }
            why.push_str(c.trim());
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            if let Ok(v) = v.trim().parse() {
                out.push((k.trim().to_string(), v, std::mem::take(&mut why)));
            }
        } else {
            why.clear();
        }
    }
    out
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.split_whitespace().next()?.parse().ok()
}

/// Runs every check. `rcvbuf` is the largest socket buffer the config asks for; `memlock` the
/// process's RLIMIT_MEMLOCK in bytes (`None` = unlimited); `shards` the planned shard count.
pub fn run(roots: &Roots, rcvbuf: usize, memlock: Option<u64>, shards: usize) -> Vec<Check> {
    let mut v = Vec::new();
    for (key, want, why) in recommended_sysctls() {
        let path = roots.proc_root.join("sys").join(key.replace('.', "/"));
        let cur = read_u64(&path);
        let level = match cur {
            Some(c) if c >= want => Level::Ok,
            Some(_) => Level::Warn,
            None => Level::Warn,
        };
        v.push(Check {
            level,
            name: key,
            current: cur.map_or("unreadable".into(), |c| c.to_string()),
            recommended: format!(">= {want}"),
            why: if level == Level::Ok { String::new() } else { format!("{why} (tuning/tune.sh --apply)") },
        });
    }
    let rmem = read_u64(&roots.proc_root.join("sys/net/core/rmem_max"));
    v.push(Check {
        level: if rmem.is_some_and(|r| r as usize >= rcvbuf) { Level::Ok } else { Level::Fail },
        name: "rmem_max vs listener.recv_buffer_bytes".into(),
        current: rmem.map_or("unreadable".into(), |r| r.to_string()),
        recommended: format!(">= {rcvbuf}"),
        why: "the kernel silently caps SO_RCVBUF at rmem_max: bursts are dropped (kernel_drops)".into(),
    });
    // glommio registers about 2 MiB of I/O memory per shard executor here, plus its rings.
    let need = (shards as u64 * 4 + 4) << 20;
    v.push(Check {
        level: match memlock {
            None => Level::Ok,
            Some(m) if m >= need => Level::Ok,
            Some(m) if m >= 512 << 10 => Level::Warn,
            Some(_) => Level::Fail,
        },
        name: "RLIMIT_MEMLOCK".into(),
        current: memlock.map_or("unlimited".into(), |m| format!("{} KiB", m >> 10)),
        recommended: format!(">= {} KiB", need >> 10),
        why: "glommio registers I/O memory; below 512 KiB it refuses to start (LimitMEMLOCK= in the unit)".into(),
    });
    let gov_dir = roots.sys_root.join("devices/system/cpu/cpu0/cpufreq/scaling_governor");
    match std::fs::read_to_string(&gov_dir) {
        Ok(g) => {
            let g = g.trim().to_string();
            v.push(Check {
                level: if g == "performance" { Level::Ok } else { Level::Warn },
                name: "cpu frequency governor".into(),
                current: g,
                recommended: "performance".into(),
                why: "frequency ramps add latency to each window and cut peak rate (cpupower frequency-set -g performance)".into(),
            });
        }
        Err(_) => v.push(Check {
            level: Level::Ok,
            name: "cpu frequency governor".into(),
            current: "not exposed".into(),
            recommended: "performance".into(),
            why: "no cpufreq here (typical of VMs): nothing to set".into(),
        }),
    }
    v
}

/// The process's RLIMIT_MEMLOCK soft limit in bytes (`None` = unlimited).
pub fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    if rc != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(r.rlim_cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(dir: &Path, rmem: u64, backlog: u64, governor: Option<&str>) -> Roots {
        let core = dir.join("proc/sys/net/core");
        std::fs::create_dir_all(&core).unwrap();
        std::fs::create_dir_all(dir.join("proc/sys/net/ipv4")).unwrap();
        std::fs::write(core.join("rmem_max"), format!("{rmem}\n")).unwrap();
        std::fs::write(core.join("rmem_default"), format!("{}\n", rmem.min(4_194_304))).unwrap();
        std::fs::write(core.join("netdev_max_backlog"), format!("{backlog}\n")).unwrap();
        std::fs::write(core.join("netdev_budget"), "600\n").unwrap();
        std::fs::write(dir.join("proc/sys/net/ipv4/udp_rmem_min"), "131072\n").unwrap();
        if let Some(g) = governor {
            let c = dir.join("sys/devices/system/cpu/cpu0/cpufreq");
            std::fs::create_dir_all(&c).unwrap();
            std::fs::write(c.join("scaling_governor"), format!("{g}\n")).unwrap();
        }
        Roots { proc_root: dir.join("proc"), sys_root: dir.join("sys") }
    }

    #[test]
    fn sysctl_file_is_parsed_with_reasons() {
        let s = recommended_sysctls();
        let rmem = s.iter().find(|x| x.0 == "net.core.rmem_max").unwrap();
        assert_eq!(rmem.1, 67_108_864);
        assert!(rmem.2.contains("rmem_max"));
    }

    #[test]
    fn low_rmem_max_fails_and_good_host_passes() {
        let d = tempfile::tempdir().unwrap();
        let r = fake(d.path(), 212_992, 1000, Some("powersave"));
        let c = run(&r, 32 << 20, Some(8 << 20), 1);
        let get = |n: &str| c.iter().find(|x| x.name == n).unwrap().level;
        assert_eq!(get("rmem_max vs listener.recv_buffer_bytes"), Level::Fail);
        assert_eq!(get("net.core.netdev_max_backlog"), Level::Warn);
        assert_eq!(get("cpu frequency governor"), Level::Warn);
        assert_eq!(get("RLIMIT_MEMLOCK"), Level::Ok);
        assert_eq!(
            run(&r, 32 << 20, Some(64 << 10), 1).iter().find(|x| x.name == "RLIMIT_MEMLOCK").unwrap().level,
            Level::Fail
        );

        let d2 = tempfile::tempdir().unwrap();
        let good = fake(d2.path(), 67_108_864, 250_000, Some("performance"));
        let c = run(&good, 32 << 20, None, 4);
        let bad: Vec<_> = c.iter().filter(|x| x.level != Level::Ok).collect();
        assert!(bad.is_empty(), "{bad:?}");
    }
}
