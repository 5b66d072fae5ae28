//! Fuzz target: the ipfix decoder (version forced to 10).
#![no_main]
mod common;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::netflow(data, 10));
