//! What the index knows about one identifier: its consent records and DNC entries.
use crate::model::{ConsentEvent, DncAddEvent, Millis};

#[derive(Clone, Debug, PartialEq)]
pub struct ConsentFact {
    pub seq: u64,
    pub recorded_at: Millis,
    pub record: ConsentEvent,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Removal {
    pub seq: u64,
    pub at: Millis,
    pub actor: String,
    pub reason: String,
    pub retain_until: Millis,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DncFact {
    pub seq: u64,
    pub added_at: Millis,
    pub entry: DncAddEvent,
    pub removal: Option<Removal>,
}

impl DncFact {
    /// In force at `at`: not removed and not expired.
    pub fn is_active(&self, at: Millis) -> bool {
        self.removal.is_none() && self.entry.expires_at.is_none_or(|e| e > at)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContactFacts {
    /// In seq order.
    pub consents: Vec<ConsentFact>,
    /// In seq order, archived entries included until their retention date.
    pub dnc: Vec<DncFact>,
}

impl ContactFacts {
    pub fn is_empty(&self) -> bool {
        self.consents.is_empty() && self.dnc.is_empty()
    }
}
