//! The Valkey hot window: schema, writer thread and queries (`flowshard query`).
//!
//! Schema (prefix `fs` by default; every write is an increment, so any number of appliances
//! can write the same keys and their data merges):
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `fs:b:<dim>:<second>` | ZSET | key → bytes in that second (the seed's per-second bucket) | 301 s |
//! | `fs:top:<dim>` | ZSET | key → bytes over the last 300 s | 301 s after the last write |
//! | `fs:s:<dim>:<key>:<minute>` | HASH | `b<ss>`, `p<ss>`, `f<ss>` → bytes, packets, flows per second | end of minute + 301 s |
//! | `fs:alerts` | LIST | the newest 1,000 alerts (JSON) | — |
//! | `fs:incidents` | LIST | the newest 1,000 incident events (JSON: open, update, resolve) | — |
//! | `fs:incidents:open` | HASH | incident id → its latest event, while it is open | — |
//! | `fs:expired` | STRING | newest second already subtracted from `fs:top:*` | — |
//!
//! Why not only per-second hashes: the top-10 over 300 s would read 300 × ~450 entries per
//! dimension at 5,000 rollups/s (tens of ms). Instead `fs:top:<dim>` is a rolling sum: each write
//! adds to it, and when a second leaves the window (300 s later) a Lua script subtracts that
//! second's bucket from it, once, whichever appliance gets there first (`SET NX` claim). Top-N is
//! then one `ZREVRANGE` (O(log n + N)), and a series is six `HGETALL`s of one key's minute
//! hashes. If every writer was away for longer than the buckets live, the rolling sum is rebuilt
//! from the buckets still present (`ZUNIONSTORE`).
//!
//! Outage behaviour: the writer keeps a bounded queue of seconds (see [`super::delivery::DropOldest`]);
//! when Valkey returns it writes those still inside the window and drops (and counts) those
//! older than the TTL as `stale`. Nothing upstream ever waits for Valkey.
//!
//! May depend on: `model`, `pipeline`, `alert`, `config`. Lives on: I/O cores (its thread).

use super::delivery::{backoff, pause, DropOldest, DropReason, SinkStats, Worker};
use super::{Sink, SinkError};
use crate::alert::{AlertDoc, IncidentEvent, IncidentState};
use crate::config::ValkeySink;
use crate::model::time::now_s;
use crate::model::Dimension;
use crate::pipeline::SecondOutput;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One second for Valkey, rendered on the I/O loop.
#[derive(Debug, Clone)]
pub struct HotBatch {
    /// The second.
    pub second: u64,
    /// (dimension, key, bytes, packets, flows).
    pub rows: Vec<(&'static str, String, u64, u64, u64)>,
    /// Alert JSON documents.
    pub alerts: Vec<String>,
    /// Incident events: (id, JSON, resolved).
    pub incidents: Vec<(String, String, bool)>,
    /// Names of keys (dimension, key, JSON object: `if_name`/`if_alias`/`if_speed_mbps` or
    /// `as_name`), for rows that carry them.
    pub names: Vec<(&'static str, String, String)>,
}

/// The name fields of a rollup as a JSON object (`None`: the row has no name).
fn name_json(r: &crate::model::Rollup) -> Option<String> {
    use crate::model::json::esc;
    use std::fmt::Write as _;
    let mut s = String::new();
    if let Some(i) = &r.interface {
        s.push_str("{\"if_name\":");
        esc(&mut s, &i.name);
        s.push_str(",\"if_alias\":");
        esc(&mut s, &i.alias);
        let _ = write!(s, ",\"if_speed_mbps\":{}}}", i.speed_mbps);
    } else if let Some(n) = &r.as_name {
        s.push_str("{\"as_name\":");
        esc(&mut s, n);
        s.push('}');
    } else if let Some(n) = &r.net {
        super::format::net_fields(&mut s, n);
        if s.is_empty() {
            return None;
        }
        s.replace_range(..1, "{"); // the fields start with ','
        s.push('}');
    } else {
        return None;
    }
    Some(s)
}

impl HotBatch {
    /// Records in the batch (what a drop counts).
    fn weight(&self) -> u64 {
        (self.rows.len() + self.alerts.len() + self.incidents.len()) as u64
    }
}

/// The Valkey sink as the I/O loop sees it: a bounded drop-oldest queue of seconds in front of
/// the writer thread.
pub struct ValkeyFront {
    appliance: String,
    queue: DropOldest<HotBatch>,
    stats: Arc<SinkStats>,
    worker: Worker,
}

/// Starts the Valkey sink's writer thread.
pub fn start(v: &ValkeySink, appliance: &str, cpu: Option<usize>) -> Result<ValkeyFront, SinkError> {
    let stats = SinkStats::new("valkey", None);
    let queue = DropOldest::new(v.queue_seconds, stats.clone(), HotBatch::weight);
    let (rx, st, v) = (queue.receiver(), stats.clone(), v.clone());
    let worker = Worker::spawn("valkey", cpu, move |stop| deliver(&v, rx, &st, &stop))?;
    Ok(ValkeyFront { appliance: appliance.to_string(), queue, stats, worker })
}

impl ValkeyFront {
    /// The sink's counters.
    pub fn stats(&self) -> Arc<SinkStats> {
        self.stats.clone()
    }

    fn docs(&self, alerts: &[AlertDoc]) -> Vec<String> {
        alerts
            .iter()
            .map(|a| {
                let mut s = String::new();
                a.write_json(&mut s, &self.appliance);
                s
            })
            .collect()
    }
}

impl Sink for ValkeyFront {
    fn name(&self) -> &'static str {
        self.stats.name
    }

    fn write(&mut self, so: &SecondOutput, alerts: &[AlertDoc]) -> Result<(), SinkError> {
        let rows = so
            .rollups
            .iter()
            .map(|r| (r.dimension.name(), r.dimension.format_key(&r.key), r.bytes, r.packets, r.flows))
            .collect();
        let names = so
            .rollups
            .iter()
            .filter_map(|r| name_json(r).map(|n| (r.dimension.name(), r.dimension.format_key(&r.key), n)))
            .collect();
        self.queue.push(HotBatch { second: so.second, rows, alerts: self.docs(alerts), incidents: Vec::new(), names });
        Ok(())
    }

    fn write_alerts(&mut self, alerts: &[AlertDoc]) -> Result<(), SinkError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let second = alerts.iter().map(|a| a.second).max().unwrap_or(0).max(now_s());
        self.queue.push(HotBatch {
            second,
            rows: Vec::new(),
            alerts: self.docs(alerts),
            incidents: Vec::new(),
            names: Vec::new(),
        });
        Ok(())
    }

    fn write_incidents(&mut self, events: &[IncidentEvent]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        let incidents = events
            .iter()
            .map(|e| {
                let mut s = String::new();
                e.write_json(&mut s, &self.appliance);
                (e.full_id(&self.appliance), s, e.state == IncidentState::Resolve)
            })
            .collect();
        let second = events.iter().map(|e| e.second).max().unwrap_or(0).max(now_s());
        self.queue.push(HotBatch { second, rows: Vec::new(), alerts: Vec::new(), incidents, names: Vec::new() });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn close(&mut self) {
        self.worker.stop();
    }

    fn finish(&mut self) {
        self.worker.stop_and_join();
    }
}

/// Seconds in the hot window.
pub const WINDOW_S: u64 = 300;
/// TTL of a per-second bucket.
pub const BUCKET_TTL_S: u64 = 301;
/// A second older than this is not written any more (it would leave the window before or while
/// it is written; the margin covers clock skew between appliances).
pub const STALE_AFTER_S: u64 = 290;
/// Alerts kept in `<prefix>:alerts`.
pub const ALERTS_KEPT: isize = 1000;

const EXPIRE_LUA: &str = r"
local p, s = ARGV[1], ARGV[2]
if not redis.call('SET', p..':exp:'..s, '1', 'NX', 'EX', 900) then return 0 end
for i = 3, #ARGV do
  local d = ARGV[i]
  local b = redis.call('ZRANGE', p..':b:'..d..':'..s, 0, -1, 'WITHSCORES')
  if #b > 0 then
    local t = p..':top:'..d
    for j = 1, #b, 2 do redis.call('ZINCRBY', t, -tonumber(b[j+1]), b[j]) end
    redis.call('ZREMRANGEBYSCORE', t, '-inf', '0')
  end
end
local cur = tonumber(redis.call('GET', p..':expired') or '0')
if tonumber(s) > cur then redis.call('SET', p..':expired', s) end
return 1
";

/// Key names.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Prefix.
    pub prefix: String,
}

impl Keys {
    /// Per-second bucket.
    pub fn bucket(&self, dim: &str, second: u64) -> String {
        format!("{}:b:{dim}:{second}", self.prefix)
    }
    /// Rolling 300-s sum.
    pub fn top(&self, dim: &str) -> String {
        format!("{}:top:{dim}", self.prefix)
    }
    /// Series hash of one key and minute.
    pub fn series(&self, dim: &str, key: &str, minute: u64) -> String {
        format!("{}:s:{dim}:{key}:{minute}", self.prefix)
    }
    /// Names of one dimension's keys (HASH key → JSON object).
    pub fn names(&self, dim: &str) -> String {
        format!("{}:names:{dim}", self.prefix)
    }
    /// Alerts list.
    pub fn alerts(&self) -> String {
        format!("{}:alerts", self.prefix)
    }
    /// Incident events list.
    pub fn incidents(&self) -> String {
        format!("{}:incidents", self.prefix)
    }
    /// Open incidents hash.
    pub fn incidents_open(&self) -> String {
        format!("{}:incidents:open", self.prefix)
    }
    /// Expiry progress.
    pub fn expired(&self) -> String {
        format!("{}:expired", self.prefix)
    }
}

/// Opens a connection with timeouts.
pub fn connect(url: &str) -> redis::RedisResult<redis::Connection> {
    let c = redis::Client::open(url)?;
    let con = c.get_connection_with_timeout(Duration::from_secs(2))?;
    con.set_read_timeout(Some(Duration::from_secs(5)))?;
    con.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(con)
}

/// Writes one second (pipelined, one round trip).
pub fn write_batch(con: &mut redis::Connection, k: &Keys, b: &HotBatch) -> redis::RedisResult<()> {
    let mut p = redis::pipe();
    let minute = b.second / 60;
    let ss = b.second % 60;
    let (fb, fp, ff) = (format!("b{ss}"), format!("p{ss}"), format!("f{ss}"));
    let series_expire = (minute + 1) * 60 + BUCKET_TTL_S;
    let mut dims: Vec<&str> = Vec::new();
    for (dim, key, bytes, packets, flows) in &b.rows {
        if !dims.contains(dim) {
            dims.push(dim);
        }
        p.cmd("ZINCRBY").arg(k.bucket(dim, b.second)).arg(*bytes).arg(key).ignore();
        p.cmd("ZINCRBY").arg(k.top(dim)).arg(*bytes).arg(key).ignore();
        let s = k.series(dim, key, minute);
        p.cmd("HINCRBY").arg(&s).arg(&fb).arg(*bytes).ignore();
        p.cmd("HINCRBY").arg(&s).arg(&fp).arg(*packets).ignore();
        p.cmd("HINCRBY").arg(&s).arg(&ff).arg(*flows).ignore();
        p.cmd("EXPIREAT").arg(&s).arg(series_expire).ignore();
    }
    for dim in dims {
        p.cmd("EXPIRE").arg(k.bucket(dim, b.second)).arg(BUCKET_TTL_S).ignore();
        p.cmd("EXPIRE").arg(k.top(dim)).arg(BUCKET_TTL_S).ignore();
    }
    let mut named: Vec<&str> = Vec::new();
    for (dim, key, name) in &b.names {
        p.cmd("HSET").arg(k.names(dim)).arg(key).arg(name).ignore();
        if !named.contains(dim) {
            named.push(dim);
        }
    }
    for dim in named {
        // refreshed every second a named key is written; outlives the window
        p.cmd("EXPIRE").arg(k.names(dim)).arg(NAMES_TTL_S).ignore();
    }
    if !b.alerts.is_empty() {
        for a in &b.alerts {
            p.cmd("LPUSH").arg(k.alerts()).arg(a).ignore();
        }
        p.cmd("LTRIM").arg(k.alerts()).arg(0).arg(ALERTS_KEPT - 1).ignore();
    }
    if !b.incidents.is_empty() {
        for (id, doc, resolved) in &b.incidents {
            p.cmd("LPUSH").arg(k.incidents()).arg(doc).ignore();
            if *resolved {
                p.cmd("HDEL").arg(k.incidents_open()).arg(id).ignore();
            } else {
                p.cmd("HSET").arg(k.incidents_open()).arg(id).arg(doc).ignore();
            }
        }
        p.cmd("LTRIM").arg(k.incidents()).arg(0).arg(ALERTS_KEPT - 1).ignore();
    }
    p.query::<()>(con)
}

/// Brings `fs:top:*` up to `now`: subtracts every second that left the window since the last
/// expiry, or rebuilds the sums from the buckets when the gap is longer than they live.
pub fn expire(con: &mut redis::Connection, k: &Keys, script: &redis::Script, now: u64) -> redis::RedisResult<u64> {
    let target = now.saturating_sub(WINDOW_S);
    let done: Option<u64> = redis::cmd("GET").arg(k.expired()).query(con)?;
    let done = done.unwrap_or(0);
    if done >= target {
        return Ok(0);
    }
    let dims: Vec<&str> = Dimension::ALL.iter().map(|d| d.name()).collect();
    if target - done > STALE_AFTER_S {
        // Buckets of the seconds to subtract may be gone: rebuild from the live ones.
        let lock: Option<String> =
            redis::cmd("SET").arg(format!("{}:rebuild", k.prefix)).arg(1).arg("NX").arg("EX").arg(30).query(con)?;
        if lock.is_none() {
            return Ok(0);
        }
        for d in &dims {
            let keys: Vec<String> = (target + 1..=now).map(|s| k.bucket(d, s)).collect();
            let mut c = redis::cmd("ZUNIONSTORE");
            c.arg(k.top(d)).arg(keys.len()).arg(&keys);
            c.query::<()>(con)?;
            redis::cmd("EXPIRE").arg(k.top(d)).arg(BUCKET_TTL_S).query::<()>(con)?;
        }
        redis::cmd("SET").arg(k.expired()).arg(target).query::<()>(con)?;
        return Ok(target - done);
    }
    let mut n = 0;
    for s in done + 1..=target {
        let mut inv = script.prepare_invoke();
        inv.arg(&k.prefix).arg(s);
        for d in &dims {
            inv.arg(*d);
        }
        let claimed: i64 = inv.invoke(con)?;
        n += claimed as u64;
    }
    Ok(n)
}

/// How long key names stay after the last second that carried them.
pub const NAMES_TTL_S: u64 = 3600;

/// The names (JSON objects) of `keys` of a dimension, where known.
pub fn names(
    con: &mut redis::Connection,
    k: &Keys,
    dim: &str,
    keys: &[String],
) -> redis::RedisResult<Vec<Option<String>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    redis::cmd("HMGET").arg(k.names(dim)).arg(keys).query(con)
}

