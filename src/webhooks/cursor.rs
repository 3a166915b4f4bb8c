//! An endpoint's durable delivery record: the last seq it acknowledged and whether it is
//! delivering, paused past its schedule, or disabled by a 410.
use crate::model::Millis;
use crate::store::{Stamped, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryState {
    Active,
    /// Past its retry schedule: the cursor stays until an operator resumes it.
    Paused,
    /// The receiver answered 410 Gone.
    Disabled,
}

impl DeliveryState {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Active => "ACTIVE",
            DeliveryState::Paused => "PAUSED",
            DeliveryState::Disabled => "DISABLED",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Every event up to this seq was acknowledged with a 2xx (or is not a type the endpoint
    /// takes).
    pub acked_seq: u64,
    pub state: DeliveryState,
    /// Why it is paused or disabled.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub changed_at: Millis,
}

impl Cursor {
    pub fn stamp(&self, generation: u64) -> Stamped {
        Stamped {
            generation,
            bytes: serde_json::to_vec(self).unwrap_or_default(),
        }
    }

    pub fn read(s: &Stamped) -> Result<Cursor, StoreError> {
        serde_json::from_slice(&s.bytes)
            .map_err(|e| StoreError::Corrupt(format!("webhook cursor: {e}")))
    }
}
