//! IPFIX (RFC 7011): a 16-byte message header (with the message length), then sets —
//! 2 templates, 3 options templates, 256 and up data. Variable-length fields, enterprise-specific
//! fields (skipped by length) and template withdrawal are handled by
//! [`super::templates`]. Templates are scoped by (exporter, observation domain, template id).
//!
//! Lives on: shard cores.

use super::cursor::Cursor;
use super::netflow_v9::walk_sets;
use super::templates::Family;
use super::{Ctx, DecodeError, FlowSink};
use crate::model::{Ip, Protocol};

const P: Protocol = Protocol::Ipfix;
/// Header length.
pub const HEADER_LEN: usize = 16;

pub(crate) fn decode<S: FlowSink>(
    data: &[u8],
    exporter: Ip,
    now: u64,
    ctx: &mut Ctx<'_, S>,
) -> Result<(), DecodeError> {
    let mut c = Cursor::new(data);
    let t = DecodeError::truncated(P, "header");
    let _version = c.u16().map_err(&t)?;
    let len = c.u16().map_err(&t)? as usize;
    let _export_time = c.u32().map_err(&t)?;
    let _seq = c.u32().map_err(&t)?;
    let domain = c.u32().map_err(&t)?;
    if len < HEADER_LEN {
        return Err(DecodeError::BadLength { proto: P, what: "message", value: len });
    }
    if len > data.len() {
        return Err(DecodeError::Truncated { proto: Some(P), what: "message", needed: len, remaining: data.len() });
    }
    // Bytes past the message length are not part of the message.
    let mut body = c.sub(len - HEADER_LEN).map_err(DecodeError::truncated(P, "message"))?;
    walk_sets(&mut body, P, Family::Ipfix, exporter, domain, now, ctx)
}
