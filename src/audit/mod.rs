//! The tamper-evident audit trail: hash-chained records about keyed-hash subjects, with the
//! personal part of each record held apart so that erasing it leaves the chain intact.
mod caller;
pub mod chain;
mod tokens;

pub use caller::Caller;
pub use chain::{
    AuditDraft, AuditEntry, AuditRecord, Personal, RawAudit, Rendered, Verification, chain_hash,
    entry_of, verify,
};
pub use tokens::Tokenizer;
