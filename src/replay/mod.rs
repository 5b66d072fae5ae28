//! Replay of captures: reading pcap/pcapng ([`pcap`]) and feeding their UDP payloads through
//! the same decode → aggregate → exchange → detect path the shards run.
pub mod pcap;
