//! Calling-hours rules as data: windows by weekday and holiday, what they apply to, and the
//! holiday calendars they name; read from data/calling_rules.toml (or the config's own copy)
//! and a policy's own windows, and validated with the file, line and key of any fault.
use super::calendar::{Calendar, CalendarConfig};
use super::places::{Country, SubId, places};
use crate::model::{Channel, ChannelSet, Purpose, PurposeSet};
use serde::Deserialize;
use std::sync::Arc;

/// The rules compiled into the binary.
pub const BUILT_IN: &str = include_str!("../../data/calling_rules.toml");
pub const BUILT_IN_ORIGIN: &str = "data/calling_rules.toml (built in)";

/// The rule sets a policy may name.
pub const RULE_SETS: [&str; 3] = ["federal", "states", "canada"];

/// A fault in a rules file or a policy's windows: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}, line {line}, key `{key}`: {message}")]
pub struct RulesError {
    pub origin: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// One window rule as written: in the rules file, or a policy's `calling_windows`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `federal`, `states` or `canada`; only in the rules file.
    #[serde(default)]
    pub set: Option<String>,
    pub name: String,
    #[serde(default)]
    pub citation: String,
    /// ISO 3166-1 country; with neither this nor `subdivision`, the rule applies anywhere.
    #[serde(default)]
    pub country: Option<String>,
    /// ISO 3166-2 subdivision (`US-FL`).
    #[serde(default)]
    pub subdivision: Option<String>,
    #[serde(default = "voice_sms")]
    pub channels: Vec<String>,
    #[serde(default = "marketing")]
    pub purposes: Vec<String>,
    /// First local day the rule applies (YYYY-MM-DD).
    #[serde(default)]
    pub effective_from: Option<String>,
    /// First local day it no longer applies.
    #[serde(default)]
    pub effective_until: Option<String>,
    #[serde(default)]
    pub hours: Option<String>,
    #[serde(default)]
    pub weekdays: Option<String>,
    #[serde(default)]
    pub saturday: Option<String>,
    #[serde(default)]
    pub sunday: Option<String>,
    #[serde(default)]
    pub holidays: Option<String>,
    #[serde(default)]
    pub calendar: Option<String>,
}

fn voice_sms() -> Vec<String> {
    vec!["VOICE".into(), "SMS".into()]
}

fn marketing() -> Vec<String> {
    vec!["MARKETING".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<RuleConfig>,
    #[serde(default)]
    calendars: Vec<CalendarConfig>,
}

/// Local minutes [start, end); start == end means no calls that day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: u16,
    pub end: u16,
}

impl Window {
    pub const NONE: Window = Window { start: 0, end: 0 };
    pub const ALL_DAY: Window = Window {
        start: 0,
        end: 1440,
    };

    pub fn is_open(&self) -> bool {
        self.start < self.end
    }

    pub fn contains(&self, minute: u16) -> bool {
        self.start <= minute && minute < self.end
    }

    fn parse(s: &str) -> Result<Window, String> {
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(Window::NONE);
        }
        let bad = || format!("`{s}` is not a window: expected \"HH:MM-HH:MM\" (or \"none\")");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| -> Result<u16, String> {
            let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if m > 59 || h > 24 || (h == 24 && m > 0) || t.trim().len() != 5 {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let w = Window {
            start: minute(a)?,
            end: minute(b)?,
        };
        if w.start >= w.end {
            return Err(format!(
                "`{s}`: the window starts at or after its end (a window cannot cross midnight)"
            ));
        }
        Ok(w)
    }
}

/// Where a rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Everywhere,
    Country(Country),
    Subdivision(SubId),
}

/// One compiled rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The rule set, or `policy` for a policy's own window.
    pub set: String,
    pub name: String,
    pub citation: String,
    pub scope: Scope,
    pub channels: ChannelSet,
    pub purposes: PurposeSet,
    /// Local days since 1970-01-01, [from, until).
    pub from_day: i32,
    pub until_day: i32,
    /// Monday first.
    pub week: [Window; 7],
    pub holidays: Option<(Arc<Calendar>, Window)>,
}

