//! A bounded on-disk spool: the write-ahead queue between the I/O loop and one remote sink
//! (Kafka, OpenSearch).
//!
//! The I/O loop appends one frame per second of output; the sink's own thread reads frames in
//! order, delivers them, and commits each one only once the remote side has acknowledged every
//! record in it. A sink outage therefore never blocks the I/O loop (and never a shard): frames
//! pile up on disk and are delivered in order when the sink returns. The read position is
//! persisted, so frames not yet delivered survive a restart of flowshard too (delivered again
//! at least once; sinks use idempotent ids or an idempotent producer so that this does not
//! double-count).
//!
//! Layout: `<dir>/<16 hex digits>.seg` segments of frames `[len u32 LE][crc32 u32 LE][payload]`,
//! and `<dir>/cursor` (`segment offset`). Bounded by `max_bytes`: when full, the oldest
//! segment is dropped and its frames are counted as `spool_full` drops. A frame whose CRC does
//! not match (torn write after a crash) ends its segment and is counted as `corrupt`.
//!
//! Lives on: I/O cores (writer: the I/O loop; reader: the sink's thread).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Largest frame accepted (a second of output is a few MiB at most).
pub const MAX_FRAME: usize = 256 << 20;
const HEADER: usize = 8;

/// Spool errors.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// File-system error.
    #[error("spool {dir}: {source}")]
    Io {
        /// Spool directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A frame larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes is larger than the spool's limit")]
    TooLarge(usize),
}

/// Counters of one spool (shared with the metrics page).
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// Frames appended.
    pub frames_in: AtomicU64,
    /// Frames committed (delivered).
    pub frames_out: AtomicU64,
    /// Bytes currently on disk.
    pub bytes: AtomicU64,
    /// Frames waiting (appended, not committed).
    pub pending: AtomicU64,
    /// Frames dropped because the spool was full.
    pub dropped_full: AtomicU64,
    /// Frames lost to corruption (torn writes).
    pub corrupt: AtomicU64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    len: u64,
    frames: u64,
}

#[derive(Debug)]
struct State {
    segments: VecDeque<Segment>,
    writer: Option<File>,
    read_seg: u64,
    read_off: u64,
    closed: bool,
}

/// Shared between writer and reader.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    cond: Condvar,
    stats: Arc<SpoolStats>,
}

/// The appending side.
#[derive(Debug, Clone)]
pub struct SpoolWriter(Arc<Shared>);

/// The delivering side.
#[derive(Debug)]
pub struct SpoolReader {
    shared: Arc<Shared>,
    file: Option<(u64, File)>,
    /// Position after the frame returned by the last `next`.
    next_pos: Option<(u64, u64)>,
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

impl Shared {
    /// Drops fully read segments that the writer has moved past.
    fn advance(&self, st: &mut State) {
        while st.segments.len() > 1 {
            let Some(front) = st.segments.front() else { break };
            if front.id == st.read_seg && st.read_off < front.len {
                break;
            }
            if let Some(old) = st.segments.pop_front() {
                let _ = std::fs::remove_file(seg_path(&self.dir, old.id));
                self.stats.bytes.fetch_sub(old.len, Ordering::Relaxed);
            }
            if let Some(n) = st.segments.front() {
                st.read_seg = n.id;
                st.read_off = 0;
            }
        }
    }

    fn io(&self, source: std::io::Error) -> SpoolError {
        SpoolError::Io { dir: self.dir.clone(), source }
    }
}

/// Opens (or creates) a spool in `dir`, holding at most `max_bytes` on disk.
pub fn open(dir: &Path, max_bytes: u64) -> Result<(SpoolWriter, SpoolReader, Arc<SpoolStats>), SpoolError> {
    let io = |source| SpoolError::Io { dir: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            u64::from_str_radix(n.strip_suffix(".seg")?, 16).ok()
        })
        .collect();
    ids.sort_unstable();
    let (mut read_seg, mut read_off) = std::fs::read_to_string(dir.join("cursor"))
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .unwrap_or((0, 0));
    let stats = Arc::new(SpoolStats::default());
    let mut segments = VecDeque::new();
    for id in ids {
        let path = seg_path(dir, id);
        if id < read_seg {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let (len, frames) = scan(&path, if id == read_seg { read_off } else { 0 }).map_err(io)?;
        segments.push_back(Segment { id, len, frames });
    }
    if segments.front().is_none_or(|s: &Segment| s.id != read_seg) {
        read_seg = segments.front().map_or(read_seg, |s| s.id);
        read_off = 0;
    }
    let total: u64 = segments.iter().map(|s| s.len).sum();
    let pending: u64 = segments.iter().map(|s| s.frames).sum();
    stats.bytes.store(total, Ordering::Relaxed);
    stats.pending.store(pending, Ordering::Relaxed);
    let shared = Arc::new(Shared {
        dir: dir.to_path_buf(),
        max_bytes: max_bytes.max(1 << 20),
        segment_bytes: (max_bytes / 8).clamp(1 << 20, 64 << 20),
        state: Mutex::new(State { segments, writer: None, read_seg, read_off, closed: false }),
        cond: Condvar::new(),
        stats: stats.clone(),
    });
    let reader = SpoolReader { shared: shared.clone(), file: None, next_pos: None };
    Ok((SpoolWriter(shared), reader, stats))
}

/// Length of the valid prefix of a segment and the number of frames after `from`.
fn scan(path: &Path, from: u64) -> std::io::Result<(u64, u64)> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    let mut pos = 0u64;
    let mut frames = 0;
    let mut hdr = [0u8; HEADER];
    let mut buf = Vec::new();
    while pos + HEADER as u64 <= size {
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut hdr)?;
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as u64;
        if len as usize > MAX_FRAME || pos + HEADER as u64 + len > size {
            break;
        }
        buf.resize(len as usize, 0);
        f.read_exact(&mut buf)?;
        if crc32fast::hash(&buf) != u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) {
            break;
        }
        if pos >= from {
            frames += 1;
        }
        pos += HEADER as u64 + len;
    }
    if pos < size {
        // torn tail from a crash: cut it so appends continue on a clean boundary
        OpenOptions::new().write(true).open(path)?.set_len(pos)?;
    }
    Ok((pos, frames))
}

