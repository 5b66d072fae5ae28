//! JSON text primitives for the hand-written output shapes (rollups, alerts, bulk ids): a string
//! literal with escaping and a number with three decimals. Plain functions over `String`, so the
//! alert schema ([`crate::alert`]) and the sinks ([`crate::sink`]) share one writer without
//! depending on each other.
//!
//! May depend on: nothing. Lives on: I/O cores (and the tools).

use std::fmt::Write;

/// Appends a JSON string literal.
pub fn esc(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a number (3 decimals), or null when not finite.
pub fn num(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{}", (v * 1000.0).round() / 1000.0);
    } else {
        out.push_str("null");
    }
}
