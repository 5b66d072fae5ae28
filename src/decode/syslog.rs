//! Sans-I/O syslog parsing: RFC 5424 and RFC 3164 messages (what rsyslog, syslog-ng, network
//! devices and journald forwarders send), TCP stream framing (RFC 6587: octet counting and
//! newline/NUL delimiting), and message patterns (numbers, addresses, hex ids and quoted values
//! masked) so a log line's shape can be counted like a flow key.
//!
//! Nothing is allocated: a parsed [`Message`] borrows the input, a pattern is a 64-bit hash
//! computed while scanning ([`pattern_hash`]), and its text is rendered only when a caller asks
//! ([`pattern_text`], once per new pattern). Malformed input is a [`SyslogError`], never a panic.
//!
//! Issue 16 (host metrics and syslog in) starts here: the parser and framer are tested; the
//! listeners, rollups and detectors that use them are not built yet.
//!
//! May depend on: nothing outside `decode`. Lives on: shard cores (and tests, fuzzers).

/// Which syslog format a message was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`).
    Rfc5424,
    /// RFC 3164, the BSD format (`<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`).
    Rfc3164,
}

/// One parsed message (fields borrow the input; `-` and absent fields are empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Facility (0–23).
    pub facility: u8,
    /// Severity (0 emergency … 7 debug).
    pub severity: u8,
    /// Format.
    pub format: Format,
    /// Timestamp as written (RFC 3339 for 5424, `Mmm dd hh:mm:ss` for 3164).
    pub timestamp: &'a [u8],
    /// Host name.
    pub host: &'a [u8],
    /// Application (5424 APP-NAME, 3164 TAG).
    pub app: &'a [u8],
    /// Process id.
    pub procid: &'a [u8],
    /// Message id (5424 only).
    pub msgid: &'a [u8],
    /// Structured data as written (5424 only; empty for `-`).
    pub structured: &'a [u8],
    /// The free-form message (a leading UTF-8 BOM removed).
    pub msg: &'a [u8],
}

/// Why a message did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyslogError {
    /// No `<PRI>` at the start, or its value is not 0–191.
    #[error("no valid <PRI> (0-191) at the start")]
    BadPri,
    /// A 5424 header field is missing (the message ends early).
    #[error("RFC 5424 header ends early")]
    Truncated,
    /// 5424 structured data is malformed (unbalanced `[`, a bad parameter).
    #[error("RFC 5424 structured data is malformed")]
    BadStructuredData,
    /// A field is longer than the RFC allows.
    #[error("a header field is longer than the RFC allows")]
    FieldTooLong,
}

impl SyslogError {
    /// Every reason, in counter order.
    pub const ALL: [SyslogError; 4] =
        [SyslogError::BadPri, SyslogError::Truncated, SyslogError::BadStructuredData, SyslogError::FieldTooLong];
    /// Stable label (metrics).
    pub const fn label(self) -> &'static str {
        match self {
            SyslogError::BadPri => "bad_pri",
            SyslogError::Truncated => "truncated",
            SyslogError::BadStructuredData => "bad_structured_data",
            SyslogError::FieldTooLong => "field_too_long",
        }
    }
}

/// Severity names, by number.
pub const SEVERITIES: [&str; 8] = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];

/// Parses one message (a UDP datagram's payload, or one frame of a TCP stream). Trailing
/// newlines and NULs are ignored.
pub fn parse(input: &[u8]) -> Result<Message<'_>, SyslogError> {
    let mut end = input.len();
    while end > 0 && matches!(input[end - 1], b'\n' | b'\r' | 0) {
        end -= 1;
    }
    let b = &input[..end];
    let (pri, rest) = pri(b)?;
    let (facility, severity) = (pri / 8, pri % 8);
    if rest.len() >= 2 && rest[0] == b'1' && rest[1] == b' ' {
        return rfc5424(facility, severity, &rest[2..]);
    }
    Ok(rfc3164(facility, severity, rest))
}

