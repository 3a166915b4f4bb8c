//! Remembered answers under idempotency keys, in the one layout both stores keep:
//! recorded-at (8 bytes, little-endian ms), the request's fingerprint (32 bytes), the answer.
use super::{AppendOutcome, IdempotencyClaim, StoreError};
use crate::model::Millis;

/// The erased identifiers' text forms, to find remembered answers (and keys) naming them:
/// a consent outcome carries the normalized contact.
pub struct Naming(Vec<String>);

impl Naming {
    pub fn new(contacts: &[crate::model::ContactKey]) -> Naming {
        Naming(contacts.iter().map(|c| c.to_string()).collect())
    }

    /// Whether `hay` holds any of the identifiers.
    pub fn found_in(&self, hay: &[u8]) -> bool {
        self.0
            .iter()
            .any(|n| !n.is_empty() && hay.windows(n.len()).any(|w| w == n.as_bytes()))
    }
}

/// The bytes to keep under `claim.key` for an answer first given at `at`.
pub fn encode(at: Millis, fingerprint: &[u8; 32], response: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + response.len());
    v.extend_from_slice(&at.to_le_bytes());
    v.extend_from_slice(fingerprint);
    v.extend_from_slice(response);
    v
}

/// When a kept answer was first given (0 when the bytes do not say).
pub fn recorded_at(kept: &[u8]) -> Millis {
    kept.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_le_bytes)
        .unwrap_or(0)
}

/// The answer to a retry under a key already used: the first answer when the request is
/// the same, a conflict when it is another. Redis answers written before this layout
/// (fingerprint then answer, no time) are still read until they expire.
pub fn replay(kept: &[u8], claim: &IdempotencyClaim) -> Result<AppendOutcome, StoreError> {
    if kept.len() >= 40 && kept[8..40] == claim.fingerprint {
        return Ok(AppendOutcome::Replayed {
            response: kept[40..].to_vec(),
        });
    }
    if kept.len() >= 32 && kept[..32] == claim.fingerprint {
        return Ok(AppendOutcome::Replayed {
            response: kept[32..].to_vec(),
        });
    }
    Err(StoreError::IdempotencyConflict(claim.key.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(fp: u8) -> IdempotencyClaim {
        IdempotencyClaim {
            key: "k".into(),
            fingerprint: [fp; 32],
            respond: Box::new(|_| Vec::new()),
        }
    }

    #[test]
    fn same_request_replays_another_conflicts() {
        let kept = encode(1_700_000_000_000, &[7; 32], b"answer");
        assert_eq!(recorded_at(&kept), 1_700_000_000_000);
        assert_eq!(
            replay(&kept, &claim(7)),
            Ok(AppendOutcome::Replayed {
                response: b"answer".to_vec()
            })
        );
        assert!(matches!(
            replay(&kept, &claim(8)),
            Err(StoreError::IdempotencyConflict(_))
        ));
        let mut legacy = vec![7u8; 32];
        legacy.extend_from_slice(b"old");
        assert_eq!(
            replay(&legacy, &claim(7)),
            Ok(AppendOutcome::Replayed {
                response: b"old".to_vec()
            })
        );
    }
}
