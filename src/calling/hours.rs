//! A policy's calling hours, compiled: which rules apply to a check's place, channel and
//! purpose, whether its time falls inside all of them in every zone the person may be in, and
//! when it next would.
use super::calendar::civil_from_days;
use super::places::{Location, US, Zone, places};
use super::rules::{Rule, Scope};
use crate::model::{Channel, DAY_MS, Millis, Purpose};
use std::sync::Arc;

/// How far ahead `next_allowed_at` is looked for; past it the answer is "not known".
const HORIZON_DAYS: i32 = 31;

/// The zones used when a number has none (toll-free, non-geographic, an email on a phone
/// channel): every US zone, Hawaii to Eastern, so that their intersection is safe anywhere.
pub const SAFE_ZONES: [&str; 7] = [
    "Pacific/Honolulu",
    "America/Anchorage",
    "America/Los_Angeles",
    "America/Phoenix",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
];

/// A policy's calling hours.
#[derive(Debug, Clone)]
pub struct CallingHours {
    /// Names these hours in the per-thread answer cache (a clone has the same rules).
    pub id: u64,
    /// The rule sets the policy named.
    pub sets: Vec<String>,
    pub rules: Vec<Rule>,
    pub safe_zones: Arc<[Zone]>,
}

impl PartialEq for CallingHours {
    fn eq(&self, o: &Self) -> bool {
        self.sets == o.sets
            && self.rules == o.rules
            && self.safe_zones.len() == o.safe_zones.len()
            && self
                .safe_zones
                .iter()
                .zip(o.safe_zones.iter())
                .all(|(a, b)| a.name == b.name)
    }
}

/// A new `CallingHours::id`.
pub fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The inputs an answer depends on. Every zone's offset is a whole number of minutes and
/// changes on a minute (from 1980 on), and rules are windows of local minutes on local days,
/// so whether a time is inside is the same for a whole UTC minute.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Asked {
    hours: u64,
    loc: Location,
    channel: Channel,
    purpose: Purpose,
    minute: i64,
}

const CACHED: usize = 1024;

/// From 1980 on every zone's offset is a whole number of minutes (Monrovia's -0:44:30 was the
/// last odd one, to 1972); earlier times are judged afresh every time.
const WHOLE_MINUTES_FROM: Millis = 315_532_800_000;

thread_local! {
    /// Recent answers by what was asked: checks of one batch or one minute share a handful of
    /// places.
    static ANSWERS: std::cell::RefCell<[Option<(Asked, Judgement)>; CACHED]> =
        const { std::cell::RefCell::new([None; CACHED]) };
}

/// The cache slot of `a` (a hasher's state machine over its five fields was a tenth of a
/// cached answer's cost).
fn slot(a: &Asked) -> usize {
    let rest = a.hours.rotate_left(41)
        ^ (a.minute as u64).rotate_left(11)
        ^ ((a.channel as u64) << 56)
        ^ ((a.purpose as u64) << 61);
    a.loc.mixed(rest) as usize % CACHED
}

/// What the calling hours said of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Judgement {
    /// Some rule applied to the check.
    pub applied: bool,
    pub outside: bool,
    /// When every applicable rule allows it again; None while inside, or when no time within
    /// the horizon is.
    pub next_allowed_at: Option<Millis>,
    /// The zones were the safe set: nothing placed the person.
    pub safe_zones: bool,
}

/// The zones a location is checked in: its own, else the safe set.
pub fn zones_of<'z>(loc: &Location, safe: &'z [Zone]) -> (ZoneIter<'z>, bool) {
    let p = places();
    let own = p.zone_set(loc.zone_set);
    let postal = loc.postal_zone.filter(|z| !own.contains(z));
    if own.is_empty() && postal.is_none() {
        return (ZoneIter::Safe(safe.iter()), true);
    }
    (ZoneIter::Known(own.iter(), postal), false)
}

/// The zones of a location, without collecting them.
pub enum ZoneIter<'z> {
    Known(std::slice::Iter<'static, u16>, Option<u16>),
    Safe(std::slice::Iter<'z, Zone>),
}

impl<'z> Iterator for ZoneIter<'z> {
    type Item = &'z Zone;
    fn next(&mut self) -> Option<&'z Zone> {
        match self {
            ZoneIter::Known(own, postal) => {
                let p = places();
                match own.next() {
                    Some(z) => Some(&p.zones[*z as usize]),
                    None => postal.take().map(|z| &p.zones[z as usize]),
                }
            }
            ZoneIter::Safe(s) => s.next(),
        }
    }
}

/// The local civil day and minute of `t` in `zone`; None outside jiff's range.
fn local(zone: &Zone, t: Millis) -> Option<(i32, u16)> {
    let ts = jiff::Timestamp::from_millisecond(t).ok()?;
    let off = zone.tz.to_offset(ts).seconds() as Millis * 1000;
    let l = t + off;
    Some((
        l.div_euclid(DAY_MS) as i32,
        (l.rem_euclid(DAY_MS) / 60_000) as u16,
    ))
}

/// The instant of local day `day`, minute `minute` in `zone` (a time skipped by a DST change
/// resolves forward, as jiff's "compatible" does).
fn instant(zone: &Zone, day: i32, minute: u16) -> Option<Millis> {
    let (y, m, d) = civil_from_days(day);
    let dt = jiff::civil::DateTime::new(
        i16::try_from(y).ok()?,
        m as i8,
        d as i8,
        (minute / 60) as i8,
        (minute % 60) as i8,
        0,
        0,
    )
    .ok()?;
    let ts = zone.tz.to_ambiguous_timestamp(dt).compatible().ok()?;
    Some(ts.as_millisecond())
}