fn pri(b: &[u8]) -> Result<(u8, &[u8]), SyslogError> {
    if b.first() != Some(&b'<') {
        return Err(SyslogError::BadPri);
    }
    let mut v: u32 = 0;
    for (i, &c) in b.iter().enumerate().skip(1).take(4) {
        match c {
            b'0'..=b'9' if i <= 3 => v = v * 10 + u32::from(c - b'0'),
            b'>' if i > 1 && v <= 191 => return Ok((v as u8, &b[i + 1..])),
            _ => return Err(SyslogError::BadPri),
        }
    }
    Err(SyslogError::BadPri)
}

/// The next space-delimited field (`-` is empty); the rest after the space.
fn field(b: &[u8], max: usize) -> Result<(&[u8], &[u8]), SyslogError> {
    if b.is_empty() {
        return Err(SyslogError::Truncated);
    }
    let n = b.iter().position(|&c| c == b' ').unwrap_or(b.len());
    if n > max {
        return Err(SyslogError::FieldTooLong);
    }
    let f = &b[..n];
    let rest = if n < b.len() { &b[n + 1..] } else { &b[n..] };
    Ok((if f == b"-" { &f[..0] } else { f }, rest))
}

fn rfc5424(facility: u8, severity: u8, b: &[u8]) -> Result<Message<'_>, SyslogError> {
    let (timestamp, b) = field(b, 64)?;
    let (host, b) = field(b, 255)?;
    let (app, b) = field(b, 48)?;
    let (procid, b) = field(b, 128)?;
    let (msgid, b) = field(b, 32)?;
    if b.is_empty() {
        return Err(SyslogError::Truncated);
    }
    let (structured, rest) = if b[0] == b'-' {
        (&b[..0], &b[1..])
    } else if b[0] == b'[' {
        let n = structured_len(b)?;
        (&b[..n], &b[n..])
    } else {
        return Err(SyslogError::BadStructuredData);
    };
    let mut msg = rest.strip_prefix(b" ").unwrap_or(rest);
    msg = msg.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(msg);
    Ok(Message { facility, severity, format: Format::Rfc5424, timestamp, host, app, procid, msgid, structured, msg })
}

/// Length of the structured-data elements at the start of `b` (`[id k="v"…][…]`), honouring the
/// `\"`, `\\` and `\]` escapes inside values.
fn structured_len(b: &[u8]) -> Result<usize, SyslogError> {
    let mut i = 0;
    while i < b.len() && b[i] == b'[' {
        i += 1;
        let mut in_value = false;
        loop {
            let Some(&c) = b.get(i) else { return Err(SyslogError::BadStructuredData) };
            match (c, in_value) {
                (b'\\', true) => i += 1,
                (b'"', _) => in_value = !in_value,
                (b']', false) => break,
                _ => {}
            }
            i += 1;
        }
        i += 1;
    }
    Ok(i)
}

const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// RFC 3164 is loosely followed in the wild: a missing timestamp or host is tolerated (the
/// fields are then empty), never an error.
fn rfc3164(facility: u8, severity: u8, b: &[u8]) -> Message<'_> {
    let mut rest = b;
    let mut timestamp: &[u8] = &b[..0];
    // "Mmm dd hh:mm:ss " (the day space-padded)
    if rest.len() >= 16 && MONTHS.iter().any(|m| &rest[..3] == *m) && rest[3] == b' ' && rest[15] == b' ' {
        timestamp = &rest[..15];
        rest = &rest[16..];
    }
    let mut host: &[u8] = &rest[..0];
    // a host is a token followed by a space, before a tag ending in ':' or '['
    if !timestamp.is_empty() {
        if let Some(n) = rest.iter().position(|&c| c == b' ') {
            let tok = &rest[..n];
            if !tok.is_empty() && !tok.ends_with(b":") && !tok.contains(&b'[') {
                host = tok;
                rest = &rest[n + 1..];
            }
        }
    }
    // TAG[PID]: or TAG: (at most 48 characters of tag)
    let mut app: &[u8] = &rest[..0];
    let mut procid: &[u8] = &rest[..0];
    let stop = rest.iter().take(64).position(|&c| matches!(c, b':' | b'[' | b' '));
    if let Some(n) = stop {
        let tag = &rest[..n];
        match rest[n] {
            b'[' => {
                if let Some(close) = rest[n..].iter().position(|&c| c == b']') {
                    let after = n + close + 1;
                    if rest.get(after) == Some(&b':') && tag.len() <= 48 {
                        app = tag;
                        procid = &rest[n + 1..n + close];
                        rest = &rest[after + 1..];
                    }
                }
            }
            b':' if tag.len() <= 48 => {
                app = tag;
                rest = &rest[n + 1..];
            }
            _ => {}
        }
    }
    let msg = rest.strip_prefix(b" ").unwrap_or(rest);
    Message {
        facility,
        severity,
        format: Format::Rfc3164,
        timestamp,
        host,
        app,
        procid,
        msgid: &b[..0],
        structured: &b[..0],
        msg,
    }
}

