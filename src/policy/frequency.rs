//! Frequency limits: how many attempts a policy allows a person in a window, as written in
//! the config and compiled, and the count of a check against the attempts the index holds.
use crate::calling::Location;
use crate::calling::places::{SubId, places};
use crate::index::Attempt;
use crate::model::{Channel, ChannelSet, Millis, OutcomeSet, Purpose, PurposeSet};
use serde::Deserialize;
use smallvec::SmallVec;

/// The most attempts a limit may allow in its window.
pub const MAX_ATTEMPTS: u32 = 64;

/// The most limits one policy may have (a check marks those that apply in one word).
pub const MAX_LIMITS: usize = 64;

/// The longest window a limit may have: 31 days, the calling hours' horizon too.
pub const MAX_WINDOW_HOURS: u32 = 31 * 24;

/// `[[policies.<p>.frequency_limits]]` as written in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrequencyLimitConfig {
    /// What the limit is, for answers and the audit trail.
    pub name: String,
    #[serde(default)]
    pub citation: String,
    /// The channels whose attempts count, and whose checks the limit applies to.
    pub channels: Vec<String>,
    /// Default: every purpose.
    #[serde(default)]
    pub purposes: Vec<String>,
    /// ISO 3166-2 codes (`US-FL`) where the person must be for the limit to apply; empty:
    /// everywhere.
    #[serde(default)]
    pub subdivisions: Vec<String>,
    pub window_hours: u32,
    pub max_attempts: u32,
    /// `person` (every identifier linked to the person) or `contact` (the identifier alone).
    #[serde(default = "person")]
    pub per: String,
    /// Count only attempts on the check's subject (an attempt without one counts for all).
    #[serde(default)]
    pub by_subject: bool,
    /// Count only attempts with these outcomes; default: every outcome.
    #[serde(default)]
    pub outcomes: Vec<String>,
}

fn person() -> String {
    "person".into()
}

fn state_limit(name: &str, citation: &str, sub: &str, channels: &[&str]) -> FrequencyLimitConfig {
    FrequencyLimitConfig {
        name: name.into(),
        citation: citation.into(),
        channels: channels.iter().map(|c| c.to_string()).collect(),
        purposes: vec!["MARKETING".into()],
        subdivisions: vec![sub.into()],
        window_hours: 24,
        max_attempts: 3,
        per: person(),
        by_subject: true,
        outcomes: Vec::new(),
    }
}

/// What the default policy ships: the state limits on telephone solicitations to a person
/// on the same subject, whatever number or campaign they come from.
pub fn state_limits() -> Vec<FrequencyLimitConfig> {
    vec![
        state_limit(
            "Florida: 3 solicitation calls in 24 hours on the same subject",
            "Fla. Stat. 501.616(6)(b)",
            "US-FL",
            &["VOICE"],
        ),
        state_limit(
            "Oklahoma: 3 solicitation calls in 24 hours on the same subject",
            "15 O.S. 775C.4(B)",
            "US-OK",
            &["VOICE"],
        ),
        state_limit(
            "Maryland: 3 solicitations (calls and texts) in 24 hours on the same subject",
            "Md. Code, Com. Law 14-4503 (Stop the Spam Calls Act of 2023)",
            "US-MD",
            &["VOICE", "SMS"],
        ),
    ]
}

/// A limit as checks read it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrequencyLimit {
    pub name: String,
    pub channels: ChannelSet,
    pub purposes: PurposeSet,
    pub subdivisions: Vec<SubId>,
    pub window_ms: Millis,
    pub max_attempts: u32,
    pub per_person: bool,
    pub by_subject: bool,
    pub outcomes: OutcomeSet,
}

/// A fault in one limit: the key under the limit (`window_hours`) and what is wrong.
pub struct LimitError {
    pub key: String,
    pub message: String,
}

