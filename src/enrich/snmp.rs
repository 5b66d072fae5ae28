//! Interface metadata of the exporters: name (`ifName`), description (`ifAlias`) and speed
//! (`ifHighSpeed`, Mbit/s) per (exporter, ifIndex), learnt by SNMP v2c from each exporter's
//! agent and overridden per interface by static entries in the config (`[[enrich.interface]]`).
//!
//! The table is a plain map, built and replaced whole by the SNMP job
//! ([`crate::jobs::snmp`]) and read by the I/O core when it formats the `exporter_in_if` /
//! `exporter_out_if` rollups — the shards never see it (their keys carry the ifIndex; names are
//! a presentation of the key, like the address text). It is persisted to
//! `<state_dir>/interfaces.json`, so names are there from the first second after a restart and
//! stay while an agent is unreachable.
//!
//! May depend on: `model`. Lives on: the SNMP job thread (polling), the I/O core (lookups,
//! [`Annotator`]).

use crate::model::{Interface, Ip, Rollup};
use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `[enrich.snmp]`: polling the exporters' agents.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SnmpConfig {
    /// Poll the exporters seen in the flows.
    pub enabled: bool,
    /// SNMP v2c community.
    pub community: String,
    /// Agent UDP port (where `agents` names no address).
    pub port: u16,
    /// Seconds between polls of one exporter.
    pub poll_s: u64,
    /// Seconds before polling an exporter again after a failure.
    pub retry_s: u64,
    /// Timeout of one request, milliseconds.
    pub timeout_ms: u64,
    /// Agent address per exporter where it is not the exporter's address (`"192.0.2.1" =
    /// "10.0.0.1:161"`).
    pub agents: BTreeMap<String, String>,
    /// SNMP version: 2 (v2c, `community`) or 3 (USM: `user` and the fields after it).
    pub version: u8,
    /// v3 user name.
    pub user: String,
    /// v3 security level.
    pub security_level: SecurityLevel,
    /// v3 authentication protocol.
    pub auth_protocol: AuthProtocol,
    /// v3 authentication pass phrase (at least 8 characters).
    pub auth_password: String,
    /// v3 privacy (encryption) protocol.
    pub priv_protocol: PrivProtocol,
    /// v3 privacy pass phrase (at least 8 characters).
    pub priv_password: String,
    /// v3 context name (usually empty).
    pub context: String,
}

impl SnmpConfig {
    /// v3 with authentication (a pass phrase is needed).
    pub fn authenticates(&self) -> bool {
        self.version == 3 && self.security_level != SecurityLevel::NoAuthNoPriv
    }

    /// v3 with privacy (a second pass phrase is needed).
    pub fn encrypts(&self) -> bool {
        self.version == 3 && self.security_level == SecurityLevel::AuthPriv
    }
}

/// SNMP v3 security level (USM).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum SecurityLevel {
    /// Neither authentication nor privacy.
    #[serde(rename = "noAuthNoPriv")]
    NoAuthNoPriv,
    /// Authentication, no encryption.
    #[serde(rename = "authNoPriv")]
    AuthNoPriv,
    /// Authentication and encryption (the default).
    #[default]
    #[serde(rename = "authPriv")]
    AuthPriv,
}

/// SNMP v3 authentication protocol.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthProtocol {
    /// HMAC-MD5-96.
    Md5,
    /// HMAC-SHA-96 (the default).
    #[default]
    Sha,
    /// HMAC-SHA-224.
    Sha224,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-384.
    Sha384,
    /// HMAC-SHA-512.
    Sha512,
}

/// SNMP v3 privacy protocol.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PrivProtocol {
    /// DES-CBC.
    Des,
    /// AES-128-CFB (the default).
    #[default]
    Aes,
    /// AES-192-CFB (Blumenthal key extension).
    Aes192,
    /// AES-256-CFB (Blumenthal key extension).
    Aes256,
}