/// Splits a TCP stream into messages (RFC 6587): a frame starting with a digit is octet-counted
/// (`LEN SP MSG`), anything else ends at LF (or NUL). Bytes are pushed as they arrive; frames
/// longer than the limit are skipped whole and counted.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max: usize,
    /// Frames dropped for being longer than the limit.
    pub oversize: u64,
    /// Octet counts that were not numbers (the stream is then resynchronised at the next LF).
    pub bad_length: u64,
    skip: usize,
    skip_to_newline: bool,
    octets: bool,
    reported: u64,
}

impl Framer {
    /// A framer for frames of at most `max` bytes (its buffer is allocated once, per connection).
    pub fn new(max: usize) -> Framer {
        Framer {
            buf: Vec::with_capacity(max.min(1 << 16)),
            max,
            oversize: 0,
            bad_length: 0,
            skip: 0,
            skip_to_newline: false,
            octets: true,
            reported: 0,
        }
    }

    /// A framer that splits at newlines only (line protocol: a line may start with a digit).
    pub fn lines(max: usize) -> Framer {
        Framer { octets: false, ..Framer::new(max) }
    }

    /// Frames dropped (oversize or bad length) since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        let all = self.oversize + self.bad_length;
        let d = all - self.reported;
        self.reported = all;
        d
    }

    /// The end of the stream: a last frame without its delimiter is complete.
    pub fn finish(&mut self, out: &mut dyn FnMut(&[u8])) {
        let b = std::mem::take(&mut self.buf);
        let used = self.drain_from(&b, out);
        let rest = &b[used..];
        let partial =
            self.skip > 0 || self.skip_to_newline || (self.octets && rest.first().is_some_and(u8::is_ascii_digit));
        if !rest.is_empty() && !partial {
            out(rest);
        }
    }

    /// Feeds `data`, calling `out` with each complete frame.
    pub fn push(&mut self, mut data: &[u8], out: &mut dyn FnMut(&[u8])) {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
            }
            if self.skip_to_newline {
                match data.iter().position(|&c| c == b'\n' || c == 0) {
                    Some(p) => {
                        self.skip_to_newline = false;
                        data = &data[p + 1..];
                    }
                    None => return,
                }
            }
            if data.is_empty() {
                return;
            }
            let take = (self.max + 16).saturating_sub(self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            let used = self.drain(out);
            self.buf.drain(..used);
            if data.is_empty() && self.buf.len() < self.max + 16 {
                return;
            }
            if used == 0 && self.buf.len() >= self.max + 16 {
                // a frame that never ends within the limit
                self.oversize += 1;
                self.buf.clear();
                self.skip_to_newline = true;
            }
        }
    }

    /// Emits every complete frame at the start of the buffer; returns the bytes consumed.
    fn drain(&mut self, out: &mut dyn FnMut(&[u8])) -> usize {
        let buf = std::mem::take(&mut self.buf);
        let used = self.drain_from(&buf, out);
        self.buf = buf;
        used
    }

    fn drain_from(&mut self, buf: &[u8], out: &mut dyn FnMut(&[u8])) -> usize {
        let mut at = 0;
        loop {
            let b = &buf[at..];
            // skip stray delimiters between frames
            let lead = b.iter().take_while(|&&c| matches!(c, b'\n' | b'\r' | 0)).count();
            if lead > 0 {
                at += lead;
                continue;
            }
            if b.is_empty() {
                return at;
            }
            if self.octets && b[0].is_ascii_digit() {
                let len = match b.iter().take(11).position(|&c| c == b' ') {
                    Some(sp) => {
                        std::str::from_utf8(&b[..sp]).ok().and_then(|s| s.parse::<usize>().ok()).map(|l| (sp, l))
                    }
                    // still only digits: the length is not complete yet
                    None if b.len() < 11 && b.iter().all(u8::is_ascii_digit) => return at,
                    None => None,
                };
                let Some((sp, len)) = len else {
                    // not a length: resynchronise at the next delimiter
                    self.bad_length += 1;
                    match b.iter().position(|&c| c == b'\n' || c == 0) {
                        Some(nl) => {
                            at += nl + 1;
                            continue;
                        }
                        None => {
                            self.skip_to_newline = true;
                            return buf.len();
                        }
                    }
                };
                if len > self.max {
                    self.oversize += 1;
                    let have = b.len() - sp - 1;
                    if have >= len {
                        at += sp + 1 + len;
                        continue;
                    }
                    self.skip = len - have;
                    return buf.len();
                }
                if b.len() < sp + 1 + len {
                    return at;
                }
                out(&b[sp + 1..sp + 1 + len]);
                at += sp + 1 + len;
            } else {
                let Some(nl) = b.iter().position(|&c| c == b'\n' || c == 0) else { return at };
                if nl > self.max {
                    self.oversize += 1;
                } else {
                    out(&b[..nl]);
                }
                at += nl + 1;
            }
        }
    }
}