impl FrequencyLimit {
    pub fn compile(c: &FrequencyLimitConfig) -> Result<FrequencyLimit, LimitError> {
        let err = |key: &str, message: String| LimitError {
            key: key.into(),
            message,
        };
        if c.name.trim().is_empty() {
            return Err(err("name", "must name the limit".into()));
        }
        if c.channels.is_empty() {
            return Err(err("channels", "must name at least one channel".into()));
        }
        let channels = ChannelSet::parse_names(&c.channels)
            .map_err(|(i, m)| err(&format!("channels.{i}"), m))?;
        let mut purposes = PurposeSet::parse_names(&c.purposes)
            .map_err(|(i, m)| err(&format!("purposes.{i}"), m))?;
        if purposes.is_empty() {
            purposes = PurposeSet::all();
        }
        let mut subdivisions = Vec::new();
        for (i, s) in c.subdivisions.iter().enumerate() {
            subdivisions.push(places().subdivision_id(s.trim()).ok_or_else(|| {
                err(
                    &format!("subdivisions.{i}"),
                    format!("`{s}` is not a subdivision the calling tables know (e.g. US-FL)"),
                )
            })?);
        }
        if c.window_hours == 0 || c.window_hours > MAX_WINDOW_HOURS {
            return Err(err(
                "window_hours",
                format!(
                    "{} is outside 1..={MAX_WINDOW_HOURS} (31 days)",
                    c.window_hours
                ),
            ));
        }
        if c.max_attempts == 0 || c.max_attempts > MAX_ATTEMPTS {
            return Err(err(
                "max_attempts",
                format!("{} is outside 1..={MAX_ATTEMPTS}", c.max_attempts),
            ));
        }
        let per_person = match c.per.trim().to_ascii_lowercase().as_str() {
            "person" => true,
            "contact" => false,
            other => {
                return Err(err(
                    "per",
                    format!("`{other}` is neither `person` nor `contact`"),
                ));
            }
        };
        let mut outcomes = OutcomeSet::parse_names(&c.outcomes)
            .map_err(|(i, m)| err(&format!("outcomes.{i}"), m))?;
        if outcomes.is_empty() {
            outcomes = OutcomeSet::all();
        }
        Ok(FrequencyLimit {
            name: c.name.trim().to_string(),
            channels,
            purposes,
            subdivisions,
            window_ms: Millis::from(c.window_hours) * 3_600_000,
            max_attempts: c.max_attempts,
            per_person,
            by_subject: c.by_subject,
            outcomes,
        })
    }

    /// Whether the limit governs a check of (place, channel, purpose).
    pub fn applies(&self, loc: &Location, channel: Channel, purpose: Purpose) -> bool {
        self.channels.contains(channel)
            && self.purposes.contains(purpose)
            && (self.subdivisions.is_empty()
                || loc.subdivisions().any(|s| self.subdivisions.contains(&s)))
    }

    /// Whether an attempt counts against the limit for a check on `subject` (a hash; 0 for
    /// none) at `at`. Attempts after `at` count too: a check about a past time cannot make
    /// a later attempt unhappen.
    fn counts(&self, a: &Attempt, subject: u32, at: Millis) -> bool {
        self.channels.contains(a.channel())
            && self.purposes.contains(a.purpose())
            && self.outcomes.contains(a.outcome())
            && a.at() > at - self.window_ms
            && (!self.by_subject || subject == 0 || a.subject() == 0 || a.subject() == subject)
    }
}

/// What the frequency limits said of a check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrequencyJudgement {
    pub over: bool,
    /// When every limit reached has a free place again (its oldest counted attempt left
    /// the window).
    pub lapses_at: Option<Millis>,
    /// The attempts behind the block: the newest counted ones of the limits reached.
    pub attempts: [u64; 4],
    pub n_attempts: usize,
}

impl FrequencyJudgement {
    pub fn attempt_seqs(&self) -> &[u64] {
        &self.attempts[..self.n_attempts]
    }
}

/// Attempts a check gathered, each with whether it is the checked identifier's own; inline
/// up to 16 (a person called more often within the longest window spills to the heap).
type Gathered = SmallVec<[(Attempt, bool); 16]>;

