//! Events of the change log: every fact that changes a decision, as stored and replayed.
use super::privacy::{Jurisdiction, RequestResult, RequestStatus, RequestType};
use super::{
    AttemptOutcome, Channel, ChannelSet, ConsentStatus, ContactKey, DncType, Millis, PurposeSet,
};
use serde::{Deserialize, Serialize};

/// One entry of the change log. `seq` is gap-free and assigned by the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub seq: u64,
    /// When the store committed it.
    pub recorded_at: Millis,
    pub event: Event,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    ConsentRecorded(ConsentEvent),
    DncAdded(DncAddEvent),
    DncRemoved(DncRemoveEvent),
    IdentityLinked(LinkEvent),
    IdentityUnlinked(UnlinkEvent),
    InboundReceived(InboundEvent),
    /// What is left of an event whose personal data a privacy request erased.
    Redacted(RedactedEvent),
    ConsumerRegistered(ConsumerEvent),
    ConsumerIdentifiersAdded(ConsumerIdentifiersEvent),
    PrivacyRequestSubmitted(RequestSubmittedEvent),
    PrivacyRequestUpdated(RequestUpdatedEvent),
    LegalHoldPlaced(LegalHoldEvent),
    LegalHoldReleased(LegalHoldEvent),
    /// Identifiers erased by a DELETE request; their earlier events were rewritten in the
    /// same transaction to name only their tokens.
    SubjectsErased(ErasureEvent),
    /// A contact attempt, from any dialer or platform: what frequency limits count.
    AttemptRecorded(AttemptEvent),
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::ConsentRecorded(_) => EventKind::ConsentChanged,
            Event::DncAdded(_) => EventKind::DncAdded,
            Event::DncRemoved(_) => EventKind::DncRemoved,
            Event::IdentityLinked(_) => EventKind::IdentityLinked,
            Event::IdentityUnlinked(_) => EventKind::IdentityUnlinked,
            Event::InboundReceived(_) => EventKind::InboundAction,
            Event::Redacted(_) => EventKind::Redacted,
            Event::ConsumerRegistered(_)
            | Event::ConsumerIdentifiersAdded(_)
            | Event::PrivacyRequestSubmitted(_)
            | Event::PrivacyRequestUpdated(_)
            | Event::LegalHoldPlaced(_)
            | Event::LegalHoldReleased(_)
            | Event::SubjectsErased(_) => EventKind::Privacy,
            Event::AttemptRecorded(_) => EventKind::ContactAttempt,
        }
    }

    /// The name of the event's kind in the audit trail.
    pub fn audit_kind(&self) -> &'static str {
        match self {
            Event::ConsentRecorded(_) => "consent_recorded",
            Event::DncAdded(_) => "dnc_added",
            Event::DncRemoved(_) => "dnc_removed",
            Event::IdentityLinked(_) => "identity_linked",
            Event::IdentityUnlinked(_) => "identity_unlinked",
            Event::InboundReceived(_) => "inbound_received",
            Event::Redacted(_) => "redacted",
            Event::ConsumerRegistered(_) => "consumer_registered",
            Event::ConsumerIdentifiersAdded(_) => "consumer_identifiers_added",
            Event::PrivacyRequestSubmitted(_) => "privacy_request_submitted",
            Event::PrivacyRequestUpdated(_) => "privacy_request_updated",
            Event::LegalHoldPlaced(_) => "legal_hold_placed",
            Event::LegalHoldReleased(_) => "legal_hold_released",
            Event::SubjectsErased(_) => "subjects_erased",
            Event::AttemptRecorded(_) => "attempt_recorded",
        }
    }

    /// The identifiers the event is about (its audit subjects).
    pub fn contacts(&self) -> Vec<&ContactKey> {
        match self {
            Event::ConsentRecorded(c) => vec![&c.contact],
            Event::DncAdded(d) => vec![&d.contact],
            Event::IdentityLinked(l) => vec![&l.contact],
            Event::IdentityUnlinked(u) => vec![&u.contact],
            Event::InboundReceived(i) => vec![&i.contact],
            Event::ConsumerRegistered(c) => c.identifiers.iter().collect(),
            Event::ConsumerIdentifiersAdded(c) => c.identifiers.iter().collect(),
            Event::LegalHoldPlaced(h) | Event::LegalHoldReleased(h) => vec![&h.contact],
            Event::AttemptRecorded(a) => vec![&a.contact],
            Event::DncRemoved(_)
            | Event::Redacted(_)
            | Event::PrivacyRequestSubmitted(_)
            | Event::PrivacyRequestUpdated(_)
            | Event::SubjectsErased(_) => Vec::new(),
        }
    }
}

