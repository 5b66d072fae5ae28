//! The runtime: everything that knows about threads, cores, sockets and files. [`app`] wires a
//! running appliance together; [`shard`] is one shard executor's body (receive → decode →
//! aggregate → exchange → detect → hand-off); [`socket`] builds the `SO_REUSEPORT` sockets and
//! batched receive; [`exchange`] is the only cross-core code (bounded channels created at
//! start-up, plus the I/O message); [`io_loop`] is the I/O core's loop; [`state`] the state
//! directory's template snapshots.
//!
//! May depend on: `model`, `decode`, `enrich`, `aggregate`, `pipeline`, `detect`, `config`, `alert`, `sink`, `jobs`,
//! `http`, `ops`. Lives on: shard cores, the I/O core and the main
//! thread, as each module says.

pub mod app;
pub mod exchange;
pub mod io_loop;
pub mod shard;
pub mod socket;
pub mod spread;
pub mod state;

pub use app::{run, RunError, RunReport};
