//! Holiday calendars for calling rules (fixed dates, nth weekdays, days from Easter, and the
//! day a holiday on a weekend is observed), and the civil-day arithmetic the rules run on.
use serde::Deserialize;

/// A calendar as written in the rules file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    pub name: String,
    #[serde(default)]
    pub citation: String,
    /// The day a holiday that falls on a Saturday is observed: "friday", "monday" or "same".
    #[serde(default = "same")]
    pub saturday: String,
    /// The day a holiday that falls on a Sunday is observed: "monday", "friday" or "same".
    #[serde(default = "same")]
    pub sunday: String,
    pub holidays: Vec<HolidayConfig>,
}

fn same() -> String {
    "same".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HolidayConfig {
    pub name: String,
    /// "MM-DD".
    #[serde(default)]
    pub date: Option<String>,
    #[serde(default)]
    pub month: Option<u32>,
    /// MON..SUN.
    #[serde(default)]
    pub weekday: Option<String>,
    /// 1..=5, or -1 for the last.
    #[serde(default)]
    pub nth: Option<i32>,
    /// Days from Easter Sunday (Western).
    #[serde(default)]
    pub easter: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Fixed {
        month: u32,
        day: u32,
    },
    Nth {
        month: u32,
        weekday: usize,
        nth: i32,
    },
    Easter(i32),
}

/// First and last years a calendar is computed for; a day outside them counts as a holiday,
/// so that a rule with a no-calls holiday never allows what it cannot check.
const FIRST_YEAR: i32 = 1900;
const LAST_YEAR: i32 = 2500;

/// A compiled calendar: every holiday, and its observed day, as sorted civil days.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    pub name: String,
    pub citation: String,
    days: Vec<i32>,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy as i32;
    era * 146_097 + doe - 719_468
}

/// The date of a civil day.
pub fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i32::from(m <= 2);
    (y, m, d)
}

/// Monday 0 .. Sunday 6.
pub fn weekday(day: i32) -> usize {
    // 1970-01-01 was a Thursday.
    (day + 3).rem_euclid(7) as usize
}

fn days_in_month(y: i32, m: u32) -> u32 {
    let next = if m == 12 {
        days_from_civil(y + 1, 1, 1)
    } else {
        days_from_civil(y, m + 1, 1)
    };
    (next - days_from_civil(y, m, 1)) as u32
}

/// Easter Sunday (Western, Gregorian): the anonymous Gregorian algorithm.
fn easter(y: i32) -> i32 {
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    days_from_civil(y, month as u32, day as u32)
}

const WEEKDAYS: [&str; 7] = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];

impl When {
    fn on(self, y: i32) -> Option<i32> {
        match self {
            When::Fixed { month, day } => {
                (day <= days_in_month(y, month)).then(|| days_from_civil(y, month, day))
            }
            When::Nth {
                month,
                weekday: wd,
                nth,
            } => {
                if nth > 0 {
                    let first = days_from_civil(y, month, 1);
                    let offset = (wd + 7 - weekday(first)) % 7;
                    let d = first + offset as i32 + 7 * (nth - 1);
                    (civil_from_days(d).1 == month).then_some(d)
                } else {
                    let last = days_from_civil(y, month, days_in_month(y, month));
                    let back = (weekday(last) + 7 - wd) % 7;
                    Some(last - back as i32)
                }
            }
            When::Easter(n) => Some(easter(y) + n),
        }
    }
}

type Fault = (Vec<String>, String);

fn fault(path: &[&str], message: String) -> Fault {
    (path.iter().map(|s| s.to_string()).collect(), message)
}

fn shift_of(s: &str, field: &str) -> Result<i32, Fault> {
    match s.to_ascii_lowercase().as_str() {
        "same" => Ok(0),
        "friday" => Ok(if field == "saturday" { -1 } else { -2 }),
        "monday" => Ok(if field == "saturday" { 2 } else { 1 }),
        _ => Err(fault(
            &[field],
            format!("`{s}` is not an observance: expected \"friday\", \"monday\" or \"same\""),
        )),
    }
}