impl Default for SnmpConfig {
    fn default() -> Self {
        SnmpConfig {
            enabled: false,
            community: "public".into(),
            port: 161,
            poll_s: 3600,
            retry_s: 300,
            timeout_ms: 2000,
            agents: BTreeMap::new(),
            version: 2,
            user: String::new(),
            security_level: SecurityLevel::default(),
            auth_protocol: AuthProtocol::default(),
            auth_password: String::new(),
            priv_protocol: PrivProtocol::default(),
            priv_password: String::new(),
            context: String::new(),
        }
    }
}

/// `[[enrich.interface]]`: a static interface entry (wins over SNMP).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StaticInterface {
    /// Exporter address.
    pub exporter: String,
    /// ifIndex as the exporter reports it in flows.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub alias: String,
    /// Speed, Mbit/s (0 = unknown).
    #[serde(default)]
    pub speed_mbps: u64,
}

/// One persisted row.
#[derive(Serialize, Deserialize)]
struct Row {
    exporter: IpAddr,
    index: u32,
    #[serde(flatten)]
    iface: Interface,
}

/// The interface table: (exporter, ifIndex) → interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interfaces {
    map: HashMap<(Ip, u32), Arc<Interface>>,
}

impl Interfaces {
    /// The interface, if known.
    pub fn get(&self, exporter: Ip, index: u32) -> Option<&Arc<Interface>> {
        self.map.get(&(exporter, index))
    }

    /// Interfaces known.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Replaces everything known of `exporter` by `ifaces`.
    pub fn set_exporter(&mut self, exporter: Ip, ifaces: Vec<(u32, Interface)>) {
        self.map.retain(|(e, _), _| *e != exporter);
        self.map.extend(ifaces.into_iter().map(|(i, f)| ((exporter, i), Arc::new(f))));
    }

    /// This table with the static entries laid over it.
    pub fn with_static(&self, statics: &[StaticInterface]) -> Interfaces {
        let mut t = self.clone();
        for s in statics {
            if let Ok(a) = s.exporter.parse::<IpAddr>() {
                let f = Interface { name: s.name.clone(), alias: s.alias.clone(), speed_mbps: s.speed_mbps };
                t.map.insert((Ip::from(a), s.index), Arc::new(f));
            }
        }
        t
    }

    /// The persisted table (`None`: no file; `Err`: unreadable, names the file).
    pub fn load(path: &Path) -> Result<Option<Interfaces>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let rows: Vec<Row> = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let map = rows.into_iter().map(|r| ((Ip::from(r.exporter), r.index), Arc::new(r.iface))).collect();
        Ok(Some(Interfaces { map }))
    }

    /// Writes the table (atomically: a temporary file renamed over the old one; the directory
    /// is created if need be).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut rows: Vec<Row> =
            self.map.iter().map(|(&(e, index), f)| Row { exporter: e.to_std(), index, iface: (**f).clone() }).collect();
        rows.sort_by_key(|r| (r.exporter, r.index));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&rows).map_err(std::io::Error::other)?)?;
        std::fs::rename(tmp, path)
    }
}

/// Where the table is persisted.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("interfaces.json")
}

/// The table as the I/O core reads it: a generation it compares once per second and the
/// table behind a mutex taken only when the generation moved.
#[derive(Debug, Default)]
pub struct IfSlot {
    generation: std::sync::atomic::AtomicU64,
    table: Mutex<Arc<Interfaces>>,
}