impl SpoolWriter {
    /// Appends one frame. Never blocks on the reader; when the spool is full the oldest
    /// segment is dropped (counted in `dropped_full`).
    pub fn append(&self, payload: &[u8]) -> Result<(), SpoolError> {
        if payload.len() > MAX_FRAME {
            return Err(SpoolError::TooLarge(payload.len()));
        }
        let sh = &self.0;
        let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.segments.back().is_none_or(|s| s.len >= sh.segment_bytes) {
            let id = st.segments.back().map_or(st.read_seg.max(1), |s| s.id + 1);
            let f = OpenOptions::new().create(true).append(true).open(seg_path(&sh.dir, id)).map_err(|e| sh.io(e))?;
            st.segments.push_back(Segment { id, len: 0, frames: 0 });
            if st.segments.len() == 1 {
                st.read_seg = id;
                st.read_off = 0;
            }
            st.writer = Some(f);
        } else if st.writer.is_none() {
            let id = st.segments.back().map_or(1, |s| s.id);
            let f = OpenOptions::new().append(true).open(seg_path(&sh.dir, id)).map_err(|e| sh.io(e))?;
            st.writer = Some(f);
        }
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        if let Some(w) = st.writer.as_mut() {
            w.write_all(&frame).map_err(|e| sh.io(e))?;
        }
        if let Some(s) = st.segments.back_mut() {
            s.len += frame.len() as u64;
            s.frames += 1;
        }
        sh.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        sh.stats.pending.fetch_add(1, Ordering::Relaxed);
        sh.stats.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
        // Bound: drop whole oldest segments (never the one being written).
        while sh.stats.bytes.load(Ordering::Relaxed) > sh.max_bytes && st.segments.len() > 1 {
            let Some(old) = st.segments.pop_front() else { break };
            let _ = std::fs::remove_file(seg_path(&sh.dir, old.id));
            sh.stats.bytes.fetch_sub(old.len, Ordering::Relaxed);
            sh.stats.pending.fetch_sub(old.frames, Ordering::Relaxed);
            sh.stats.dropped_full.fetch_add(old.frames, Ordering::Relaxed);
            if old.id == st.read_seg {
                st.read_seg = st.segments.front().map_or(old.id + 1, |s| s.id);
                st.read_off = 0;
            }
        }
        drop(st);
        sh.cond.notify_all();
        Ok(())
    }

    /// Wakes the reader and tells it no more frames come (at shutdown).
    pub fn close(&self) {
        let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        st.closed = true;
        drop(st);
        self.0.cond.notify_all();
    }
}

/// What [`SpoolReader::next`] found.
#[derive(Debug)]
pub enum Next {
    /// A frame to deliver; call [`SpoolReader::commit`] once it is delivered.
    Frame(Vec<u8>),
    /// Nothing within the timeout.
    Idle,
    /// The writer closed and everything was read.
    Closed,
}

