//! Pre-flight checks, one at a time and in batches.
use super::{Arg, Engine};
use crate::calling::{Location, Place, parse_postal, places};
use crate::error::Error;
use crate::error::Result;
use crate::index::subject_hash;
use crate::model::limits::{MAX_CONTACT, MAX_LABEL, key_problem, text_problem};
use crate::model::{Channel, ContactRef, Direction, Millis, Purpose, Reason};
use crate::policy::frequency::judge;
use crate::policy::{CheckInput, Decision, FrequencyJudgement, Policy, evaluate};
use crate::registry::{MAX_HITS, PREFETCH_WINDOW, RegistryHit};
use crate::telemetry::DecisionCounters;

#[derive(Debug, Clone, Default)]
pub struct CheckRequest<'a> {
    pub contact: &'a str,
    pub channel: Arg<Channel>,
    /// Unset means MARKETING.
    pub purpose: Arg<Purpose>,
    pub category: &'a str,
    /// Unset means OUTBOUND.
    pub direction: Arg<Direction>,
    /// Empty means the default policy.
    pub policy: &'a str,
    pub default_region: &'a str,
    /// Unset means now.
    pub at: super::When<'a>,
    /// The caller's own id for the check, echoed in the answer.
    pub correlation_id: &'a str,
    /// The person's postal code (US ZIP or Canadian); empty when unknown.
    pub postal_code: &'a str,
    /// What the contact is about (a campaign topic, a debt's account number), for limits
    /// counted by subject; empty counts every attempt.
    pub subject: &'a str,
}

#[derive(Debug, Clone)]
pub struct CheckOutcome<'a> {
    pub decision: Decision,
    /// None when the contact did not parse.
    pub contact: Option<ContactRef<'a>>,
    pub policy: &'a str,
    /// Why the request itself was faulty (invalid contact, or a bad item of a batch).
    pub problem: Option<String>,
    /// How long since the index last heard from its store (0 on the embedded store);
    /// None while a replica has not finished its first load.
    pub index_age_ms: Option<Millis>,
    /// The request's correlation_id to echo: empty when it was itself refused.
    pub correlation_id: &'a str,
    /// Where the person was placed, for calling hours; None when the request was refused.
    pub place: Option<Place<'a>>,
}

/// A batch's answers in request order, and the index seq the batch answers at.
#[derive(Debug, Clone)]
pub struct BatchOutcome<'a> {
    pub outcomes: Vec<CheckOutcome<'a>>,
    pub index_seq: u64,
}

impl<'a> std::ops::Deref for BatchOutcome<'a> {
    type Target = [CheckOutcome<'a>];
    fn deref(&self) -> &Self::Target {
        &self.outcomes
    }
}

/// A caller's label as an answer may echo it: empty when over its limit or holding
/// control characters (a 32 MB correlation_id was echoed in full).
pub fn echoable(s: &str) -> &str {
    match key_problem(s, MAX_LABEL) {
        None => s,
        Some(_) => "",
    }
}

impl Engine {
    /// One check. A contact that does not parse is a BLOCK, not an error; a missing
    /// channel or an unknown policy is an error.
    pub fn check<'a>(&'a self, req: &CheckRequest<'a>) -> Result<CheckOutcome<'a>> {
        let out = self.check_one(req, self.clock.now_ms(), None);
        let decision = match &out {
            Ok(o) => &o.decision,
            Err(_) => &Decision::blocked(Reason::InvalidRequest, 0),
        };
        self.counters.record(decision);
        out
    }

