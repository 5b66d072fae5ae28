//! The state directory's files that the runtime owns: per-shard NetFlow v9/IPFIX template
//! snapshots, written atomically by the I/O loop and read back at start so that data after a
//! restart decodes before the exporters resend their templates. (The spool and the suppression
//! store keep their own files: [`crate::sink::spool`], [`crate::alert::Suppressions`].)
//!
//! May depend on: `decode`. Lives on: I/O cores (writing) and the main thread (reading at start).

use crate::decode::templates::Snapshot;
use std::path::{Path, PathBuf};

/// Path of a shard's template snapshot.
pub fn snapshot_path(state_dir: &Path, shard: u16) -> PathBuf {
    state_dir.join(format!("templates-shard{shard}.json"))
}

/// Writes a snapshot atomically (temporary file, then rename).
pub fn write_snapshot(state_dir: &Path, shard: u16, snap: &Snapshot) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let path = snapshot_path(state_dir, shard);
    let tmp = path.with_extension("json.tmp");
    let data = serde_json::to_vec(snap).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, &path)
}

/// Reads and merges every shard snapshot in the state directory (missing = empty). Corrupt
/// files are reported and skipped.
pub fn read_snapshots(state_dir: &Path) -> (Snapshot, Vec<String>) {
    let mut all = Snapshot::default();
    let mut problems = Vec::new();
    let Ok(rd) = std::fs::read_dir(state_dir) else {
        return (all, problems);
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !(name.starts_with("templates-shard") && name.ends_with(".json")) {
            continue;
        }
        match std::fs::read(e.path())
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Snapshot>(&b).map_err(|e| e.to_string()))
        {
            Ok(s) => {
                all.templates.extend(s.templates);
                all.sampling.extend(s.sampling);
            }
            Err(err) => problems.push(format!("{name}: {err}")),
        }
    }
    (all, problems)
}