/// What a change-log event is about, for watchers that filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    ConsentChanged,
    DncAdded,
    DncRemoved,
    IdentityLinked,
    IdentityUnlinked,
    InboundAction,
    Privacy,
    Redacted,
    ContactAttempt,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RedactedEvent {
    /// The audit kind of the event this replaced.
    pub was: String,
}

/// A consumer known to the privacy service; the id is `cu-<seq>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsumerEvent {
    pub identifiers: Vec<ContactKey>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsumerIdentifiersEvent {
    pub consumer_seq: u64,
    pub identifiers: Vec<ContactKey>,
}

/// A consumer request; the id is `pr-<seq>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestSubmittedEvent {
    pub consumer_seq: u64,
    pub request_type: RequestType,
    pub jurisdiction: Jurisdiction,
    pub received_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestUpdatedEvent {
    pub request_seq: u64,
    pub status: RequestStatus,
    /// Set when the deadline was extended, with the notice given to the consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_notice: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RequestResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LegalHoldEvent {
    pub contact: ContactKey,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErasureEvent {
    pub request_seq: u64,
    pub consumer_seq: u64,
    /// The erased identifiers, as tokens only.
    pub tokens: Vec<ContactKey>,
    /// Tokens of every identifier of the person, erased or kept under a legal hold: an
    /// opt-out or company DNC entry of any of them keeps suppressing all of them, as the
    /// identity links that said so are gone. Empty in erasures written before this field
    /// existed, which then group their `tokens`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<ContactKey>,
    /// The same identifiers in clear, in memory only: they let this process move its own
    /// index entries; they are never written.
    #[serde(skip)]
    pub contacts: Vec<ContactKey>,
}

/// `contact` now belongs to the person `person` (an external id, without `ext:`),
/// leaving any person it belonged to before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkEvent {
    pub person: String,
    pub contact: ContactKey,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnlinkEvent {
    pub contact: ContactKey,
}

/// What an inbound message asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InboundAction {
    OptOut,
    OptIn,
    Help,
    None,
}

impl InboundAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            InboundAction::OptOut => "OPT_OUT",
            InboundAction::OptIn => "OPT_IN",
            InboundAction::Help => "HELP",
            InboundAction::None => "NONE",
        }
    }
}

/// An inbound message from `contact`; any consent change it caused is a separate event
/// committed in the same transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboundEvent {
    pub contact: ContactKey,
    pub channel: Channel,
    pub received_at: Millis,
    pub action: InboundAction,
    #[serde(default)]
    pub keyword: String,
    #[serde(default)]
    pub message_id: String,
    #[serde(default)]
    pub to: String,
}

/// A consent record. Scopes are already expanded: an opt-out with no channel list
/// arrives here as every channel, so replay never reinterprets defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsentEvent {
    pub contact: ContactKey,
    pub status: ConsentStatus,
    pub channels: ChannelSet,
    pub purposes: PurposeSet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub proof: String,
    pub effective_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
    #[serde(default)]
    pub campaign_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DncAddEvent {
    pub contact: ContactKey,
    pub dnc_type: DncType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub note: String,
    #[serde(default)]
    pub actor: String,
}

/// Soft delete of the entry added at `entry_seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DncRemoveEvent {
    pub entry_seq: u64,
    /// The identifier the entry is under, so the index need not keep a map from entry to
    /// identifier. Events written before it was recorded lack it; the index then looks the
    /// entry up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<ContactKey>,
    pub actor: String,
    pub reason: String,
    pub retain_until: Millis,
}

/// A contact attempt: made at `at` (server time when the caller gave none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptEvent {
    pub contact: ContactKey,
    pub channel: Channel,
    pub purpose: super::Purpose,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    pub at: Millis,
    pub outcome: AttemptOutcome,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub campaign_id: String,
}

/// Record ids are derived from the seq of the event that created them, so every
/// replica and every replay names them the same way.
pub fn consent_id(seq: u64) -> String {
    format!("cn-{seq}")
}

pub fn dnc_id(seq: u64) -> String {
    format!("dnc-{seq}")
}

pub fn parse_dnc_id(id: &str) -> Option<u64> {
    id.strip_prefix("dnc-")?.parse().ok()
}

pub fn attempt_id(seq: u64) -> String {
    format!("at-{seq}")
}

pub fn consumer_id(seq: u64) -> String {
    format!("cu-{seq}")
}

pub fn parse_consumer_id(id: &str) -> Option<u64> {
    id.strip_prefix("cu-")?.parse().ok()
}

pub fn request_id(seq: u64) -> String {
    format!("pr-{seq}")
}

pub fn parse_request_id(id: &str) -> Option<u64> {
    id.strip_prefix("pr-")?.parse().ok()
}
