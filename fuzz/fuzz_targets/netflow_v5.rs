//! Fuzz target: the netflow_v5 decoder (version forced to 5).
#![no_main]
mod common;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::netflow(data, 5));
