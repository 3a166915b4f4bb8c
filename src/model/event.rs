//! Events of the change log: every fact that changes a decision, as stored and replayed.
use super::{Channel, ChannelSet, ConsentStatus, ContactKey, DncType, Millis, PurposeSet};
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
    pub actor: String,
    pub reason: String,
    pub retain_until: Millis,
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