    /// `now` is read once per batch; `phone` is the contact already normalized by the
    /// batch's look-ahead (only for requests without their own default_region).
    // Inlined into both callers: the answer (a few hundred bytes) is then built where the
    // caller keeps it instead of being copied out of a returned Result.
    #[inline(always)]
    fn check_one<'a>(
        &'a self,
        req: &CheckRequest<'a>,
        now: crate::model::Millis,
        phone: Option<u64>,
    ) -> Result<CheckOutcome<'a>> {
        // Before a replica's first full load its index may be missing anything: never allow.
        let index_age_ms = self.index.ready().then(|| self.index.age_ms(now));
        if let Some(p) = key_problem(req.correlation_id, MAX_LABEL) {
            return Err(Error::invalid("correlation_id", p));
        }
        // An oversized contact is a bad request, not a contact to look up: 10,000 contacts of
        // 1,600 digits cost 120 times a normal batch to parse.
        if req.contact.len() > MAX_CONTACT {
            return Err(Error::invalid(
                "contact",
                format!("{} bytes, at most {MAX_CONTACT}", req.contact.len()),
            ));
        }
        if let Some(p) = text_problem(req.category, MAX_LABEL) {
            return Err(Error::invalid("category", p));
        }
        if let Some(p) = text_problem(req.subject, MAX_LABEL) {
            return Err(Error::invalid("subject", p));
        }
        let channel = req.channel.require("channel")?;
        let purpose = req.purpose.or("purpose", Purpose::Marketing)?;
        let direction = req.direction.or("direction", Direction::Outbound)?;
        let policy = self.policies.get(req.policy)?;
        let region = self.region("default_region", req.default_region)?;
        let category = req.category.trim();
        let at = req.at.resolve("at")?.unwrap_or(now);
        let postal = match req.postal_code.trim() {
            "" => None,
            p => Some(parse_postal(p).map_err(|m| Error::invalid("postal_code", m))?),
        };
        let parsed = match phone {
            Some(p) => Ok(ContactRef::Phone(p)),
            None => crate::normalize::contact(&self.phones, req.contact, region),
        };
        let contact = match parsed {
            Ok(c) => c,
            Err(e) => {
                return Ok(CheckOutcome {
                    decision: Decision::blocked(Reason::InvalidContact, self.index.seq()),
                    contact: None,
                    policy: &policy.name,
                    problem: Some(format!(
                        "contact: `{}` is not a valid contact: {e}",
                        crate::model::ids::quote(req.contact)
                    )),
                    index_age_ms,
                    correlation_id: req.correlation_id,
                    place: None,
                });
            }
        };
        let phone = match contact {
            ContactRef::Phone(p) => Some(p),
            _ => None,
        };
        let location = places().locate(phone, postal);
        let hours = match direction {
            Direction::Outbound => policy.calling.judge(&location, channel, purpose, at),
            Direction::Inbound => Default::default(),
        };
        let mut input = CheckInput {
            channel,
            purpose,
            category: (!category.is_empty()).then_some(category),
            direction,
            at,
            hours,
            frequency: FrequencyJudgement::default(),
        };
        let age = index_age_ms.unwrap_or(Millis::MAX);
        // The registry loads start now and arrive while the index is read.
        let lists = self.registries.current();
        if let (ContactRef::Phone(p), None) = (&contact, phone) {
            lists.prefetch(&[*p]);
        }
        let decision = self.index.with_facts(&contact, |facts, seq| {
            // The facts hold more than the contact's own only when it has a person whose
            // other identifiers count too: otherwise their attempts need no lookup.
            if direction == Direction::Outbound {
                let linked = facts.len() > 1;
                input.frequency = self.frequency(
                    policy,
                    &contact,
                    linked,
                    &location,
                    channel,
                    purpose,
                    req.subject,
                    at,
                );
            }
            let mut hits = [RegistryHit::EMPTY; MAX_HITS];
            let n = match &contact {
                ContactRef::Phone(p) => lists.hits(*p, &mut hits),
                _ => 0,
            };
            evaluate(policy, &input, facts, &hits[..n], age, seq)
        });
        Ok(CheckOutcome {
            decision,
            contact: Some(contact),
            policy: &policy.name,
            problem: None,
            index_age_ms,
            correlation_id: req.correlation_id,
            place: Some(Place::new(location, &policy.calling)),
        })
    }

    /// What the policy's frequency limits say of the attempts held for the contact (and, when
    /// it is `linked` to a person, the person's other identifiers). A limit reached lapses
    /// when its oldest counted attempt leaves the window, and then only once the calling hours
    /// allow (so `lapses_at` is when both have lapsed).
    #[allow(clippy::too_many_arguments)]
    fn frequency(
        &self,
        policy: &Policy,
        contact: &ContactRef<'_>,
        linked: bool,
        location: &Location,
        channel: Channel,
        purpose: Purpose,
        subject: &str,
        at: Millis,
    ) -> FrequencyJudgement {
        // No attempt held anywhere: no limit can be reached (and most checks of a list
        // scrubbed before its first campaign look no further).
        if policy.frequency.is_empty() || self.index.attempts_held() == 0 {
            return FrequencyJudgement::default();
        }
        let mut j = judge(
            &policy.frequency,
            location,
            channel,
            purpose,
            subject_hash(subject),
            at,
            |per_person, f| self.index.each_attempt(contact, per_person && linked, f),
        );
        if let Some(lapse) = j.lapses_at {
            let then = policy.calling.judge(location, channel, purpose, lapse);
            if then.outside {
                j.lapses_at = then.next_allowed_at;
            }
        }
        j
    }

    /// Up to MAX_BATCH checks, answered in order. A faulty item is a BLOCK with
    /// INVALID_REQUEST naming its field (`checks[i].at`); the others are unharmed.
    pub fn check_batch<'a>(&'a self, reqs: &[CheckRequest<'a>]) -> Result<BatchOutcome<'a>> {
        let mut outcomes = Vec::with_capacity(reqs.len());
        let index_seq = self.check_batch_each(reqs, |o| outcomes.push(o.clone()))?;
        Ok(BatchOutcome {
            outcomes,
            index_seq,
        })
    }

    /// `check_batch`, handing each answer to `each` in order as it is decided (a transport
    /// writes it out at once instead of keeping a thousand answers of 500 bytes around).
    /// Returns the index seq the batch answers at.
    pub fn check_batch_each<'a>(
        &'a self,
        reqs: &[CheckRequest<'a>],
        mut each: impl FnMut(&CheckOutcome<'a>),
    ) -> Result<u64> {
        let mut checks = self.batch_checks(reqs.len())?;
        for window in reqs.chunks(PREFETCH_WINDOW) {
            checks.window(window, &mut each);
        }
        Ok(checks.finish())
    }

    /// A batch of `len` checks (refused over MAX_BATCH), decided a window at a time as the
    /// transport reads them, so no list of a thousand requests is kept either.
    pub fn batch_checks(&self, len: usize) -> Result<BatchChecks<'_>> {
        super::check_batch_len("checks", len)?;
        Ok(BatchChecks {
            engine: self,
            now: self.clock.now_ms(),
            counts: [0; DecisionCounters::SLOTS],
            index_seq: None,
            done: 0,
        })
    }
}

