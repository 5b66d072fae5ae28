//! `flowshard send`: sends the UDP payloads of a capture to a collector.
//!
//! Lives on: the main thread.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// Send the UDP payloads of a capture to a collector (loopback tests, demos).
#[derive(clap::Args)]
pub struct Args {
    /// Capture file.
    pub file: PathBuf,
    /// Destination, e.g. 127.0.0.1:2055.
    #[arg(long)]
    pub to: String,
    /// Source address to send from (e.g. 127.0.0.2 to look like another exporter).
    #[arg(long, default_value = "0.0.0.0")]
    pub from: String,
    /// Datagrams per second (0 = as fast as possible).
    #[arg(long, default_value_t = 20000)]
    pub rate: u64,
    /// Send the capture this many times.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let Args { file, to, from, rate, repeat } = a;
    let data = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let sock = std::net::UdpSocket::bind((from.as_str(), 0)).with_context(|| format!("cannot bind {from}"))?;
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    for _ in 0..repeat {
        let mut rd = crate::tools::replay::pcap::PcapReader::new(&data)?;
        while let Some(p) = rd.next_udp()? {
            if rate > 0 {
                let due = std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(w) = due.checked_sub(start.elapsed()) {
                    #[allow(clippy::disallowed_methods)] // a plain sender thread
                    std::thread::sleep(w);
                }
            }
            sock.send_to(p.payload, to.as_str()).with_context(|| format!("cannot send to {to}"))?;
            sent += 1;
        }
    }
    eprintln!("sent {sent} datagrams in {:.3}s", start.elapsed().as_secs_f64());
    Ok(())
}
