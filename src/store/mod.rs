//! The source of truth: an append-only change log with gap-free seqs and idempotency records.
pub mod embedded;

use crate::model::{Event, StoredEvent};
use futures::future::BoxFuture;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Unavailable(String),
    #[error("idempotency key `{0}` reused with a different request")]
    IdempotencyConflict(String),
    #[error("{0}")]
    Corrupt(String),
}

/// Builds the answer to remember under an idempotency key, given the seq of the first event.
pub type Responder = Box<dyn FnOnce(u64) -> Vec<u8> + Send>;

pub struct IdempotencyClaim {
    pub key: String,
    /// Hash of the request; a retry must match it.
    pub fingerprint: [u8; 32],
    pub respond: Responder,
}

/// Events to commit together, in one transaction, with an optional idempotency record.
pub struct Append {
    pub events: Vec<Event>,
    pub idempotency: Option<IdempotencyClaim>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Written and applied to the index. `first_seq..=last_seq` (empty when no events).
    Committed {
        first_seq: u64,
        last_seq: u64,
        response: Option<Vec<u8>>,
    },
    /// The idempotency key was seen before: its first answer, nothing written.
    Replayed { response: Vec<u8> },
}

/// Receives committed events in seq order, before the write is acknowledged.
pub trait EventSink: Send + Sync + 'static {
    fn apply(&self, ev: &StoredEvent);
}

pub trait Store: Send + Sync + 'static {
    /// Durably commits, applies to the sink, then resolves.
    fn append(&self, req: Append) -> BoxFuture<'static, Result<AppendOutcome, StoreError>>;
    /// Events with seq > `after`, at most `limit`, in order.
    fn read_events(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError>;
    fn last_seq(&self) -> Result<u64, StoreError>;
}