impl Calendar {
    /// Compiles a calendar; a fault names the field (relative to the calendar) and why.
    pub fn compile(c: &CalendarConfig) -> Result<Calendar, Fault> {
        let sat = shift_of(&c.saturday, "saturday")?;
        let sun = shift_of(&c.sunday, "sunday")?;
        let mut rules = Vec::with_capacity(c.holidays.len());
        for (i, h) in c.holidays.iter().enumerate() {
            let idx = i.to_string();
            let at = |field: &str, m: String| fault(&["holidays", &idx, field], m);
            let when = match (&h.date, h.month, &h.weekday, h.nth, h.easter) {
                (Some(d), None, None, None, None) => {
                    let bad = || at("date", format!("`{d}` is not a date: expected \"MM-DD\""));
                    let (m, dd) = d.split_once('-').ok_or_else(bad)?;
                    let (month, day): (u32, u32) = (
                        m.parse().map_err(|_| bad())?,
                        dd.parse().map_err(|_| bad())?,
                    );
                    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(2024, month) {
                        return Err(bad());
                    }
                    When::Fixed { month, day }
                }
                (None, Some(month), Some(wd), Some(nth), None) => {
                    if !(1..=12).contains(&month) {
                        return Err(at("month", format!("{month} is not a month")));
                    }
                    let weekday = WEEKDAYS
                        .iter()
                        .position(|w| w.eq_ignore_ascii_case(wd))
                        .ok_or_else(|| at("weekday", format!("`{wd}` is not MON..SUN")))?;
                    if !(nth == -1 || (1..=5).contains(&nth)) {
                        return Err(at(
                            "nth",
                            format!("{nth}: expected 1 to 5, or -1 for the last"),
                        ));
                    }
                    When::Nth {
                        month,
                        weekday,
                        nth,
                    }
                }
                (None, None, None, None, Some(n)) => When::Easter(n),
                _ => {
                    return Err(at(
                        "name",
                        format!(
                            "holiday `{}`: give `date`, or `month` with `weekday` and `nth`, or `easter`",
                            h.name
                        ),
                    ));
                }
            };
            rules.push(when);
        }
        let mut days = Vec::new();
        for y in FIRST_YEAR..=LAST_YEAR {
            for w in &rules {
                let Some(d) = w.on(y) else { continue };
                days.push(d);
                let shift = match weekday(d) {
                    5 => sat,
                    6 => sun,
                    _ => 0,
                };
                if shift != 0 {
                    days.push(d + shift);
                }
            }
        }
        days.sort_unstable();
        days.dedup();
        Ok(Calendar {
            name: c.name.clone(),
            citation: c.citation.clone(),
            days,
        })
    }

    /// Whether a civil day is a holiday (or the day one is observed).
    pub fn is_holiday(&self, day: i32) -> bool {
        let (y, _, _) = civil_from_days(day);
        if !(FIRST_YEAR..=LAST_YEAR).contains(&y) {
            return true;
        }
        self.days.binary_search(&day).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_round_trip() {
        for d in [-800_000, -1, 0, 1, 19_000, 20_454, 2_000_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(days_from_civil(2026, 12, 4), 20_791);
        assert_eq!(weekday(days_from_civil(2026, 12, 4)), 4, "a Friday");
        assert_eq!(civil_from_days(easter(2026)), (2026, 4, 5));
        assert_eq!(civil_from_days(easter(2027)), (2027, 3, 28));
    }

    #[test]
    fn weekend_holidays_are_observed_on_a_weekday() {
        let c = Calendar::compile(&CalendarConfig {
            name: "t".into(),
            citation: String::new(),
            saturday: "friday".into(),
            sunday: "monday".into(),
            holidays: vec![
                HolidayConfig {
                    name: "Independence Day".into(),
                    date: Some("07-04".into()),
                    month: None,
                    weekday: None,
                    nth: None,
                    easter: None,
                },
                HolidayConfig {
                    name: "Thanksgiving".into(),
                    date: None,
                    month: Some(11),
                    weekday: Some("THU".into()),
                    nth: Some(4),
                    easter: None,
                },
                HolidayConfig {
                    name: "Memorial Day".into(),
                    date: None,
                    month: Some(5),
                    weekday: Some("MON".into()),
                    nth: Some(-1),
                    easter: None,
                },
            ],
        })
        .unwrap();
        // 2027-07-04 is a Sunday: observed Monday the 5th; both are holidays.
        assert!(c.is_holiday(days_from_civil(2027, 7, 4)));
        assert!(c.is_holiday(days_from_civil(2027, 7, 5)));
        assert!(!c.is_holiday(days_from_civil(2027, 7, 6)));
        // 2026-07-04 is a Saturday: observed Friday the 3rd.
        assert!(c.is_holiday(days_from_civil(2026, 7, 3)));
        assert!(c.is_holiday(days_from_civil(2026, 11, 26)));
        assert!(!c.is_holiday(days_from_civil(2026, 11, 19)));
        assert!(c.is_holiday(days_from_civil(2026, 5, 25)));
    }
}
