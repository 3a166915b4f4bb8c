//! Times as people and JSON clients write them (RFC 3339, plain dates, epoch milliseconds),
//! parsed against a real calendar, and the range every stored or checked time must lie in.
use super::Millis;

/// 1970-01-01T00:00:00Z: nothing the service records or decides lies before the epoch.
pub const MIN_TIME: Millis = 0;
/// 9999-12-31T23:59:59.999Z: past this, RFC 3339 has no way to write the time, and the age
/// and expiry arithmetic of the rules could overflow.
pub const MAX_TIME: Millis = 253_402_300_799_999;

/// `ms` if it lies in MIN_TIME..=MAX_TIME, else why not (the caller names the field).
pub fn in_range(ms: Millis) -> Result<Millis, String> {
    if (MIN_TIME..=MAX_TIME).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!(
            "{ms} ms is outside 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z"
        ))
    }
}

/// RFC 3339 in UTC (`2026-12-02T13:00:00Z`), for answers; epoch milliseconds past jiff's
/// range are written as such.
pub fn format_time(ms: Millis) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.to_string(),
        Err(_) => ms.to_string(),
    }
}

/// RFC 3339 (`Z` or an offset), a plain date (midnight UTC), or epoch milliseconds; a date
/// that does not exist (`2026-02-30`) or an offset outside RFC 3339's ±23:59 is refused,
/// never moved, and so is a time outside MIN_TIME..=MAX_TIME.
pub fn parse_time(s: &str) -> Result<Millis, String> {
    use jiff::fmt::temporal::Pieces;
    let shown = super::ids::quote(s);
    let bad = |why: &dyn std::fmt::Display| {
        format!("`{shown}` is not a time ({why}): use 2026-11-22T10:00:00Z, 2026-11-22 or epoch ms")
    };
    if let Ok(ms) = s.parse::<i64>() {
        return in_range(ms);
    }
    // jiff checks the calendar (no 30 February, no hour 24) and RFC 3339's grammar; the
    // arithmetic is done here because jiff's timestamps stop short of 9999-12-31.
    let pieces = Pieces::parse(s).map_err(|e| bad(&e))?;
    if pieces.time_zone_annotation().is_some() {
        return Err(bad(&"a zone annotation is not taken; give the offset"));
    }
    let date = pieces.date();
    let days = super::privacy::days_from_civil(
        i64::from(date.year()),
        date.month() as u32,
        date.day() as u32,
    );
    let mut ms = days.saturating_mul(super::DAY_MS);
    match (pieces.time(), pieces.offset()) {
        (None, None) => {}
        (None, Some(_)) => return Err(bad(&"an offset needs a time of day")),
        (Some(_), None) => return Err(bad(&"a time of day needs `Z` or an offset")),
        (Some(t), Some(o)) => {
            let offset = o.to_numeric_offset().seconds();
            if offset.abs() > 23 * 3_600 + 59 * 60 {
                return Err(bad(&"the offset is not within -23:59 .. +23:59"));
            }
            let clock = i64::from(t.hour()) * 3_600_000
                + i64::from(t.minute()) * 60_000
                + i64::from(t.second()) * 1_000
                + i64::from(t.millisecond());
            ms = ms.saturating_add(clock - i64::from(offset) * 1_000);
        }
    }
    in_range(ms).map_err(|e| bad(&e))
}

#[cfg(test)]
mod tests {
    use super::{MAX_TIME, parse_time};

    #[test]
    fn times() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1970-01-02"), Ok(86_400_000));
        assert_eq!(parse_time("1970-01-01T01:00:00Z"), Ok(3_600_000));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(parse_time("1970-01-01 01:00:00.250Z"), Ok(3_600_250));
        assert_eq!(parse_time("9999-12-31T23:59:59.999Z"), Ok(MAX_TIME));
        assert_eq!(parse_time("9999-12-31"), Ok(MAX_TIME - 86_399_999));
        assert_eq!(
            parse_time("2026-11-22t10:00:00-05:00"),
            parse_time("2026-11-22T15:00:00Z")
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn impossible_dates_and_offsets_are_refused_not_moved() {
        for s in [
            "2026-02-30",
            "2026-02-29T10:00:00Z",
            "2026-13-01",
            "2026-04-31",
            "2026-11-22T24:30:00Z",
            "2026-11-22T10:60:00Z",
            "2026-11-22T10:00:00+25:00",
            "2026-11-22T10:00:00-24:00",
            "2026-11-22T10:00:00",
            "-1",
            "-9223372036854775808",
            "1969-12-31T23:59:59Z",
            "10000-01-01",
            "253402300800000",
        ] {
            let e = parse_time(s).expect_err(s);
            assert!(
                e.contains(s.trim_start_matches('-')) || e.contains("outside"),
                "{s}: {e}"
            );
        }
        // A real leap day and the largest offsets RFC 3339 allows.
        assert!(parse_time("2028-02-29").is_ok());
        assert!(parse_time("2026-11-22T10:00:00+23:59").is_ok());
        assert!(parse_time("2026-11-22T10:00:00-23:59").is_ok());
    }
}