/// Counts the attempts `each` hands out against every limit that applies. `each` is called
/// once, only when some limit applies, with whether any of them counts the whole person;
/// it hands out each attempt with whether it is the checked identifier's own.
pub fn judge(
    limits: &[FrequencyLimit],
    loc: &Location,
    channel: Channel,
    purpose: Purpose,
    subject: u32,
    at: Millis,
    each: impl FnOnce(bool, &mut dyn FnMut(&Attempt, bool)),
) -> FrequencyJudgement {
    let mut j = FrequencyJudgement::default();
    // Which limits apply, found once (a policy has at most MAX_LIMITS).
    let mut applying = 0u64;
    let mut person_wide = false;
    for (i, l) in limits.iter().enumerate().take(MAX_LIMITS) {
        if l.applies(loc, channel, purpose) {
            applying |= 1 << i;
            person_wide |= l.per_person;
        }
    }
    if applying == 0 {
        return j;
    }
    let mut gathered = Gathered::new();
    each(person_wide, &mut |a: &Attempt, own: bool| {
        gathered.push((*a, own))
    });
    if gathered.is_empty() {
        return j;
    }
    let mut counted: SmallVec<[(Millis, u64); 16]> = SmallVec::new();
    for (_, limit) in limits
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < MAX_LIMITS && applying & (1 << i) != 0)
    {
        counted.clear();
        counted.extend(
            gathered
                .iter()
                .filter(|(a, own)| (*own || limit.per_person) && limit.counts(a, subject, at))
                .map(|(a, _)| (a.at(), a.seq())),
        );
        let max = limit.max_attempts as usize;
        if counted.len() < max {
            continue;
        }
        j.over = true;
        // Newest first: the max-th newest is the one whose leaving the window frees a place.
        counted.sort_unstable_by(|a, b| b.cmp(a));
        let lapse = counted[max - 1].0 + limit.window_ms;
        j.lapses_at = Some(j.lapses_at.map_or(lapse, |l: Millis| l.max(lapse)));
        for &(_, seq) in &counted[..max] {
            if j.n_attempts < j.attempts.len() && !j.attempt_seqs().contains(&seq) {
                j.attempts[j.n_attempts] = seq;
                j.n_attempts += 1;
            }
        }
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttemptEvent, AttemptOutcome, ContactKey};

    fn limit(max: u32, hours: u32, by_subject: bool) -> FrequencyLimit {
        FrequencyLimit::compile(&FrequencyLimitConfig {
            name: "t".into(),
            citation: String::new(),
            channels: vec!["VOICE".into()],
            purposes: vec![],
            subdivisions: vec![],
            window_hours: hours,
            max_attempts: max,
            per: "contact".into(),
            by_subject,
            outcomes: vec![],
        })
        .unwrap_or_else(|e| panic!("{}: {}", e.key, e.message))
    }

    fn attempt(seq: u64, at: Millis, subject: &str) -> Attempt {
        Attempt::of(
            seq,
            &AttemptEvent {
                contact: ContactKey::Phone(1),
                channel: Channel::Voice,
                purpose: Purpose::Marketing,
                subject: subject.into(),
                at,
                outcome: AttemptOutcome::NoAnswer,
                campaign_id: String::new(),
            },
        )
    }

    fn run(
        l: &FrequencyLimit,
        attempts: &[Attempt],
        subject: &str,
        at: Millis,
    ) -> FrequencyJudgement {
        judge(
            std::slice::from_ref(l),
            &Location::unknown(),
            Channel::Voice,
            Purpose::Marketing,
            crate::index::subject_hash(subject),
            at,
            |_, f| attempts.iter().for_each(|a| f(a, true)),
        )
    }

    const H: Millis = 3_600_000;

    #[test]
    fn the_limit_is_reached_at_max_and_lapses_with_the_oldest_counted() {
        let l = limit(3, 24, false);
        let a = [
            attempt(1, 0, ""),
            attempt(2, 2 * H, ""),
            attempt(3, 5 * H, ""),
        ];
        assert!(!run(&l, &a[..2], "", 6 * H).over);
        let j = run(&l, &a, "", 6 * H);
        assert!(j.over);
        assert_eq!(j.lapses_at, Some(24 * H));
        assert_eq!(j.attempt_seqs(), &[3, 2, 1]);
        // A day after the first it has left the window.
        assert!(!run(&l, &a, "", 24 * H).over);
        assert!(run(&l, &a, "", 24 * H - 1).over);
    }

    #[test]
    fn only_the_newest_max_decide_when_more_are_counted() {
        let l = limit(2, 24, false);
        let a = [attempt(1, 0, ""), attempt(2, H, ""), attempt(3, 2 * H, "")];
        let j = run(&l, &a, "", 3 * H);
        assert_eq!(
            j.lapses_at,
            Some(25 * H),
            "the second newest leaves at 1 h + 24 h"
        );
        assert_eq!(j.attempt_seqs(), &[3, 2]);
    }

    #[test]
    fn subjects_separate_counts_but_a_missing_subject_counts_everywhere() {
        let l = limit(2, 24, true);
        let a = [attempt(1, 0, "loan 1"), attempt(2, H, "loan 2")];
        assert!(!run(&l, &a, "loan 1", 2 * H).over);
        assert!(
            run(&l, &a, "", 2 * H).over,
            "no subject: every attempt counts"
        );
        let b = [attempt(1, 0, "loan 1"), attempt(2, H, "")];
        assert!(run(&l, &b, "loan 1", 2 * H).over);
    }

    #[test]
    fn bad_limits_name_their_key() {
        let mut c = FrequencyLimitConfig {
            name: "x".into(),
            citation: String::new(),
            channels: vec!["VOICE".into(), "FAX".into()],
            purposes: vec![],
            subdivisions: vec![],
            window_hours: 24,
            max_attempts: 3,
            per: "person".into(),
            by_subject: false,
            outcomes: vec![],
        };
        let key = |c: &FrequencyLimitConfig| FrequencyLimit::compile(c).err().map(|e| e.key);
        assert_eq!(key(&c).as_deref(), Some("channels.1"));
        c.channels = vec!["VOICE".into()];
        c.window_hours = 0;
        assert_eq!(key(&c).as_deref(), Some("window_hours"));
        c.window_hours = 24;
        c.per = "household".into();
        assert_eq!(key(&c).as_deref(), Some("per"));
        c.per = "contact".into();
        c.subdivisions = vec!["US-ZZ".into()];
        assert_eq!(key(&c).as_deref(), Some("subdivisions.0"));
        c.subdivisions = vec!["US-FL".into()];
        c.outcomes = vec!["HUNG_UP".into()];
        assert_eq!(key(&c).as_deref(), Some("outcomes.0"));
        c.outcomes = vec![];
        assert!(key(&c).is_none());
        for l in state_limits() {
            assert!(FrequencyLimit::compile(&l).is_ok(), "{}", l.name);
        }
    }
}
