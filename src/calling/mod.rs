//! Calling hours in the called person's time zone: where a number and postal code place a
//! person, the federal, state and Canadian rules as data, and a policy's compiled windows.
mod calendar;
mod hours;
pub mod places;
mod rules;

pub use hours::{CallingHours, Judgement, SAFE_ZONES, zones_of};
pub use places::{Location, Postal, parse_postal, places};
pub use rules::{RULE_SETS, RuleBook, RuleConfig, RulesError, Window, line_of};

use places::Zone;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// `[calling_hours]` in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallingHoursConfig {
    /// A rules file to use instead of the built-in data/calling_rules.toml.
    #[serde(default)]
    pub rules_file: Option<PathBuf>,
    /// The zones whose windows all apply when a number has no known zone.
    #[serde(default = "safe_zone_names")]
    pub unknown_zones: Vec<String>,
}

fn safe_zone_names() -> Vec<String> {
    SAFE_ZONES.iter().map(|z| z.to_string()).collect()
}

impl Default for CallingHoursConfig {
    fn default() -> Self {
        CallingHoursConfig {
            rules_file: None,
            unknown_zones: safe_zone_names(),
        }
    }
}

/// What every policy's calling hours are compiled from: the rule book and the safe zones.
#[derive(Debug, Clone)]
pub struct CallingContext {
    pub book: RuleBook,
    pub safe_zones: Arc<[Zone]>,
}

impl CallingContext {
    /// The built-in rules and safe zones.
    pub fn built_in() -> CallingContext {
        static C: std::sync::LazyLock<CallingContext> = std::sync::LazyLock::new(|| {
            CallingContext::load(&CallingHoursConfig::default())
                .expect("the built-in calling rules are valid")
        });
        C.clone()
    }

    /// The rules file named by the config (or the built-in one) and the safe zones.
    pub fn load(c: &CallingHoursConfig) -> Result<CallingContext, RulesError> {
        let book = match &c.rules_file {
            None => RuleBook::parse(rules::BUILT_IN, rules::BUILT_IN_ORIGIN)?,
            Some(path) => {
                let origin = path.display().to_string();
                let src = std::fs::read_to_string(path).map_err(|e| RulesError {
                    origin: origin.clone(),
                    line: 0,
                    key: String::new(),
                    message: format!("cannot read the calling rules: {e}"),
                })?;
                let book = RuleBook::parse(&src, &origin)?;
                if book.rules.is_empty() {
                    tracing::warn!(
                        file = %origin,
                        "the calling rules file holds no rules: calling hours are off"
                    );
                }
                book
            }
        };
        if c.unknown_zones.is_empty() {
            return Err(RulesError {
                origin: "config".into(),
                line: 0,
                key: "calling_hours.unknown_zones".into(),
                message: "needs at least one zone (the default is every US zone)".into(),
            });
        }
        let mut zones = Vec::with_capacity(c.unknown_zones.len());
        for name in &c.unknown_zones {
            let tz = places::resolve_zone(name).map_err(|message| RulesError {
                origin: "config".into(),
                line: 0,
                key: "calling_hours.unknown_zones".into(),
                message,
            })?;
            zones.push(Zone {
                name: name.as_str().into(),
                tz,
            });
        }
        Ok(CallingContext {
            book,
            safe_zones: zones.into(),
        })
    }

    /// A policy's calling hours: the rules of the sets it names, then its own windows.
    /// A fault names its key relative to the policy (`calling_hours`, `calling_windows.0.hours`).
    pub fn compile(
        &self,
        sets: &[String],
        own: &[RuleConfig],
        policy_src: &str,
        origin: &str,
        policy_path: &[&str],
    ) -> Result<CallingHours, RulesError> {
        let mut rules = Vec::new();
        for (i, s) in sets.iter().enumerate() {
            if !RULE_SETS.contains(&s.as_str()) {
                let mut path = policy_path.to_vec();
                path.push("calling_hours");
                return Err(RulesError {
                    origin: origin.to_string(),
                    line: line_of(policy_src, &path),
                    key: format!("{}.{i}", path.join(".")),
                    message: format!(
                        "unknown rule set `{s}`, expected one of {}",
                        RULE_SETS.join(", ")
                    ),
                });
            }
            if sets[..i].contains(s) {
                let mut path = policy_path.to_vec();
                path.push("calling_hours");
                return Err(RulesError {
                    origin: origin.to_string(),
                    line: line_of(policy_src, &path),
                    key: format!("{}.{i}", path.join(".")),
                    message: format!("rule set `{s}` is named twice"),
                });
            }
            rules.extend(self.book.rules.iter().filter(|r| r.set == *s).cloned());
        }
        let first_own = rules.len();
        for (i, c) in own.iter().enumerate() {
            let idx = i.to_string();
            let mut key = policy_path.to_vec();
            key.extend(["calling_windows", idx.as_str()]);
            if c.set.is_some() {
                key.push("set");
                return Err(RulesError {
                    origin: origin.to_string(),
                    line: line_of(policy_src, &key),
                    key: key.join("."),
                    message: "a policy's own window belongs to no rule set: leave `set` out".into(),
                });
            }
            rules.push(rules::compile_rule(
                c,
                "policy",
                &[],
                policy_src,
                origin,
                &key,
            )?);
        }
        let own_rules = &rules[first_own..];
        rules::refuse_overlaps(own_rules, policy_src, origin, |i| {
            let mut k: Vec<String> = policy_path.iter().map(|s| s.to_string()).collect();
            k.extend(["calling_windows".into(), i.to_string(), "name".into()]);
            k
        })?;
        Ok(CallingHours {
            id: hours::next_id(),
            sets: sets.to_vec(),
            rules,
            safe_zones: self.safe_zones.clone(),
        })
    }
}

/// Where a check placed its person, for the answer: the location, and the zones it was
/// judged in.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub location: Location,
    safe_zones: &'a [Zone],
    hours_id: u64,
}

impl<'a> Place<'a> {
    pub fn new(location: Location, hours: &'a CallingHours) -> Place<'a> {
        Place {
            location,
            safe_zones: &hours.safe_zones,
            hours_id: hours.id,
        }
    }

    /// Which calling hours placed the person (`CallingHours::id`, never reused): with the
    /// location, all the place fields depend on.
    pub fn hours_id(&self) -> u64 {
        self.hours_id
    }

    /// The IANA zones the person may be in (the safe zones when nothing placed them).
    pub fn zone_names(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        zones_of(&self.location, self.safe_zones)
            .0
            .map(|z| &*z.name)
    }

    /// ISO 3166-2: the postal code's, else the area code's.
    pub fn subdivision(&self) -> Option<&'static str> {
        let p = places();
        self.location
            .subdivision()
            .map(|s| &*p.subdivisions[s as usize])
    }

    pub fn subdivisions(&self) -> impl Iterator<Item = &'static str> + '_ {
        let p = places();
        self.location
            .subdivisions()
            .map(move |s| &*p.subdivisions[s as usize])
    }
}

/// An answer's place fields, as the transports write them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlaceFields {
    pub time_zones: Vec<String>,
    pub subdivision: String,
    pub subdivisions: Vec<String>,
}

impl PlaceFields {
    pub fn of(place: Option<Place<'_>>) -> PlaceFields {
        let Some(p) = place else {
            return PlaceFields::default();
        };
        PlaceFields {
            time_zones: p.zone_names().map(str::to_string).collect(),
            subdivision: p.subdivision().unwrap_or_default().to_string(),
            subdivisions: p.subdivisions().map(str::to_string).collect(),
        }
    }
}

#[cfg(test)]
mod tests;
