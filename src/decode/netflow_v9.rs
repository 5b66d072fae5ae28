//! NetFlow v9 (RFC 3954): a 20-byte header, then flowsets — 0 templates, 1 options templates,
//! 256 and up data. Templates are scoped by (exporter, source id, template id).
//!
//! Lives on: shard cores.

use super::cursor::Cursor;
use super::templates::{data_set, template_set, Family};
use super::{Ctx, DecodeError, FlowSink};
use crate::model::{Ip, Protocol};

const P: Protocol = Protocol::NetflowV9;
/// Header length.
pub const HEADER_LEN: usize = 20;

pub(crate) fn decode<S: FlowSink>(
    data: &[u8],
    exporter: Ip,
    now: u64,
    ctx: &mut Ctx<'_, S>,
) -> Result<(), DecodeError> {
    let mut c = Cursor::new(data);
    let t = DecodeError::truncated(P, "header");
    let _version = c.u16().map_err(&t)?;
    let _count = c.u16().map_err(&t)?;
    let _uptime = c.u32().map_err(&t)?;
    let _secs = c.u32().map_err(&t)?;
    let _seq = c.u32().map_err(&t)?;
    let source_id = c.u32().map_err(&t)?;
    walk_sets(&mut c, P, Family::V9, exporter, source_id, now, ctx)
}

/// Walks the sets of a v9 or IPFIX message body (the two differ only in set ids).
pub(crate) fn walk_sets<S: FlowSink>(
    c: &mut Cursor<'_>,
    proto: Protocol,
    family: Family,
    exporter: Ip,
    domain: u32,
    now: u64,
    ctx: &mut Ctx<'_, S>,
) -> Result<(), DecodeError> {
    let (tmpl_id, opt_id) = match family {
        Family::V9 => (0, 1),
        Family::Ipfix => (2, 3),
    };
    // A v9 exporter may pad the datagram; fewer than 4 bytes cannot be a set.
    while c.remaining() >= 4 {
        let id = c.u16().map_err(DecodeError::truncated(proto, "set header"))?;
        let len = c.u16().map_err(DecodeError::truncated(proto, "set header"))? as usize;
        if len < 4 {
            return Err(DecodeError::BadLength { proto, what: "set", value: len });
        }
        let body = c.sub(len - 4).map_err(DecodeError::truncated(proto, "set"))?;
        if id == tmpl_id {
            template_set(ctx, family, exporter, domain, false, body, now)?;
        } else if id == opt_id {
            template_set(ctx, family, exporter, domain, true, body, now)?;
        } else if id >= 256 {
            data_set(ctx, family, exporter, domain, id, body, now)?;
        }
        // ids 2..=255 (v9) / 4..=255 (IPFIX) are reserved: skipped.
    }
    Ok(())
}
