//! Times as people and JSON clients write them: RFC 3339, plain dates, epoch milliseconds.
use super::privacy::days_from_civil;
use super::{DAY_MS, Millis};

/// RFC 3339 in UTC (`Z` or an offset), a plain date, or epoch milliseconds.
pub fn parse_time(s: &str) -> Result<Millis, String> {
    let bad = || format!("`{s}` is not a time: use 2026-11-22T10:00:00Z, 2026-11-22 or epoch ms");
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let (date, time) = s.split_once(['T', ' ']).unwrap_or((s, ""));
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 {
        return Err(bad());
    }
    let (y, m, day) = (
        d[0].parse::<i64>().map_err(|_| bad())?,
        d[1].parse::<u32>().map_err(|_| bad())?,
        d[2].parse::<u32>().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let mut ms = days_from_civil(y, m, day) * DAY_MS;
    if time.is_empty() {
        return Ok(ms);
    }
    let (clock, offset) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, o) = time.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (oh, om) = o[1..].split_once(':').ok_or_else(bad)?;
        let mins =
            oh.parse::<i64>().map_err(|_| bad())? * 60 + om.parse::<i64>().map_err(|_| bad())?;
        (c, sign * mins * 60_000)
    } else {
        return Err(bad());
    };
    let t: Vec<&str> = clock.split(':').collect();
    if t.len() < 2 || t.len() > 3 {
        return Err(bad());
    }
    let h = t[0].parse::<i64>().map_err(|_| bad())?;
    let mi = t[1].parse::<i64>().map_err(|_| bad())?;
    let sec: f64 = t.get(2).map_or(Ok(0.0), |x| x.parse()).map_err(|_| bad())?;
    ms += h * 3_600_000 + mi * 60_000 + (sec * 1000.0) as i64 - offset;
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1970-01-02"), Ok(86_400_000));
        assert_eq!(parse_time("1970-01-01T01:00:00Z"), Ok(3_600_000));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Ok(0));
        assert!(parse_time("yesterday").is_err());
    }
}
