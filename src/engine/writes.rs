//! Committing events through the store with idempotency: a retry gets the first answer back.
use super::Engine;
use crate::audit::Caller;
use crate::error::{Error, Result};
use crate::model::Event;
use crate::store::{Append, AppendOutcome, IdempotencyClaim};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

const MAX_KEY_LEN: usize = crate::model::limits::MAX_KEY;

/// The seq after a call's last write: its last event's, or the index's when it wrote none.
pub(super) fn seq_after(first_seq: u64, n_events: u64, index_seq: u64) -> u64 {
    if n_events == 0 {
        index_seq
    } else {
        first_seq + n_events - 1
    }
}

impl Engine {
    /// Commits `events` and answers with `build(first_seq)`; under an idempotency key the
    /// answer is stored with the events in one transaction, and a retry returns it
    /// (with `true`) without writing anything.
    pub(super) async fn commit<R, Q>(
        &self,
        namespace: &'static str,
        idempotency_key: &str,
        request: &Q,
        events: Vec<Event>,
        caller: &Caller,
        build: impl Fn(u64) -> R + Send + Sync + 'static,
    ) -> Result<(R, bool)>
    where
        R: Serialize + DeserializeOwned,
        Q: Serialize,
    {
        let out = async {
            let key = idempotency_key.trim();
            if let Some(p) = crate::model::limits::key_problem(key, MAX_KEY_LEN) {
                return Err(Error::invalid("idempotency_key", p));
            }
            let audit = self.audit_drafts(&events, caller);
            if key.is_empty() {
                return match self
                    .store
                    .append(Append {
                        events,
                        idempotency: None,
                        audit,
                    })
                    .await?
                {
                    AppendOutcome::Committed { first_seq, .. } => Ok((build(first_seq), false)),
                    AppendOutcome::Replayed { .. } => {
                        Err(Error::Internal("replay without a key".into()))
                    }
                };
            }
            let fingerprint: [u8; 32] = Sha256::digest(
                serde_json::to_vec(request).map_err(|e| Error::Internal(e.to_string()))?,
            )
            .into();
            let claim = IdempotencyClaim {
                key: format!("{namespace}:{key}"),
                fingerprint,
                respond: Box::new(move |first_seq| {
                    serde_json::to_vec(&build(first_seq)).unwrap_or_default()
                }),
            };
            let decode = |bytes: &[u8]| {
                serde_json::from_slice::<R>(bytes).map_err(|e| {
                    Error::Internal(format!("stored idempotent answer unreadable: {e}"))
                })
            };
            match self
                .store
                .append(Append {
                    events,
                    idempotency: Some(claim),
                    audit,
                })
                .await?
            {
                AppendOutcome::Committed {
                    response: Some(bytes),
                    ..
                } => Ok((decode(&bytes)?, false)),
                AppendOutcome::Committed { response: None, .. } => Err(Error::Internal(
                    "store kept no answer for an idempotent write".into(),
                )),
                AppendOutcome::Replayed { response } => Ok((decode(&response)?, true)),
            }
        }
        .await;
        if let Err(e) = &out {
            crate::telemetry::write_error(namespace, e.kind());
        }
        out
    }
}