/// Top `n` keys of a dimension by bytes over the last 300 s (merged over all appliances).
pub fn top(con: &mut redis::Connection, k: &Keys, dim: &str, n: usize) -> redis::RedisResult<Vec<(String, u64)>> {
    let v: Vec<(String, f64)> =
        redis::cmd("ZREVRANGE").arg(k.top(dim)).arg(0).arg(n.max(1) as isize - 1).arg("WITHSCORES").query(con)?;
    Ok(v.into_iter().map(|(key, s)| (key, s.max(0.0) as u64)).collect())
}

/// One point of a series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Point {
    /// Second.
    pub second: u64,
    /// Bytes.
    pub bytes: u64,
    /// Packets.
    pub packets: u64,
    /// Flows.
    pub flows: u64,
}

/// The 300-point series of one key, ending at `now` (zero where nothing was written).
pub fn series(con: &mut redis::Connection, k: &Keys, dim: &str, key: &str, now: u64) -> redis::RedisResult<Vec<Point>> {
    let first = now + 1 - WINDOW_S;
    let minutes: Vec<u64> = (first / 60..=now / 60).collect();
    let mut p = redis::pipe();
    for m in &minutes {
        p.cmd("HGETALL").arg(k.series(dim, key, *m));
    }
    let maps: Vec<std::collections::HashMap<String, u64>> = p.query(con)?;
    let mut out: Vec<Point> = (first..=now).map(|second| Point { second, ..Default::default() }).collect();
    for (m, h) in minutes.iter().zip(maps) {
        for (f, v) in h {
            let (kind, ss) = f.split_at(1);
            let Ok(ss) = ss.parse::<u64>() else { continue };
            let sec = m * 60 + ss;
            if sec < first || sec > now {
                continue;
            }
            let pt = &mut out[(sec - first) as usize];
            match kind {
                "b" => pt.bytes = v,
                "p" => pt.packets = v,
                "f" => pt.flows = v,
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The Valkey writer thread: writes queued seconds, keeps the rolling sums expired, reconnects
/// with back-off, drops (and counts) seconds that became older than the window.
fn deliver(v: &ValkeySink, rx: Receiver<HotBatch>, stats: &Arc<SinkStats>, stop: &AtomicBool) {
    let keys = Keys { prefix: v.prefix.clone() };
    let script = redis::Script::new(EXPIRE_LUA);
    let mut con: Option<redis::Connection> = None;
    let mut attempt = 0u32;
    let mut held: Option<HotBatch> = None;
    let mut last_expire = 0u64;
    let mut warned = false;
    loop {
        let b = match held.take() {
            Some(b) => Some(b),
            None => match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(b) => Some(b),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        if b.is_none() && stop.load(Ordering::Relaxed) && rx.is_empty() {
            break;
        }
        let now = now_s();
        if let Some(b) = &b {
            if now.saturating_sub(b.second) > STALE_AFTER_S {
                stats.drop_n(DropReason::Stale, b.weight());
                continue;
            }
        }
        if con.is_none() {
            match connect(&v.url) {
                Ok(c) => {
                    con = Some(c);
                    attempt = 0;
                    if warned {
                        tracing::info!(sink = "valkey", "connected again to {}", v.url);
                        warned = false;
                    }
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    stats.up.store(false, Ordering::Relaxed);
                    if !warned {
                        tracing::warn!(
                            sink = "valkey",
                            "{}: {e} (queueing up to {} s, retrying)",
                            v.url,
                            v.queue_seconds
                        );
                        warned = true;
                    }
                    held = b;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    pause(backoff(attempt));
                    attempt += 1;
                    continue;
                }
            }
        }
        let Some(c) = con.as_mut() else { continue };
        let res = (|| -> redis::RedisResult<()> {
            if let Some(b) = &b {
                write_batch(c, &keys, b)?;
                stats.delivered_second(b.second, b.weight());
            }
            if now != last_expire {
                expire(c, &keys, &script, now)?;
                last_expire = now;
            }
            Ok(())
        })();
        if let Err(e) = res {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            stats.up.store(false, Ordering::Relaxed);
            if !warned {
                tracing::warn!(sink = "valkey", "{}: {e} (queueing, retrying)", v.url);
                warned = true;
            }
            con = None;
            held = b;
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    let left: u64 = rx.try_iter().map(|b| b.weight()).sum::<u64>() + held.map_or(0, |b| b.weight());
    if left > 0 {
        stats.drop_n(DropReason::Shutdown, left);
    }
}