impl IfSlot {
    /// Publishes a new table.
    pub fn publish(&self, t: Interfaces) {
        *self.table.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(t);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current table.
    pub fn table(&self) -> Arc<Interfaces> {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Names the interface rollups on the I/O core from the table the SNMP job publishes, and
/// names each exporter it sees to the job once (so only exporters that send flows are polled).
pub struct Annotator {
    slot: Arc<IfSlot>,
    generation: u64,
    table: Arc<Interfaces>,
    exporters: Option<Sender<Ip>>,
    asked: HashSet<Ip>,
    unresolved: HashSet<(Ip, u32)>,
}

/// Exporters and unresolved interfaces remembered at most (beyond: not polled / not counted).
const MAX_TRACKED: usize = 100_000;

impl Annotator {
    /// An annotator reading `slot`; `exporters` reaches the SNMP job (none: static names only).
    pub fn new(slot: Arc<IfSlot>, exporters: Option<Sender<Ip>>) -> Annotator {
        let table = slot.table();
        Annotator {
            generation: slot.generation(),
            slot,
            table,
            exporters,
            asked: HashSet::new(),
            unresolved: HashSet::new(),
        }
    }

    /// Sets [`Rollup::interface`] on the interface rows of one second.
    pub fn annotate(&mut self, rollups: &mut [Rollup]) {
        let g = self.slot.generation();
        if g != self.generation {
            self.generation = g;
            self.table = self.slot.table();
            self.unresolved.clear();
        }
        for r in rollups {
            if !r.dimension.is_interface() || r.key.is_other() {
                continue;
            }
            let e = r.key.ip;
            if let Some(tx) = &self.exporters {
                if self.asked.len() < MAX_TRACKED && self.asked.insert(e) && tx.try_send(e).is_err() {
                    self.asked.remove(&e); // the job is behind: ask again next second
                }
            }
            match self.table.get(e, r.key.num) {
                Some(i) => r.interface = Some(i.clone()),
                None if self.unresolved.len() < MAX_TRACKED => {
                    self.unresolved.insert((e, r.key.num));
                }
                None => {}
            }
        }
    }

    /// Interfaces with a name (SNMP or the config).
    pub fn named(&self) -> u64 {
        self.table.len() as u64
    }

    /// Interfaces seen in the flows that no table names (since the table last changed).
    pub fn unresolved(&self) -> u64 {
        self.unresolved.len() as u64
    }
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum SnmpError {
    /// The agent address could not be used.
    #[error("agent {agent}: {reason}")]
    Agent {
        /// The agent.
        agent: String,
        /// What went wrong.
        reason: String,
    },
    /// The request failed or timed out.
    #[error("agent {agent}: {source}")]
    Request {
        /// The agent.
        agent: SocketAddr,
        /// The library's error.
        source: snmp2::Error,
    },
    /// The agent answered, but not with an interface table.
    #[error("agent {0}: no ifName rows (IF-MIB ifXTable not served, or not readable with this community)")]
    Empty(SocketAddr),
}

/// `ifName`, `ifHighSpeed`, `ifAlias` (IF-MIB ifXTable columns).
const IF_NAME: [u64; 11] = [1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1];
const IF_HIGH_SPEED: [u64; 11] = [1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 15];
const IF_ALIAS: [u64; 11] = [1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 18];
/// Rows read per column at most (a hostile or broken agent cannot keep the poller forever).
const MAX_ROWS: usize = 100_000;
/// Rows asked per GETBULK.
const BULK: u32 = 32;

/// The agent of `exporter`: its `agents` entry, else the exporter's address on `port`.
pub fn agent_of(cfg: &SnmpConfig, exporter: Ip) -> Result<SocketAddr, SnmpError> {
    let ip = exporter.to_std();
    match cfg.agents.get(&ip.to_string()) {
        Some(a) => a
            .parse::<SocketAddr>()
            .or_else(|_| a.parse::<IpAddr>().map(|i| SocketAddr::new(i, cfg.port)))
            .map_err(|e| SnmpError::Agent { agent: a.clone(), reason: e.to_string() }),
        None => Ok(SocketAddr::new(ip, cfg.port)),
    }
}

/// Walks one ifXTable column: (ifIndex, value) rows.
fn walk_column<T>(
    s: &mut snmp2::SyncSession,
    agent: SocketAddr,
    column: &[u64],
    mut value: impl FnMut(&snmp2::Value<'_>) -> Option<T>,
) -> Result<Vec<(u32, T)>, SnmpError> {
    let err = |source| SnmpError::Request { agent, source };
    let mut out = Vec::new();
    let mut cur: Vec<u64> = column.to_vec();
    while out.len() < MAX_ROWS {
        let oid = snmp2::Oid::from(&cur).map_err(|_| err(snmp2::Error::ValueOutOfRange))?;
        let pdu = s.getbulk(&[&oid], 0, BULK).map_err(err)?;
        let mut advanced = false;
        for (name, v) in pdu.varbinds {
            let arcs: Vec<u64> = match name.iter() {
                Some(i) => i.collect(),
                None => return Ok(out),
            };
            if arcs.len() != column.len() + 1 || !arcs.starts_with(column) || arcs <= cur {
                return Ok(out); // past the column (or not moving): done
            }
            if matches!(v, snmp2::Value::EndOfMibView) {
                return Ok(out);
            }
            if let (Ok(index), Some(x)) = (u32::try_from(arcs[column.len()]), value(&v)) {
                out.push((index, x));
            }
            cur = arcs;
            advanced = true;
        }
        if !advanced {
            break;
        }
    }
    Ok(out)
}

/// The v3 security parameters of a configuration.
fn security(cfg: &SnmpConfig) -> snmp2::v3::Security {
    use snmp2::v3::{Auth, AuthProtocol as A, Cipher, KeyExtension, Security};
    let auth = match cfg.security_level {
        SecurityLevel::NoAuthNoPriv => Auth::NoAuthNoPriv,
        SecurityLevel::AuthNoPriv => Auth::AuthNoPriv,
        SecurityLevel::AuthPriv => Auth::AuthPriv {
            cipher: match cfg.priv_protocol {
                PrivProtocol::Des => Cipher::Des,
                PrivProtocol::Aes => Cipher::Aes128,
                PrivProtocol::Aes192 => Cipher::Aes192,
                PrivProtocol::Aes256 => Cipher::Aes256,
            },
            privacy_password: cfg.priv_password.as_bytes().to_vec(),
        },
    };
    let proto = match cfg.auth_protocol {
        AuthProtocol::Md5 => A::Md5,
        AuthProtocol::Sha => A::Sha1,
        AuthProtocol::Sha224 => A::Sha224,
        AuthProtocol::Sha256 => A::Sha256,
        AuthProtocol::Sha384 => A::Sha384,
        AuthProtocol::Sha512 => A::Sha512,
    };
    Security::new(cfg.user.as_bytes(), cfg.auth_password.as_bytes())
        .with_auth(auth)
        .with_auth_protocol(proto)
        .with_context_name(&cfg.context)
        .with_key_extension_method(KeyExtension::Blumenthal)
}

/// A session to one agent: v2c, or v3 with its engine discovered (`init`).
fn session(cfg: &SnmpConfig, agent: SocketAddr) -> Result<snmp2::SyncSession, SnmpError> {
    let timeout = Some(Duration::from_millis(cfg.timeout_ms.max(1)));
    let open = |e: std::io::Error| SnmpError::Agent { agent: agent.to_string(), reason: e.to_string() };
    if cfg.version != 3 {
        return snmp2::SyncSession::new_v2c(agent, cfg.community.as_bytes(), timeout, 0).map_err(open);
    }
    let mut s = snmp2::SyncSession::new_v3(agent, timeout, 0, security(cfg)).map_err(open)?;
    s.init().map_err(|source| SnmpError::Request { agent, source })?;
    Ok(s)
}

/// Reads the interfaces of one agent (three column walks, GETBULK).
pub fn poll(cfg: &SnmpConfig, agent: SocketAddr) -> Result<Vec<(u32, Interface)>, SnmpError> {
    let mut s = session(cfg, agent)?;
    let text = |v: &snmp2::Value<'_>| match v {
        snmp2::Value::OctetString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    let names = walk_column(&mut s, agent, &IF_NAME, text)?;
    if names.is_empty() {
        return Err(SnmpError::Empty(agent));
    }
    let speeds: HashMap<u32, u64> = walk_column(&mut s, agent, &IF_HIGH_SPEED, |v| match v {
        snmp2::Value::Unsigned32(n) | snmp2::Value::Counter32(n) => Some(u64::from(*n)),
        snmp2::Value::Integer(n) => u64::try_from(*n).ok(),
        _ => None,
    })?
    .into_iter()
    .collect();
    let aliases: HashMap<u32, String> = walk_column(&mut s, agent, &IF_ALIAS, text)?.into_iter().collect();
    Ok(names
        .into_iter()
        .map(|(i, name)| {
            let f = Interface {
                name,
                alias: aliases.get(&i).cloned().unwrap_or_default(),
                speed_mbps: speeds.get(&i).copied().unwrap_or(0),
            };
            (i, f)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Dimension;

    #[test]
    fn static_entries_win_and_the_table_round_trips() {
        let e = Ip::from_v4(0xc000_0201);
        let mut t = Interfaces::default();
        let f = |n: &str| Interface { name: n.into(), alias: String::new(), speed_mbps: 1000 };
        t.set_exporter(e, vec![(1, f("ge-0/0/1")), (2, f("ge-0/0/2"))]);
        t.set_exporter(Ip::from_v4(0xc000_0202), vec![(1, f("other"))]);
        let s = StaticInterface {
            exporter: "192.0.2.1".into(),
            index: 2,
            name: "uplink".into(),
            alias: "to AS64500".into(),
            speed_mbps: 10_000,
        };
        let m = t.with_static(&[s]);
        assert_eq!(m.get(e, 1).map(|f| f.name.as_str()), Some("ge-0/0/1"));
        assert_eq!(m.get(e, 2).map(|f| (f.name.as_str(), f.speed_mbps)), Some(("uplink", 10_000)));
        t.set_exporter(e, vec![(3, f("ge-0/0/3"))]);
        assert_eq!(t.len(), 2, "a poll replaces what was known of its exporter");
        let dir = tempfile::tempdir().expect("tempdir");
        let p = state_path(&dir.path().join("state"));
        assert_eq!(Interfaces::load(&p), Ok(None));
        m.save(&p).expect("save");
        assert_eq!(Interfaces::load(&p), Ok(Some(m)));
        std::fs::write(&p, "{").expect("write");
        assert!(Interfaces::load(&p).is_err_and(|e| e.contains("interfaces.json")));
    }

    #[test]
    fn interface_rows_are_named_and_exporters_asked_once() {
        let slot = Arc::new(IfSlot::default());
        let e = Ip::from_v4(0xc000_0201);
        let mut t = Interfaces::default();
        t.set_exporter(e, vec![(7, Interface { name: "xe-0/0/7".into(), alias: "core".into(), speed_mbps: 10_000 })]);
        let (tx, rx) = crossbeam_channel::bounded(4);
        let mut a = Annotator::new(slot.clone(), Some(tx));
        let row = |dimension, num| Rollup::new(1, dimension, crate::model::Key::new(e, num), 1, 1, 1);
        let mut rows =
            vec![row(Dimension::ExporterInIf, 7), row(Dimension::ExporterOutIf, 8), row(Dimension::SrcIp, 7)];
        a.annotate(&mut rows);
        assert!(rows.iter().all(|r| r.interface.is_none()), "nothing published yet");
        assert_eq!((a.named(), a.unresolved()), (0, 2));
        slot.publish(t);
        a.annotate(&mut rows);
        assert_eq!(rows[0].interface.as_ref().map(|i| i.name.as_str()), Some("xe-0/0/7"));
        assert!(rows[1].interface.is_none() && rows[2].interface.is_none());
        assert_eq!((a.named(), a.unresolved()), (1, 1));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![e], "the exporter is named to the job once");
    }

    #[test]
    fn agents_default_to_the_exporter() {
        let mut c = SnmpConfig { port: 1161, ..SnmpConfig::default() };
        let e = Ip::from_v4(0xc000_0201);
        assert_eq!(agent_of(&c, e).expect("agent").to_string(), "192.0.2.1:1161");
        c.agents.insert("192.0.2.1".into(), "10.0.0.9".into());
        assert_eq!(agent_of(&c, e).expect("agent").to_string(), "10.0.0.9:1161");
        c.agents.insert("192.0.2.1".into(), "10.0.0.9:16100".into());
        assert_eq!(agent_of(&c, e).expect("agent").to_string(), "10.0.0.9:16100");
        c.agents.insert("192.0.2.1".into(), "nonsense".into());
        assert!(agent_of(&c, e).is_err());
    }

    #[test]
    fn an_unreachable_agent_is_an_error_not_a_hang() {
        // nothing listens on this port of loopback: a timeout (or refusal), reported
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let agent = sock.local_addr().expect("addr");
        drop(sock);
        let c = SnmpConfig { timeout_ms: 200, ..SnmpConfig::default() };
        let t = std::time::Instant::now();
        assert!(poll(&c, agent).is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
