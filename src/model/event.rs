//! Events of the change log: every fact that changes a decision, as stored and replayed.
use super::{ChannelSet, ConsentStatus, ContactKey, DncType, Millis, PurposeSet};
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