/// The kind of a token of a message, for patterns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tok {
    Word,
    Masked,
}

/// Calls `f(pre, core, post)` for each whitespace-separated token of `msg`: `core` is the token
/// as written (`Some`), or `None` for a masked value — a number, an IPv4/IPv6 address, a hex id,
/// a UUID, a quoted string, `key=value` with such a value — with the brackets and punctuation
/// around it in `pre` and `post` (so `(uid=1000),` becomes `(<*>),`).
fn tokens(msg: &[u8], mut f: impl FnMut(&[u8], Option<&[u8]>, &[u8])) {
    let mut i = 0;
    while i < msg.len() {
        let c = msg[i];
        if c == b' ' || c == b'\t' {
            i += 1;
            continue;
        }
        if c == b'"' || c == b'\'' {
            i = msg[i + 1..].iter().position(|&d| d == c).map_or(msg.len(), |p| i + 1 + p + 1);
            f(b"", None, b"");
            continue;
        }
        let start = i;
        while i < msg.len() && !matches!(msg[i], b' ' | b'\t') {
            i += 1;
        }
        let t = &msg[start..i];
        let trail =
            t.iter().rev().take_while(|&&d| matches!(d, b',' | b';' | b':' | b')' | b']' | b'>' | b'.')).count();
        let lead = t.iter().take_while(|&&d| matches!(d, b'(' | b'[' | b'<')).count();
        if lead + trail >= t.len() {
            f(b"", Some(t), b"");
            continue;
        }
        let core = &t[lead..t.len() - trail];
        match classify(core) {
            Tok::Word => f(b"", Some(t), b""),
            Tok::Masked => f(&t[..lead], None, &t[t.len() - trail..]),
        }
    }
}

