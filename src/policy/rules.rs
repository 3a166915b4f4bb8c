//! Decision rules 1-7 of docs/rules.md. Pure: the same facts, policy and time give the same decision.
use super::Policy;
use super::frequency::FrequencyJudgement;
use crate::calling::Judgement;
use crate::index::{ConsentFact, ContactFacts};
use crate::model::{
    Channel, ConsentStatus, Direction, DncType, Millis, Purpose, Reason, ReasonSet,
};
use crate::registry::{ListVersion, RegistryHit};

/// One check, already validated and normalized.
#[derive(Clone, Copy, Debug)]
pub struct CheckInput<'a> {
    pub channel: Channel,
    pub purpose: Purpose,
    pub category: Option<&'a str>,
    pub direction: Direction,
    /// When the contact would be made.
    pub at: Millis,
    /// What the policy's calling hours said of (place, channel, purpose, at).
    pub hours: Judgement,
    /// What the policy's frequency limits said of the attempts the index holds.
    pub frequency: FrequencyJudgement,
}

/// A record behind a reason; formatted to its public id only at the API edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordId {
    Consent(u64),
    Dnc(u64),
    /// A contact attempt (counted against a frequency limit).
    Attempt(u64),
    /// A registry list and the version that held the number.
    Registry(&'static ListVersion),
}

impl RecordId {
    /// The public id (what `Display` writes), without the formatting machinery: check
    /// answers carry one per reason.
    pub fn text(&self) -> String {
        use crate::model::ids::push_decimal;
        let (prefix, n) = match self {
            RecordId::Consent(s) => ("cn-", *s),
            RecordId::Dnc(s) => ("dnc-", *s),
            RecordId::Attempt(s) => ("at-", *s),
            RecordId::Registry(l) => {
                let mut t = String::with_capacity(16 + l.list.len());
                t.push_str("registry:");
                t.push_str(l.list);
                t.push_str("@v");
                push_decimal(&mut t, l.version);
                return t;
            }
        };
        let mut t = String::with_capacity(24);
        t.push_str(prefix);
        push_decimal(&mut t, n);
        t
    }
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

const MATCHED_CAP: usize = 12;

// Every decision carries MATCHED_CAP of these and is moved several times a check.
const _: () = assert!(std::mem::size_of::<RecordId>() == 16);

/// Inline list of record ids (one per reason at most), so deciding allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matched {
    ids: [RecordId; MATCHED_CAP],
    len: u8,
}

impl Default for Matched {
    fn default() -> Self {
        Matched {
            ids: [RecordId::Consent(0); MATCHED_CAP],
            len: 0,
        }
    }
}

impl Matched {
    fn push(&mut self, id: RecordId) {
        if usize::from(self.len) < MATCHED_CAP && !self.as_slice().contains(&id) {
            self.ids[usize::from(self.len)] = id;
            self.len += 1;
        }
    }
    pub fn as_slice(&self) -> &[RecordId] {
        &self.ids[..usize::from(self.len)]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub reasons: ReasonSet,
    pub matched: Matched,
    pub index_seq: u64,
    /// When every time-based reason has lapsed; None when none applies (or none lapses
    /// within the calling hours' horizon).
    pub next_allowed_at: Option<Millis>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.reasons.is_empty()
    }

    /// A BLOCK for a single reason with no record behind it (bad contact, bad request).
    pub fn blocked(reason: Reason, index_seq: u64) -> Decision {
        let mut reasons = ReasonSet::EMPTY;
        reasons.insert(reason);
        Decision {
            reasons,
            matched: Matched::default(),
            index_seq,
            next_allowed_at: None,
        }
    }
}

fn covers(c: &ConsentFact, input: &CheckInput<'_>) -> bool {
    let r = c;
    r.channels.contains(input.channel)
        && r.purposes.contains(input.purpose)
        && r.effective_at <= input.at
        && match (&r.category, input.category) {
            (None, _) => true,
            (Some(rc), Some(ic)) => rc.eq_ignore_ascii_case(ic),
            (Some(_), None) => false,
        }
}

/// The latest record covering the check, by effective time, then by seq. The contact's
/// own records all count; from the person and their other identifiers only withdrawals and
/// refusals do: consent to contact one number is not consent to contact another.
fn latest_covering<'f>(
    facts: &[&'f ContactFacts],
    input: &CheckInput<'_>,
) -> Option<&'f ConsentFact> {
    let mut best: Option<&ConsentFact> = None;
    for (i, f) in facts.iter().enumerate() {
        for c in &f.consents {
            if (i == 0 || c.status != ConsentStatus::Granted)
                && covers(c, input)
                && best.is_none_or(|b| (c.effective_at, c.seq) > (b.effective_at, b.seq))
            {
                best = Some(c);
            }
        }
    }
    best
}

/// WhatsApp's customer-service window: a business may answer for 24 hours after the
/// person's last message without a template opt-in.
pub const WHATSAPP_WINDOW_MS: Millis = 24 * 3_600_000;

fn in_whatsapp_window(facts: &[&ContactFacts], input: &CheckInput<'_>) -> bool {
    input.channel == Channel::Whatsapp
        && input.purpose == Purpose::Service
        && facts[0]
            .last_inbound_on(Channel::Whatsapp)
            .is_some_and(|t| t <= input.at && input.at.saturating_sub(t) < WHATSAPP_WINDOW_MS)
}

