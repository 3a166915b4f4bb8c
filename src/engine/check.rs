//! Pre-flight checks, one at a time and in batches.
use super::{Arg, Engine};
use crate::error::Result;
use crate::model::{Channel, ContactRef, Direction, Millis, Purpose, Reason};
use crate::policy::{CheckInput, Decision, evaluate};
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
    pub at: Option<Millis>,
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
    fn check_one<'a>(
        &'a self,
        req: &CheckRequest<'a>,
        now: crate::model::Millis,
        phone: Option<u64>,
    ) -> Result<CheckOutcome<'a>> {
        // Before a replica's first full load its index may be missing anything: never allow.
        let index_age_ms = self.index.ready().then(|| self.index.age_ms(now));
        let channel = req.channel.require("channel")?;
        let purpose = req.purpose.or("purpose", Purpose::Marketing)?;
        let direction = req.direction.or("direction", Direction::Outbound)?;
        let policy = self.policies.get(req.policy)?;
        let region = self.region("default_region", req.default_region)?;
        let category = req.category.trim();
        let input = CheckInput {
            channel,
            purpose,
            category: (!category.is_empty()).then_some(category),
            direction,
            at: req.at.unwrap_or(now),
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
                        req.contact
                    )),
                    index_age_ms,
                });
            }
        };
        let age = index_age_ms.unwrap_or(Millis::MAX);
        // The registry loads start now and arrive while the index is read.
        if let (ContactRef::Phone(p), None) = (&contact, phone) {
            self.registries.prefetch(&[*p]);
        }
        let decision = self.index.with_facts(&contact, |facts, seq| {
            let mut hits = [RegistryHit::EMPTY; MAX_HITS];
            let n = match &contact {
                ContactRef::Phone(p) => self.registries.hits(*p, &mut hits),
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
        })
    }

    /// Up to MAX_BATCH checks, answered in order. A faulty item is a BLOCK with
    /// INVALID_REQUEST naming its field; the others are unharmed.
    pub fn check_batch<'a>(&'a self, reqs: &[CheckRequest<'a>]) -> Result<Vec<CheckOutcome<'a>>> {
        self.check_batch_at(reqs, None)
    }

    /// Like `check_batch`, for a caller that answered some items itself: `positions[i]` is
    /// where `reqs[i]` stood in the caller's batch, so errors name the caller's index.
    pub fn check_batch_at<'a>(
        &'a self,
        reqs: &[CheckRequest<'a>],
        positions: Option<&[usize]>,
    ) -> Result<Vec<CheckOutcome<'a>>> {
        super::check_batch_len("checks", reqs.len())?;
        let mut out = Vec::with_capacity(reqs.len());
        let now = self.clock.now_ms();
        let mut phones = [0u64; PREFETCH_WINDOW];
        let mut normalized = [None; PREFETCH_WINDOW];
        for (w, window) in reqs.chunks(PREFETCH_WINDOW).enumerate() {
            // Start the registry loads of the whole window before deciding any of it.
            let mut n = 0;
            for (j, r) in window.iter().enumerate() {
                normalized[j] = None;
                if r.default_region.is_empty()
                    && let Some(p) = self.phones.normalize_cached(r.contact)
                {
                    normalized[j] = Some(p);
                    phones[n] = p;
                    n += 1;
                }
            }
            self.registries.prefetch(&phones[..n]);
            for (j, r) in window.iter().enumerate() {
                out.push(match self.check_one(r, now, normalized[j]) {
                    Ok(o) => o,
                    Err(e) => CheckOutcome {
                        decision: Decision::blocked(Reason::InvalidRequest, self.index.seq()),
                        contact: None,
                        policy: r.policy,
                        problem: Some(
                            e.within(&format!("checks[{}]", {
                                let i = w * PREFETCH_WINDOW + j;
                                positions.and_then(|p| p.get(i).copied()).unwrap_or(i)
                            }))
                            .to_string(),
                        ),
                        index_age_ms: self.index.ready().then(|| self.index.age_ms(now)),
                    },
                });
            }
        }
        let mut counts = [0u64; DecisionCounters::SLOTS];
        for o in &out {
            counts[DecisionCounters::slot(&o.decision)] += 1;
        }
        self.counters.record_counts(&counts);
        Ok(out)
    }
}