impl SpoolReader {
    /// The next undelivered frame (the same one again until `commit`).
    pub fn next(&mut self, timeout: Duration) -> Result<Next, SpoolError> {
        let sh = self.shared.clone();
        let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            sh.advance(&mut st);
            let avail = st.segments.front().filter(|s| s.id == st.read_seg).map_or(0, |s| s.len);
            if st.read_off + (HEADER as u64) <= avail {
                break;
            }
            if st.closed {
                return Ok(Next::Closed);
            }
            let (g, to) = sh.cond.wait_timeout(st, timeout).unwrap_or_else(|e| e.into_inner());
            st = g;
            if to.timed_out() {
                let avail = st.segments.front().filter(|s| s.id == st.read_seg).map_or(0, |s| s.len);
                if st.read_off + (HEADER as u64) > avail {
                    return Ok(Next::Idle);
                }
            }
        }
        let (seg, off) = (st.read_seg, st.read_off);
        let seg_len = st.segments.front().map_or(0, |s| s.len);
        drop(st);
        if self.file.as_ref().is_none_or(|(id, _)| *id != seg) {
            let f = File::open(seg_path(&sh.dir, seg)).map_err(|e| sh.io(e))?;
            self.file = Some((seg, f));
        }
        let Some((_, f)) = self.file.as_mut() else { return Ok(Next::Idle) };
        let mut hdr = [0u8; HEADER];
        let res = (|| -> std::io::Result<Option<Vec<u8>>> {
            f.seek(SeekFrom::Start(off))?;
            f.read_exact(&mut hdr)?;
            let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as u64;
            if len as usize > MAX_FRAME || off + HEADER as u64 + len > seg_len {
                return Ok(None);
            }
            let mut buf = vec![0u8; len as usize];
            f.read_exact(&mut buf)?;
            if crc32fast::hash(&buf) != u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) {
                return Ok(None);
            }
            Ok(Some(buf))
        })()
        .map_err(|e| sh.io(e))?;
        match res {
            Some(buf) => {
                self.next_pos = Some((seg, off + HEADER as u64 + buf.len() as u64));
                Ok(Next::Frame(buf))
            }
            None => {
                // Corrupt: skip the rest of this segment.
                let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(front) = st.segments.front_mut() {
                    if front.id == seg {
                        st.read_off = front.len;
                    }
                }
                sh.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                Ok(Next::Idle)
            }
        }
    }

    /// True once the writer has closed (shutdown began).
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().map_or(true, |s| s.closed)
    }

    /// Marks the frame returned by the last `next` as delivered and persists the position.
    pub fn commit(&mut self) -> Result<(), SpoolError> {
        let Some((seg, off)) = self.next_pos.take() else { return Ok(()) };
        let sh = self.shared.clone();
        let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.read_seg == seg {
            st.read_off = off;
            if let Some(front) = st.segments.front_mut() {
                if front.id == seg {
                    front.frames = front.frames.saturating_sub(1);
                }
            }
            sh.stats.frames_out.fetch_add(1, Ordering::Relaxed);
            sh.stats.pending.fetch_sub(1, Ordering::Relaxed);
            sh.advance(&mut st);
        }
        let (rs, ro) = (st.read_seg, st.read_off);
        drop(st);
        let tmp = sh.dir.join("cursor.tmp");
        std::fs::write(&tmp, format!("{rs} {ro}\n"))
            .and_then(|_| std::fs::rename(&tmp, sh.dir.join("cursor")))
            .map_err(|e| sh.io(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flowshard-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn drain(r: &mut SpoolReader) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Next::Frame(f) = r.next(Duration::from_millis(10)).unwrap() {
            out.push(f);
            r.commit().unwrap();
        }
        out
    }

    #[test]
    fn in_order_and_survives_reopen() {
        let d = tmp("order");
        {
            let (w, mut r, _) = open(&d, 8 << 20).unwrap();
            for i in 0..10u32 {
                w.append(&i.to_le_bytes()).unwrap();
            }
            // deliver 3, then "crash"
            for _ in 0..3 {
                let Next::Frame(_) = r.next(Duration::from_millis(10)).unwrap() else { panic!() };
                r.commit().unwrap();
            }
            // a fourth read but not committed
            let Next::Frame(_) = r.next(Duration::from_millis(10)).unwrap() else { panic!() };
        }
        let (w, mut r, st) = open(&d, 8 << 20).unwrap();
        assert_eq!(st.pending.load(Ordering::Relaxed), 7);
        w.append(&99u32.to_le_bytes()).unwrap();
        let got: Vec<u32> = drain(&mut r).iter().map(|f| u32::from_le_bytes([f[0], f[1], f[2], f[3]])).collect();
        assert_eq!(got, vec![3, 4, 5, 6, 7, 8, 9, 99]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bounded_drops_oldest_and_counts() {
        let d = tmp("bound");
        let (w, mut r, st) = open(&d, 1 << 20).unwrap();
        let big = vec![7u8; 100_000];
        for _ in 0..40 {
            w.append(&big).unwrap();
        }
        assert!(st.bytes.load(Ordering::Relaxed) <= 1 << 20, "{}", st.bytes.load(Ordering::Relaxed));
        let dropped = st.dropped_full.load(Ordering::Relaxed);
        assert!(dropped > 0);
        let got = drain(&mut r);
        assert_eq!(got.len() as u64 + dropped, 40);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn torn_tail_is_cut() {
        let d = tmp("torn");
        {
            let (w, _r, _) = open(&d, 8 << 20).unwrap();
            w.append(b"one").unwrap();
            w.append(b"two").unwrap();
        }
        let seg = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .unwrap()
            .path();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[50, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (w, mut r, _) = open(&d, 8 << 20).unwrap();
        w.append(b"three").unwrap();
        let got = drain(&mut r);
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
