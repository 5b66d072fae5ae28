//! Logging: `tracing` with a compact one-line format on standard error (standard output carries
//! JSON lines), level from `FLOWSHARD_LOG` (e.g. `warn`, `flowshard=debug`; default `info`).
//! Per-datagram conditions are never logged per datagram: they are counters, and the sink
//! threads rate-limit their logs ([`crate::sink::delivery::LogLimit`]).
//!
//! May depend on: nothing. Lives on: the main thread (set up once).

/// Installs the global subscriber (a second call is a no-op).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWSHARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .compact()
        .try_init();
}
