//! Consumer privacy requests: their types, statuses, results and statutory deadlines.
use super::{DAY_MS, Millis};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequestType {
    Access,
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Jurisdiction {
    Ccpa,
    Gdpr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequestStatus {
    Pending,
    InProgress,
    Completed,
    Partial,
    Error,
}

impl RequestStatus {
    /// The request was answered (fully or in part); nothing more is owed.
    pub const fn is_answered(self) -> bool {
        matches!(self, RequestStatus::Completed | RequestStatus::Partial)
    }
}

/// A record a DELETE kept, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retained {
    pub record_id: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestResult {
    /// ACCESS: where the bundle was written, its size and SHA-256 (hex).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bundle_path: String,
    #[serde(default)]
    pub bundle_size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bundle_sha256: String,
    /// DELETE: how many identifiers were erased, and what was kept.
    #[serde(default)]
    pub erased_identifiers: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retained: Vec<Retained>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// The dates a request must be acknowledged and answered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// CCPA: 10 business days to confirm receipt. GDPR sets no separate one: the response date.
    pub acknowledge_by: Millis,
    pub respond_by: Millis,
    /// The latest `respond_by` an extension with notice can reach.
    pub extended_respond_by: Millis,
}

impl Jurisdiction {
    /// CCPA (Cal. Code Regs. tit. 11, 7021): confirm within 10 business days, respond within 45
    /// calendar days, once extendable by 45 more with notice. GDPR (Art. 12(3)): one month,
    /// extendable by two further months. Business days skip weekends only, not holidays,
    /// which can only make the date earlier: the safe side.
    pub fn deadlines(self, received_at: Millis) -> Deadlines {
        match self {
            Jurisdiction::Ccpa => Deadlines {
                acknowledge_by: add_business_days(received_at, 10),
                respond_by: received_at + 45 * DAY_MS,
                extended_respond_by: received_at + 90 * DAY_MS,
            },
            Jurisdiction::Gdpr => {
                let respond_by = add_months(received_at, 1);
                Deadlines {
                    acknowledge_by: respond_by,
                    respond_by,
                    extended_respond_by: add_months(received_at, 3),
                }
            }
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)) as u32
}

/// The same day `months` later, clamped to the month's last day (31 Jan + 1 month = 28/29 Feb).
pub fn add_months(at: Millis, months: u32) -> Millis {
    let days = at.div_euclid(DAY_MS);
    let time = at.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + i64::from(m - 1) + i64::from(months);
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * DAY_MS + time
}

/// `n` business days (Monday to Friday) after `at`.
pub fn add_business_days(at: Millis, n: u32) -> Millis {
    let mut t = at;
    let mut left = n;
    while left > 0 {
        t += DAY_MS;
        // 1970-01-01 was a Thursday: day 0 -> weekday index 3 (Monday = 0).
        let weekday = (t.div_euclid(DAY_MS) + 3).rem_euclid(7);
        if weekday < 5 {
            left -= 1;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i64, m: u32, d: u32) -> Millis {
        days_from_civil(y, m, d) * DAY_MS
    }

    #[test]
    fn civil_round_trip() {
        for days in [-1_000_000, -1, 0, 1, 19_000, 20_454, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }

    #[test]
    fn months_clamp_to_the_last_day() {
        assert_eq!(add_months(date(2026, 1, 31), 1), date(2026, 2, 28));
        assert_eq!(add_months(date(2028, 1, 31), 1), date(2028, 2, 29));
        assert_eq!(
            add_months(date(2026, 11, 22) + 5_000, 3),
            date(2027, 2, 22) + 5_000
        );
        assert_eq!(add_months(date(2026, 12, 15), 1), date(2027, 1, 15));
    }

    #[test]
    fn business_days_skip_weekends() {
        // 2026-11-20 is a Friday.
        assert_eq!(add_business_days(date(2026, 11, 20), 1), date(2026, 11, 23));
        assert_eq!(add_business_days(date(2026, 11, 20), 10), date(2026, 12, 4));
        // From a Saturday, the first business day is Monday.
        assert_eq!(add_business_days(date(2026, 11, 21), 1), date(2026, 11, 23));
    }

    #[test]
    fn statutory_deadlines() {
        let r = date(2026, 11, 20);
        let c = Jurisdiction::Ccpa.deadlines(r);
        assert_eq!(c.acknowledge_by, date(2026, 12, 4));
        assert_eq!(c.respond_by, date(2027, 1, 4));
        assert_eq!(c.extended_respond_by, date(2027, 2, 18));
        let g = Jurisdiction::Gdpr.deadlines(r);
        assert_eq!(g.respond_by, date(2026, 12, 20));
        assert_eq!(g.extended_respond_by, date(2027, 2, 20));
    }
}