impl Rule {
    /// The window on local day `day` (days since 1970-01-01); None when the rule does not
    /// apply that day.
    pub fn window_on(&self, day: i32) -> Option<Window> {
        if day < self.from_day || day >= self.until_day {
            return None;
        }
        if let Some((cal, w)) = &self.holidays
            && cal.is_holiday(day)
        {
            return Some(*w);
        }
        Some(self.week[super::calendar::weekday(day)])
    }

    pub fn covers(&self, channel: Channel, purpose: Purpose) -> bool {
        self.channels.contains(channel) && self.purposes.contains(purpose)
    }
}

/// Every rule of the rules file, with the calendars they use.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleBook {
    pub rules: Vec<Rule>,
    pub origin: String,
}

/// 1-based line of byte offset `at` in `src`.
fn line_at(src: &str, at: usize) -> usize {
    src[..at.min(src.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// The line of a dotted key path in a TOML document (`rules.3.hours`): where a value that
/// passed parsing but failed validation was written. 1 when it cannot be found.
pub fn line_of(src: &str, path: &[&str]) -> usize {
    use toml::de::{DeTable, DeValue};
    let Ok(doc) = DeTable::parse(src) else {
        return 1;
    };
    let mut span = doc.span();
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    for part in path {
        let next = match (table, value) {
            (Some(t), _) => t
                .iter()
                .find(|(k, _)| k.get_ref() == part)
                .map(|(k, v)| (k.span(), v)),
            (None, Some(DeValue::Array(a))) => part
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .map(|v| (v.span(), v)),
            _ => None,
        };
        let Some((s, v)) = next else { break };
        span = s;
        value = Some(v.get_ref());
        table = match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    line_at(src, span.start)
}

pub(crate) fn parse_date(s: &str) -> Result<i32, String> {
    let d: jiff::civil::Date = s
        .parse()
        .map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD)"))?;
    Ok(super::calendar::days_from_civil(
        d.year() as i32,
        d.month() as u32,
        d.day() as u32,
    ))
}

/// Compiles one rule; `key` is its path (`rules.3`), `src`/`origin` name where it was written.
pub(crate) fn compile_rule(
    c: &RuleConfig,
    set: &str,
    calendars: &[Arc<Calendar>],
    src: &str,
    origin: &str,
    key: &[&str],
) -> Result<Rule, RulesError> {
    let err = |field: &str, message: String| {
        let mut path: Vec<&str> = key.to_vec();
        if !field.is_empty() {
            path.push(field);
        }
        RulesError {
            origin: origin.to_string(),
            line: line_of(src, &path),
            key: path.join("."),
            message,
        }
    };
    let scope = match (&c.country, &c.subdivision) {
        (Some(_), Some(_)) => {
            return Err(err(
                "subdivision",
                "give a country or a subdivision, not both".into(),
            ));
        }
        (Some(country), None) => {
            let b = country.trim().to_ascii_uppercase();
            let code: Country = b
                .as_bytes()
                .try_into()
                .ok()
                .filter(|c: &Country| c.iter().all(u8::is_ascii_uppercase))
                .ok_or_else(|| {
                    err(
                        "country",
                        format!("`{country}` is not an ISO 3166-1 alpha-2 code"),
                    )
                })?;
            Scope::Country(code)
        }
        (None, Some(sub)) => {
            Scope::Subdivision(places().subdivision_id(sub.trim()).ok_or_else(|| {
                err(
                    "subdivision",
                    format!(
                        "`{sub}` is not a subdivision of the location tables (US-FL, CA-ON, ...)"
                    ),
                )
            })?)
        }
        (None, None) => Scope::Everywhere,
    };
    let channels = ChannelSet::parse_names(&c.channels).map_err(|(_, m)| err("channels", m))?;
    let purposes = PurposeSet::parse_names(&c.purposes).map_err(|(_, m)| err("purposes", m))?;
    let window = |field: &str, v: &Option<String>| -> Result<Option<Window>, RulesError> {
        v.as_deref()
            .map(Window::parse)
            .transpose()
            .map_err(|m| err(field, m))
    };
    let every = window("hours", &c.hours)?;
    let weekdays = window("weekdays", &c.weekdays)?.or(every);
    let saturday = window("saturday", &c.saturday)?.or(every);
    let sunday = window("sunday", &c.sunday)?.or(every);
    let (Some(wd), Some(sa), Some(su)) = (weekdays, saturday, sunday) else {
        return Err(err(
            "hours",
            "every day needs a window: give `hours`, or `weekdays`, `saturday` and `sunday`".into(),
        ));
    };
    let holidays = match (&c.holidays, &c.calendar) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(err(
                "calendar",
                "`holidays` needs the `calendar` that says which days they are".into(),
            ));
        }
        (h, Some(name)) => {
            let cal = calendars
                .iter()
                .find(|x| x.name == *name)
                .ok_or_else(|| {
                    let known: Vec<&str> = calendars.iter().map(|x| x.name.as_str()).collect();
                    err(
                        "calendar",
                        format!("unknown calendar `{name}`, defined: {}", known.join(", ")),
                    )
                })?
                .clone();
            let w = window("holidays", h)?.unwrap_or(Window::NONE);
            Some((cal, w))
        }
    };
    let from_day = c
        .effective_from
        .as_deref()
        .map(parse_date)
        .transpose()
        .map_err(|m| err("effective_from", m))?
        .unwrap_or(i32::MIN);
    let until_day = c
        .effective_until
        .as_deref()
        .map(parse_date)
        .transpose()
        .map_err(|m| err("effective_until", m))?
        .unwrap_or(i32::MAX);
    if from_day >= until_day {
        return Err(err(
            "effective_until",
            "the rule ends on or before the day it starts".into(),
        ));
    }
    Ok(Rule {
        set: set.to_string(),
        name: c.name.clone(),
        citation: c.citation.clone(),
        scope,
        channels,
        purposes,
        from_day,
        until_day,
        week: [wd, wd, wd, wd, wd, sa, su],
        holidays,
    })
}

/// Two rules of one set for the same place, channel, purpose and days: a copy-paste that
/// would leave which one was meant to a guess.
fn overlaps(a: &Rule, b: &Rule) -> bool {
    a.set == b.set
        && a.scope == b.scope
        && a.channels.0 & b.channels.0 != 0
        && a.purposes.0 & b.purposes.0 != 0
        && a.from_day < b.until_day
        && b.from_day < a.until_day
}

/// Refuses the second of two overlapping rules, naming where it was written.
pub(crate) fn refuse_overlaps(
    rules: &[Rule],
    src: &str,
    origin: &str,
    key_of: impl Fn(usize) -> Vec<String>,
) -> Result<(), RulesError> {
    for (i, b) in rules.iter().enumerate() {
        if let Some(a) = rules[..i].iter().find(|a| overlaps(a, b)) {
            let key = key_of(i);
            let path: Vec<&str> = key.iter().map(String::as_str).collect();
            return Err(RulesError {
                origin: origin.to_string(),
                line: line_of(src, &path),
                key: key.join("."),
                message: format!(
                    "`{}` overlaps `{}`: the same set, place, channels, purposes and days",
                    b.name, a.name
                ),
            });
        }
    }
    Ok(())
}

impl RuleBook {
    pub fn built_in() -> RuleBook {
        RuleBook::parse(BUILT_IN, BUILT_IN_ORIGIN).expect("the built-in calling rules are valid")
    }

    pub fn parse(src: &str, origin: &str) -> Result<RuleBook, RulesError> {
        let file: RulesFile = toml::from_str(src).map_err(|e| RulesError {
            origin: origin.to_string(),
            line: e.span().map_or(1, |s| line_at(src, s.start)),
            key: String::new(),
            message: e.message().to_string(),
        })?;
        let mut calendars: Vec<Arc<Calendar>> = Vec::new();
        for (i, c) in file.calendars.iter().enumerate() {
            let key = ["calendars".to_string(), i.to_string()];
            let cal = Calendar::compile(c).map_err(|(field, message)| {
                let mut path: Vec<&str> = key.iter().map(String::as_str).collect();
                path.extend(field.iter().map(String::as_str));
                RulesError {
                    origin: origin.to_string(),
                    line: line_of(src, &path),
                    key: path.join("."),
                    message,
                }
            })?;
            if calendars.iter().any(|x| x.name == cal.name) {
                return Err(RulesError {
                    origin: origin.to_string(),
                    line: line_of(src, &["calendars", &i.to_string(), "name"]),
                    key: format!("calendars.{i}.name"),
                    message: format!("calendar `{}` is defined twice", cal.name),
                });
            }
            calendars.push(Arc::new(cal));
        }
        let mut rules = Vec::with_capacity(file.rules.len());
        for (i, c) in file.rules.iter().enumerate() {
            let idx = i.to_string();
            let key = ["rules", idx.as_str()];
            let set = match c.set.as_deref() {
                Some(s) if RULE_SETS.contains(&s) => s,
                Some(s) => {
                    return Err(RulesError {
                        origin: origin.to_string(),
                        line: line_of(src, &["rules", &idx, "set"]),
                        key: format!("rules.{i}.set"),
                        message: format!(
                            "unknown rule set `{s}`, expected one of {}",
                            RULE_SETS.join(", ")
                        ),
                    });
                }
                None => {
                    return Err(RulesError {
                        origin: origin.to_string(),
                        line: line_of(src, &key),
                        key: format!("rules.{i}.set"),
                        message: format!("missing; one of {}", RULE_SETS.join(", ")),
                    });
                }
            };
            rules.push(compile_rule(c, set, &calendars, src, origin, &key)?);
        }
        refuse_overlaps(&rules, src, origin, |i| {
            vec!["rules".into(), i.to_string(), "name".into()]
        })?;
        Ok(RuleBook {
            rules,
            origin: origin.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_rules_compile() {
        let b = RuleBook::built_in();
        assert!(b.rules.iter().any(|r| r.set == "federal"));
        let fl = b.rules.iter().find(|r| r.name.contains("Florida")).unwrap();
        assert_eq!(
            fl.week[0],
            Window {
                start: 480,
                end: 1200
            }
        );
    }

    #[test]
    fn faults_name_file_line_and_key() {
        let src = "[[rules]]\nset = \"federal\"\nname = \"x\"\ncountry = \"US\"\nhours = \"21:00-08:00\"\n";
        let e = RuleBook::parse(src, "r.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (5, "rules.0.hours"), "{e}");
        assert!(e.message.contains("starts at or after its end"), "{e}");

        let src = "[[rules]]\nset = \"provincial\"\nname = \"x\"\nhours = \"08:00-21:00\"\n";
        let e = RuleBook::parse(src, "r.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "rules.0.set"), "{e}");

        let one = "[[rules]]\nset = \"states\"\nname = \"a\"\nsubdivision = \"US-FL\"\nhours = \"08:00-20:00\"\n";
        let two = "[[rules]]\nset = \"states\"\nname = \"b\"\nsubdivision = \"US-FL\"\nhours = \"09:00-20:00\"\n";
        let e = RuleBook::parse(&format!("{one}{two}"), "r.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (8, "rules.1.name"), "{e}");
        assert!(e.message.contains("overlaps"), "{e}");

        let e = RuleBook::parse(
            "[[rules]]\nset = \"federal\"\nname = \"x\"\nhours = \"8-9\"\n",
            "r.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "rules.0.hours");
        assert!(Window::parse("24:00-25:00").is_err());
        assert_eq!(Window::parse("09:00-24:00").unwrap().end, 1440);
    }
}