impl CallingHours {
    fn applies(rule: &Rule, loc: &Location, channel: Channel, purpose: Purpose) -> bool {
        rule.covers(channel, purpose)
            && match rule.scope {
                Scope::Everywhere => true,
                // A place no table knows is taken for the US: the safe zones are US zones.
                Scope::Country(c) => {
                    loc.countries().any(|x| x == c) || (loc.countries().next().is_none() && c == US)
                }
                Scope::Subdivision(s) => loc.subdivisions().any(|x| x == s),
            }
    }

    /// Whether any rule applies to (place, channel, purpose) at all.
    pub fn any_applies(&self, loc: &Location, channel: Channel, purpose: Purpose) -> bool {
        self.rules
            .iter()
            .any(|r| Self::applies(r, loc, channel, purpose))
    }

    /// The first rule (and zone) that refuses `t`; None when all allow it. A time outside
    /// the zone database's range is refused by the first rule.
    fn refusing(
        &self,
        loc: &Location,
        channel: Channel,
        purpose: Purpose,
        t: Millis,
        mut each: impl FnMut(&Rule, &Zone, i32, u16),
    ) -> bool {
        let (zones, _) = zones_of(loc, &self.safe_zones);
        let mut refused = false;
        for z in zones {
            let local = local(z, t);
            for r in self
                .rules
                .iter()
                .filter(|r| Self::applies(r, loc, channel, purpose))
            {
                let Some((day, minute)) = local else {
                    each(r, z, i32::MIN, 0);
                    refused = true;
                    continue;
                };
                if let Some(w) = r.window_on(day)
                    && !w.contains(minute)
                {
                    each(r, z, day, minute);
                    refused = true;
                }
            }
        }
        refused
    }

    /// When rule `r`, refusing at local (`day`, `minute`) in `z`, next allows a call.
    fn next_open(r: &Rule, z: &Zone, day: i32, minute: u16) -> Option<Millis> {
        if day == i32::MIN {
            return None;
        }
        for k in 0..=HORIZON_DAYS {
            let d = day + k;
            match r.window_on(d) {
                // The rule has lapsed by that day: from its first minute.
                None if k > 0 => return instant(z, d, 0),
                None => {}
                Some(w) if w.is_open() && (k > 0 || minute < w.start) => {
                    return instant(z, d, w.start);
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Calling hours for a check: allocates nothing. Answers are remembered for the rest of
    /// their minute, per thread (an answer outside the hours with its `next_allowed_at` only
    /// when that is the same for the whole minute).
    pub fn judge(
        &self,
        loc: &Location,
        channel: Channel,
        purpose: Purpose,
        at: Millis,
    ) -> Judgement {
        let asked = Asked {
            hours: self.id,
            loc: *loc,
            channel,
            purpose,
            minute: at.div_euclid(60_000),
        };
        let i = slot(&asked);
        let hit = ANSWERS.with(|c| match c.borrow()[i] {
            Some((a, j)) if a == asked => Some(j),
            _ => None,
        });
        if let Some(j) = hit {
            return j;
        }
        let (j, whole_minute) = self.judge_afresh(loc, channel, purpose, at);
        if whole_minute && at >= WHOLE_MINUTES_FROM {
            ANSWERS.with(|c| c.borrow_mut()[i] = Some((asked, j)));
        }
        j
    }

    /// The judgement, and whether it holds for the whole UTC minute of `at`.
    pub(super) fn judge_afresh(
        &self,
        loc: &Location,
        channel: Channel,
        purpose: Purpose,
        at: Millis,
    ) -> (Judgement, bool) {
        if !self.any_applies(loc, channel, purpose) {
            return (Judgement::default(), true);
        }
        let safe_zones = zones_of(loc, &self.safe_zones).1;
        let mut j = Judgement {
            applied: true,
            safe_zones,
            ..Judgement::default()
        };
        if !self.refusing(loc, channel, purpose, at, |_, _, _, _| {}) {
            return (j, true);
        }
        j.outside = true;
        let (next, whole_minute) = self.next_allowed(loc, channel, purpose, at);
        j.next_allowed_at = next;
        (j, whole_minute)
    }

    /// The earliest time at or after `from` every applicable rule allows, within the horizon,
    /// and whether that answer is the same for every `from` of its UTC minute: it is unless a
    /// round found no opening after `t` and stepped a minute on from `t` itself (openings are
    /// whole local minutes, so every other round starts from one). Each refusing rule cannot
    /// allow before it next opens, so the latest of those openings is a lower bound; moving
    /// there and asking again converges in a few rounds.
    fn next_allowed(
        &self,
        loc: &Location,
        channel: Channel,
        purpose: Purpose,
        from: Millis,
    ) -> (Option<Millis>, bool) {
        let limit = from.saturating_add(Millis::from(HORIZON_DAYS) * DAY_MS);
        let mut t = from;
        let mut whole_minute = true;
        for _ in 0..64 {
            let mut bound: Option<Millis> = Some(t);
            let refused = self.refusing(loc, channel, purpose, t, |r, z, day, minute| {
                bound = match (bound, Self::next_open(r, z, day, minute)) {
                    (Some(b), Some(n)) => Some(b.max(n)),
                    _ => None,
                };
            });
            if !refused {
                return (Some(t), whole_minute);
            }
            let Some(next) = bound else {
                return (None, whole_minute);
            };
            // Never stand still (a DST change can map an opening back onto `t`).
            t = if next <= t {
                whole_minute = false;
                t + 60_000
            } else {
                next
            };
            if t > limit {
                return (None, whole_minute);
            }
        }
        (None, false)
    }
}