/// Whether a token is a value to mask.
fn classify(t: &[u8]) -> Tok {
    let digits = t.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return Tok::Word;
    }
    // numbers, versions, addresses (v4, v6, with ports or prefixes), UUIDs, hex ids, times,
    // durations ("12.5ms")
    let hexish = t.iter().all(|c| c.is_ascii_hexdigit() || matches!(c, b'-' | b':' | b'.' | b'/' | b'x'));
    if hexish || digits * 2 >= t.len() {
        return Tok::Masked;
    }
    // key=value with such a value
    match t.iter().position(|&c| c == b'=') {
        Some(eq) if classify(&t[eq + 1..]) == Tok::Masked => Tok::Masked,
        _ => Tok::Word,
    }
}

fn fnv(h: &mut u64, b: &[u8]) {
    for &c in b {
        *h = (*h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3);
    }
}

/// A 64-bit hash of a message's pattern (see [`tokens`]): equal for lines that differ only in
/// masked values.
pub fn pattern_hash(msg: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    tokens(msg, |pre, core, post| {
        fnv(&mut h, pre);
        fnv(&mut h, core.unwrap_or(b"\x1f"));
        fnv(&mut h, post);
        fnv(&mut h, b" ");
    });
    h
}

/// A message's pattern as text (`Failed password for <*> from <*> port <*> ssh2`), at most
/// `max` bytes — rendered once per new pattern, off the per-message path.
pub fn pattern_text(msg: &[u8], max: usize) -> String {
    let mut s = String::new();
    tokens(msg, |pre, core, post| {
        if s.len() >= max {
            return;
        }
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(&String::from_utf8_lossy(pre));
        match core {
            Some(w) => s.push_str(&String::from_utf8_lossy(w)),
            None => s.push_str("<*>"),
        }
        s.push_str(&String::from_utf8_lossy(post));
    });
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_with_structured_data_and_bom() {
        let m = parse(
            b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 \
              [exampleSDID@32473 iut=\"3\" eventSource=\"App\\]lication\"][x@1 a=\"b\"] \xEF\xBB\xBFAn application event\n",
        )
        .unwrap();
        assert_eq!((m.facility, m.severity, m.format), (20, 5, Format::Rfc5424));
        assert_eq!(m.host, b"mymachine.example.com");
        assert_eq!(m.app, b"evntslog");
        assert_eq!(m.procid, b"");
        assert_eq!(m.msgid, b"ID47");
        assert!(m.structured.ends_with(b"[x@1 a=\"b\"]"), "{:?}", String::from_utf8_lossy(m.structured));
        assert_eq!(m.msg, b"An application event");
        let m = parse(b"<34>1 2003-10-11T22:14:15Z host su 77 - - 'su root' failed").unwrap();
        assert_eq!((m.severity, m.procid, m.structured, m.msg), (2, &b"77"[..], &b""[..], &b"'su root' failed"[..]));
    }

    #[test]
    fn rfc3164_in_its_common_shapes() {
        let m = parse(b"<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick on /dev/pts/8").unwrap();
        assert_eq!((m.facility, m.severity, m.format), (4, 2, Format::Rfc3164));
        assert_eq!(
            (m.timestamp, m.host, m.app, m.procid),
            (&b"Oct 11 22:14:15"[..], &b"mymachine"[..], &b"su"[..], &b"230"[..])
        );
        assert_eq!(m.msg, b"'su root' failed for lonvick on /dev/pts/8");
        let m = parse(b"<13>Feb  5 17:32:18 10.0.0.99 sshd: Accepted publickey").unwrap();
        assert_eq!((m.host, m.app, m.msg), (&b"10.0.0.99"[..], &b"sshd"[..], &b"Accepted publickey"[..]));
        // no timestamp, no host: the tag and message are still found
        let m = parse(b"<30>kernel: eth0 link up").unwrap();
        assert_eq!((m.host, m.app, m.msg), (&b""[..], &b"kernel"[..], &b"eth0 link up"[..]));
        // nothing but a PRI and text
        let m = parse(b"<14>just some text").unwrap();
        assert_eq!((m.app, m.msg), (&b""[..], &b"just some text"[..]));
    }

    #[test]
    fn bad_input_is_an_error_and_never_a_panic() {
        for (b, e) in [
            (&b"no pri"[..], SyslogError::BadPri),
            (b"<192>1 x", SyslogError::BadPri),
            (b"<>x", SyslogError::BadPri),
            (b"<1234>x", SyslogError::BadPri),
            (b"<13>1 2003-10-11T22:14:15Z host", SyslogError::Truncated),
            (b"<13>1 2003-10-11T22:14:15Z host app 1 id [unterminated", SyslogError::BadStructuredData),
            (b"<13>1 2003-10-11T22:14:15Z host app 1 id x", SyslogError::BadStructuredData),
        ] {
            assert_eq!(parse(b), Err(e), "{}", String::from_utf8_lossy(b));
        }
        // every prefix and a byte flipped anywhere: no panic
        let good = b"<165>1 2003-10-11T22:14:15.003Z h app 1 ID [a b=\"c\\\"d\"] msg";
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
            for v in [0u8, b'[', b']', b'"', b'\\', b' ', 0xff] {
                let mut x = good.to_vec();
                x[n] = v;
                let _ = parse(&x);
                let _ = pattern_hash(&x);
            }
        }
    }

    #[test]
    fn patterns_mask_values_and_keep_words() {
        let a = b"Failed password for invalid user admin from 203.0.113.7 port 52144 ssh2";
        let b = b"Failed password for invalid user admin from 2001:db8::7 port 1022 ssh2";
        assert_eq!(pattern_hash(a), pattern_hash(b));
        assert_eq!(pattern_text(a, 200), "Failed password for invalid user admin from <*> port <*> ssh2");
        assert_ne!(pattern_hash(a), pattern_hash(b"Accepted password for admin from 203.0.113.7 port 1 ssh2"));
        assert_eq!(
            pattern_text(b"session 3f2a9c1e opened (uid=1000) after 12.5ms: \"GET /x\"", 200),
            "session <*> opened (<*>) after <*>: <*>"
        );
        assert_eq!(pattern_text(b"a b c", 3), "a b");
    }

    #[test]
    fn tcp_framing_octet_counted_and_newline_across_reads() {
        let stream = b"23 <13>1 - h a - - - hello\n<14>Oct 11 22:14:15 h t: line two\n9 <13>short\x0013 <13>oversize!";
        for chunk in [1usize, 2, 3, 7, 1000] {
            let mut f = Framer::new(10);
            let mut got = Vec::new();
            let mut f2 = Framer::new(1000);
            let mut got2 = Vec::new();
            for c in stream.chunks(chunk) {
                f.push(c, &mut |m| got.push(m.to_vec()));
                f2.push(c, &mut |m| got2.push(m.to_vec()));
            }
            assert_eq!(got2.len(), 4, "chunk {chunk}: {got2:?}");
            assert_eq!(got2[0], b"<13>1 - h a - - - hello".to_vec());
            assert_eq!(got2[1], b"<14>Oct 11 22:14:15 h t: line two".to_vec());
            assert_eq!(got2[2], b"<13>short".to_vec());
            assert_eq!(got2[3], b"<13>oversize!".to_vec());
            // with a 10-byte limit only "<13>short" fits; the others are counted, not emitted
            assert_eq!(got, vec![b"<13>short".to_vec()], "chunk {chunk}");
            assert_eq!(f.oversize, 3, "chunk {chunk}");
        }
        let mut f = Framer::new(100);
        let mut n = 0;
        f.push(b"12x34 junk\n<13>ok\n", &mut |_| n += 1);
        assert_eq!((f.bad_length, n), (1, 1));
        // garbage in any chunking: frames never exceed the limit, nothing panics
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let junk: Vec<u8> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                [b'1', b'9', b' ', b'\n', 0, b'<', b'a'][(x % 7) as usize]
            })
            .collect();
        for chunk in [1usize, 5, 64, 4096] {
            let mut f = Framer::new(64);
            for c in junk.chunks(chunk) {
                f.push(c, &mut |m| {
                    assert!(m.len() <= 64);
                    let _ = parse(m);
                });
            }
        }
    }
}
