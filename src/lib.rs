//! flowshard (crate doc placeholder, rewritten below)
pub mod aggregate;
pub mod config;
pub mod decode;
pub mod detect;
pub mod model;
pub mod pipeline;
pub mod replay;
