//! flowshard (crate doc placeholder, rewritten below)
pub mod aggregate;
pub mod config;
pub mod decode;
pub mod detect;
pub mod exchange;
pub mod io;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod replay;
pub mod shard;