enum ExpressConsent<'f> {
    Active,
    Expired(&'f ConsentFact),
    Withdrawn(&'f ConsentFact),
    Denied(&'f ConsentFact),
    None,
}

fn express_consent<'f>(
    policy: &Policy,
    facts: &[&'f ContactFacts],
    input: &CheckInput<'_>,
) -> ExpressConsent<'f> {
    match latest_covering(facts, input) {
        None => ExpressConsent::None,
        Some(c) => match c.status {
            ConsentStatus::Withdrawn => ExpressConsent::Withdrawn(c),
            ConsentStatus::Denied => ExpressConsent::Denied(c),
            ConsentStatus::Granted => {
                let past_expiry = c.expires_at.is_some_and(|e| e <= input.at);
                let past_ttl = policy
                    .consent_ttl_ms
                    .is_some_and(|ttl| input.at.saturating_sub(c.effective_at) > ttl);
                if past_expiry || past_ttl {
                    ExpressConsent::Expired(c)
                } else {
                    ExpressConsent::Active
                }
            }
        },
    }
}

/// Applies rules 2-7 (rule 1, an unparseable contact, is decided before any facts exist).
///
/// `facts[0]` is the contact's own identifier; further entries are identifiers linked to
/// the same person, whose withdrawals and company DNC entries apply too, while registry
/// entries stay with the number they were listed for.
pub fn evaluate(
    policy: &Policy,
    input: &CheckInput<'_>,
    facts: &[&ContactFacts],
    registry: &[RegistryHit],
    index_age_ms: Millis,
    index_seq: u64,
) -> Decision {
    let mut d = Decision {
        reasons: ReasonSet::EMPTY,
        matched: Matched::default(),
        index_seq,
        next_allowed_at: None,
    };
    let consent = express_consent(policy, facts, input);

    // Rule 2: DNC entries.
    if input.direction == Direction::Outbound || policy.block_inbound {
        let registry_applies = input.purpose == Purpose::Marketing
            && matches!(input.channel, Channel::Voice | Channel::Sms);
        let registry_overridden =
            policy.consent_overrides_registry && matches!(consent, ExpressConsent::Active);
        for (i, f) in facts.iter().enumerate() {
            for e in &f.dnc {
                let t = e.dnc_type;
                if !policy.block_dnc.contains(t) || !e.is_active(input.at) {
                    continue;
                }
                if t.is_registry() && (i > 0 || !registry_applies || registry_overridden) {
                    continue;
                }
                if i > 0 && !matches!(t, DncType::Corporate | DncType::Personal) {
                    continue;
                }
                if !d.reasons.contains(t.reason()) {
                    d.reasons.insert(t.reason());
                    d.matched.push(RecordId::Dnc(e.seq));
                }
            }
        }
        // Registry lists hold numbers only, so they speak for facts[0] alone.
        for h in registry {
            let t = h.dnc_type;
            if !policy.block_dnc.contains(t)
                || (t.is_registry() && (!registry_applies || registry_overridden))
            {
                continue;
            }
            d.reasons.insert(t.reason());
            d.matched.push(RecordId::Registry(h.list));
        }
    }

    // Rules 3 and 4: the latest covering consent record.
    let required =
        policy.requires_consent(input.channel, input.purpose) && !in_whatsapp_window(facts, input);
    match consent {
        ExpressConsent::Withdrawn(c) => {
            d.reasons.insert(Reason::ConsentWithdrawn);
            d.matched.push(RecordId::Consent(c.seq));
        }
        ExpressConsent::Denied(c) => {
            d.reasons.insert(Reason::ConsentDenied);
            d.matched.push(RecordId::Consent(c.seq));
        }
        ExpressConsent::Expired(c) if required => {
            d.reasons.insert(Reason::ConsentExpired);
            d.matched.push(RecordId::Consent(c.seq));
        }
        ExpressConsent::None if required => d.reasons.insert(Reason::NoConsent),
        _ => {}
    }

    // Rule 5: staleness. `Millis::MAX` means the index was never loaded: stale under any policy.
    if index_age_ms == Millis::MAX
        || policy
            .max_staleness_ms
            .is_some_and(|max| index_age_ms > max)
    {
        d.reasons.insert(Reason::IndexStale);
    }

    // Rule 6: calling hours (judged where the person is, before the facts were read).
    if input.hours.outside && input.direction == Direction::Outbound {
        d.reasons.insert(Reason::OutsideCallingHours);
        d.next_allowed_at = input.hours.next_allowed_at;
    }

    // Rule 7: frequency limits (counted by the caller with the facts). The limit's lapse was
    // already moved into the calling hours, so it is never earlier than theirs.
    if input.frequency.over && input.direction == Direction::Outbound {
        d.reasons.insert(Reason::FrequencyLimit);
        for seq in input.frequency.attempt_seqs() {
            d.matched.push(RecordId::Attempt(*seq));
        }
        d.next_allowed_at = match (input.hours.outside, input.frequency.lapses_at) {
            (_, None) => None,
            (false, Some(t)) => Some(t),
            (true, Some(t)) => d.next_allowed_at.map(|h| h.max(t)),
        };
    }
    d
}

#[cfg(test)]
mod tests;
