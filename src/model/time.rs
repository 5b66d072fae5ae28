//! Time: UTC calendar arithmetic (Howard Hinnant's algorithms) for index names and timestamps,
//! and the one wall clock of the process ([`since_epoch`], [`now_ms`], [`now_s`]). The pure
//! layers never call the clock — time is passed in — so the runtime, the sinks, the jobs and the
//! tools are its only callers.
//!
//! May depend on: nothing. Lives on: every core.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock: time since the Unix epoch (zero if the clock is before 1970).
pub fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The wall clock, Unix milliseconds.
pub fn now_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// The wall clock, Unix seconds.
pub fn now_s() -> u64 {
    since_epoch().as_secs()
}

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day, hour, minute) of a Unix second, UTC.
pub fn utc(sec: u64) -> (i64, i64, i64, i64, i64) {
    let s = sec as i64;
    let (y, m, d) = civil_from_days(s.div_euclid(86_400));
    let r = s.rem_euclid(86_400);
    (y, m, d, r / 3600, r % 3600 / 60)
}

/// RFC 3339 UTC timestamp of a Unix second, e.g. `2026-11-25T01:31:39Z`.
pub fn rfc3339(sec: u64) -> String {
    let (y, m, d, h, mi) = utc(sec);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{:02}Z", sec % 60)
}

/// A time given on a command line: Unix seconds, or RFC 3339 UTC (`2026-11-25T01:31:39Z`,
/// also without the seconds or with a space instead of `T`).
pub fn parse_time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(v) = s.parse::<u64>() {
        return Ok(v);
    }
    let bad = || format!("{s:?} is not a time: use Unix seconds or e.g. 2026-11-25T01:31:39Z");
    let t = s.strip_suffix('Z').ok_or_else(bad)?;
    let (date, clock) = t.split_once(['T', ' ']).ok_or_else(bad)?;
    let num = |x: Option<&str>| x.and_then(|v| v.parse::<i64>().ok()).ok_or_else(bad);
    let mut d = date.split('-');
    let (y, m, dd) = (num(d.next())?, num(d.next())?, num(d.next())?);
    let mut c = clock.split(':');
    let (h, mi) = (num(c.next())?, num(c.next())?);
    let sec = match c.next() {
        Some(v) => num(Some(v))?,
        None => 0,
    };
    if d.next().is_some()
        || c.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&dd)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return Err(bad());
    }
    let v = days_from_civil(y, m, dd) * 86_400 + h * 3600 + mi * 60 + sec;
    u64::try_from(v).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_times() {
        assert_eq!(parse_time("1795570299"), Ok(1_795_570_299));
        assert_eq!(parse_time("2026-11-25T01:31:39Z"), Ok(1_795_570_299));
        assert_eq!(parse_time("2026-11-25 01:31Z"), Ok(1_795_570_260));
        for bad in ["yesterday", "2026-13-01T00:00Z", "2026-11-25T01:31:39", "-5"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trips() {
        for z in [-800_000i64, -1, 0, 1, 20_000, 20_782, 400_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(utc(1_795_570_260), (2026, 11, 25, 1, 31));
        assert_eq!(rfc3339(1_795_570_299), "2026-11-25T01:31:39Z");
    }
}