/// A batch being decided: every check of it at the same `now`, its decisions counted once.
pub struct BatchChecks<'e> {
    engine: &'e Engine,
    now: Millis,
    counts: [u64; DecisionCounters::SLOTS],
    /// The batch speaks for the newest index any of its answers saw.
    index_seq: Option<u64>,
    /// Checks decided so far (the next one's index in the batch).
    done: usize,
}

impl<'e> BatchChecks<'e> {
    /// Decides the next checks of the batch (up to PREFETCH_WINDOW at once; more are split),
    /// handing each answer to `each` in order. A faulty item is a BLOCK with INVALID_REQUEST
    /// naming its field (`checks[i].at`); the others are unharmed.
    pub fn window<'a>(
        &mut self,
        reqs: &[CheckRequest<'a>],
        each: &mut impl FnMut(&CheckOutcome<'a>),
    ) where
        'e: 'a,
    {
        let engine: &'a Engine = self.engine;
        let now = self.now;
        let mut phones = [0u64; PREFETCH_WINDOW];
        let mut normalized = [None; PREFETCH_WINDOW];
        let mut tens = [None; PREFETCH_WINDOW];
        let places = places();
        for window in reqs.chunks(PREFETCH_WINDOW) {
            // Start the loads of the whole window (NANP block, zone and registry entries)
            // before deciding any of it: a window's cache misses overlap.
            for (j, r) in window.iter().enumerate() {
                tens[j] = None;
                if r.default_region.is_empty() {
                    tens[j] = engine.phones.nanp_candidate(r.contact);
                    if let Some(ten) = tens[j] {
                        places.prefetch(10_000_000_000 + ten);
                    }
                }
            }
            let mut n = 0;
            for j in 0..window.len() {
                normalized[j] = tens[j].and_then(|t| engine.phones.cached_e164(t));
                if let Some(p) = normalized[j] {
                    phones[n] = p;
                    n += 1;
                }
            }
            engine.registries.prefetch(&phones[..n]);
            for (j, r) in window.iter().enumerate() {
                let o = match engine.check_one(r, now, normalized[j]) {
                    Ok(o) => o,
                    Err(e) => CheckOutcome {
                        decision: Decision::blocked(Reason::InvalidRequest, engine.index.seq()),
                        contact: None,
                        policy: echoable(r.policy),
                        correlation_id: echoable(r.correlation_id),
                        problem: Some(e.within(&format!("checks[{}]", self.done + j)).to_string()),
                        index_age_ms: engine.index.ready().then(|| engine.index.age_ms(now)),
                        place: None,
                    },
                };
                self.counts[DecisionCounters::slot(&o.decision)] += 1;
                self.index_seq = self.index_seq.max(Some(o.decision.index_seq));
                each(&o);
            }
            self.done += window.len();
        }
    }

    /// Counts the batch's decisions; the index seq the batch answers at.
    pub fn finish(self) -> u64 {
        self.engine.counters.record_counts(&self.counts);
        self.index_seq.unwrap_or_else(|| self.engine.index.seq())
    }
}
