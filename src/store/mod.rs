//! The source of truth: an append-only change log with gap-free seqs and idempotency records.
pub mod blocks;
pub mod embedded;
pub mod idempotency;
pub mod private;
pub mod redact;
pub mod redis;
pub mod scrub;
pub mod sequence;
pub mod subjects;

use crate::audit::{RawAudit, Rendered};
use crate::model::{ContactKey, Event, StoredEvent, Token};
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
/// A store that retries a commit at another seq calls it again.
pub type Responder = Box<dyn Fn(u64) -> Vec<u8> + Send + Sync>;

pub struct IdempotencyClaim {
    pub key: String,
    /// Hash of the request; a retry must match it.
    pub fingerprint: [u8; 32],
    pub respond: Responder,
}

/// Events to commit together, in one transaction, with an optional idempotency record and
/// the audit records that describe them.
#[derive(Default)]
pub struct Append {
    pub events: Vec<Event>,
    pub idempotency: Option<IdempotencyClaim>,
    pub audit: Vec<Rendered>,
}

/// Rewrites one stored event so that it no longer names an erased identifier in clear;
/// `None` leaves it as it is.
pub type Redactor = Box<dyn Fn(&Event) -> Option<Event> + Send>;

/// A privacy erasure: every event and audit record about `tokens` is rewritten or stripped
/// of its personal part, and `append` (the erasure event and its audit record) committed,
/// all in one transaction.
pub struct Erasure {
    /// The identifiers in clear, for this process's own index; never written.
    pub contacts: Vec<ContactKey>,
    pub tokens: Vec<Token>,
    pub redact: Redactor,
    pub append: Append,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureOutcome {
    pub first_seq: u64,
    /// Events rewritten in place.
    pub rewritten: usize,
    /// Audit records whose personal part was removed.
    pub audit_stripped: usize,
}

/// A small record kept beside the log with a generation that only grows: what a webhook
/// endpoint's cursor is stored as, so operators and the one deliverer can change it safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    pub generation: u64,
    pub bytes: Vec<u8>,
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

/// What a store feeds: receives committed events in seq order, before the write is
/// acknowledged. Both stores reach the index through this one contract; the index side
/// (the engine's projection) implements it, so nothing here knows the engine.
pub trait EventSink: Send + Sync + 'static {
    fn apply(&self, ev: &StoredEvent);
    /// Before the erasure event itself is applied: `contacts` were erased and `history` holds
    /// the events about them, as rewritten, in seq order.
    fn erased(&self, contacts: &[ContactKey], history: &[StoredEvent]);
    /// The seq of the last event applied.
    fn seq(&self) -> u64;
    /// Identifiers held, for logs.
    fn identifiers(&self) -> usize;
    /// A shared store's replica finished its first full load (`true`), or can no longer
    /// trust its state until it reloads (`false`).
    fn set_loaded(&self, yes: bool);
    /// The shared store was heard from at `now` (an event or a heartbeat).
    fn heard_from_store(&self, now: crate::model::Millis);
    /// The seqs of the consent and DNC events about `contacts`, in order: what a shared
    /// store's erasure reads back, rewrites and carries for the other replicas.
    fn fact_seqs(&self, contacts: &[ContactKey]) -> Vec<u64>;
    /// The identifiers held in clear whose tokens are in `tokens` (another replica's erasure).
    fn contacts_for_tokens(&self, tokens: &[Token]) -> Vec<ContactKey>;
    /// The key erased identifiers are hashed with.
    fn tokenizer(&self) -> &crate::audit::Tokenizer;
    /// An image of the index at `until`, encoded: `base` (an earlier image, encoded) with
    /// the log after it replayed onto it, in an index of its own (the live one keeps
    /// changing). What a shared store keeps for replicas that start cold.
    fn build_image(
        &self,
        base: Option<&[u8]>,
        read: ReadLog,
        until: u64,
    ) -> Result<Vec<u8>, String> {
        let _ = (base, read, until);
        Err("this sink builds no index images".into())
    }
}

/// Reads the change log: events after a seq, at most a count, in order.
pub type ReadLog<'a> = &'a dyn Fn(u64, usize) -> Result<Vec<StoredEvent>, StoreError>;

pub trait Store: Send + Sync + 'static {
    /// Durably commits, applies to the sink, then resolves.
    fn append(&self, req: Append) -> BoxFuture<'static, Result<AppendOutcome, StoreError>>;
    /// Events with seq > `after`, at most `limit`, in order.
    fn read_events(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError>;
    fn last_seq(&self) -> Result<u64, StoreError>;
    /// Commits an erasure; see `Erasure`.
    fn erase(&self, req: Erasure) -> BoxFuture<'static, Result<ErasureOutcome, StoreError>>;
    /// Audit records with seq > `after`, at most `limit`, as stored.
    fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<RawAudit>, StoreError>;
    /// The seqs of the audit records about a subject token, in order.
    fn audit_seqs_for(&self, token: &Token) -> Result<Vec<u64>, StoreError>;
    /// The audit records at the given seqs (missing ones skipped).
    fn read_audit_at(&self, seqs: &[u64]) -> Result<Vec<RawAudit>, StoreError>;
    /// Shares a registry version just installed here with the other replicas (a shared
    /// store); a single-process store has no one to tell.
    fn publish_registry(
        &self,
        _set: std::sync::Arc<crate::registry::RegistrySet>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    /// Whether a write now would be made durable; Err says why not (a full disk). Readiness
    /// follows it; checks keep answering from the index either way.
    fn writable(&self) -> Result<(), String> {
        Ok(())
    }
    /// Whether other processes write to this store too (a replica of a shared store): its
    /// faults at start are waited out rather than stopping the process.
    fn shared(&self) -> bool {
        false
    }

    /// What the store is and how it is doing, for /readyz.
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "embedded" })
    }
    /// Bytes the store takes where this process can see them (the embedded data file);
    /// None for a store that does not know.
    fn bytes(&self) -> Option<u64> {
        None
    }

    /// A webhook endpoint's delivery record (see `Stamped`), if one was saved.
    fn load_cursor(
        &self,
        endpoint: &str,
    ) -> BoxFuture<'static, Result<Option<Stamped>, StoreError>>;

    /// Saves `next` as the endpoint's record unless the stored one's generation is above
    /// `if_at_most`; then nothing is written and the stored record is returned. A deliverer
    /// passes its own generation (an operator's change wins over it), an operator the one
    /// it read (two operators never overwrite each other unseen).
    fn save_cursor(
        &self,
        endpoint: &str,
        if_at_most: u64,
        next: Stamped,
    ) -> BoxFuture<'static, Result<Option<Stamped>, StoreError>>;

    /// Whether this process holds the named lease for the next `ttl_ms` (taking or renewing
    /// it): one replica of a shared store at a time does the work it guards. A store with
    /// one process always holds it.
    fn hold_lease(
        &self,
        _name: &str,
        _ttl_ms: u64,
    ) -> BoxFuture<'static, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    /// The event at `seq`, if held.
    fn read_event(&self, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
        Ok(self
            .read_events(seq.saturating_sub(1), 1)?
            .into_iter()
            .find(|e| e.seq == seq))
    }
}

/// How the engine reports a store failure to its callers: nothing was written.
impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> crate::error::Error {
        use crate::error::Error;
        match e {
            StoreError::Unavailable(m) => Error::Unavailable(m),
            StoreError::IdempotencyConflict(key) => Error::invalid(
                "idempotency_key",
                format!("`{key}` was already used for a different request"),
            ),
            StoreError::Corrupt(m) => Error::Internal(format!("store data corrupt: {m}")),
        }
    }
}
