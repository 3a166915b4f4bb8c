//! What the change log is applied to: the decision index and the privacy bookkeeping.
use crate::audit::Tokenizer;
use crate::index::{Applied, Index};
use crate::model::{ContactKey, StoredEvent};
use crate::privacy::PrivacyState;
use crate::store::EventSink;
use std::sync::Arc;

#[derive(Clone)]
pub struct Projection {
    pub index: Arc<Index>,
    pub privacy: Arc<PrivacyState>,
    pub tokenizer: Tokenizer,
    /// The embedded store's index images, which an erasure removes.
    pub images: Option<Arc<super::images::Images>>,
}

impl Projection {
    pub fn new(tokenizer: Tokenizer) -> Projection {
        Projection::with_index(tokenizer, Index::new(), None)
    }

    /// Over an index loaded from an image (or a new one), with its images when it has any.
    pub fn with_index(
        tokenizer: Tokenizer,
        index: Index,
        images: Option<Arc<super::images::Images>>,
    ) -> Projection {
        index.set_tokenizer(tokenizer.clone());
        Projection {
            index: Arc::new(index),
            privacy: Arc::new(PrivacyState::default()),
            tokenizer,
            images,
        }
    }

    /// Applies one event in seq order; the privacy state follows the index.
    pub fn apply_in_order(&self, ev: &StoredEvent) -> Applied {
        let applied = self.index.apply(ev);
        if applied == Applied::Applied {
            self.privacy.apply(ev);
        }
        applied
    }
}

impl EventSink for Projection {
    fn apply(&self, ev: &StoredEvent) {
        if let Applied::Gap { expected } = self.apply_in_order(ev) {
            // The embedded writer hands events over in order, so this means a bug, and
            // the index must not silently skip: it stays at its seq and says so.
            tracing::error!(expected, got = ev.seq, "change log gap while applying");
        }
    }

    fn build_image(
        &self,
        base: Option<&[u8]>,
        read: crate::store::ReadLog,
        until: u64,
    ) -> Result<Vec<u8>, String> {
        super::images::encode_image(&self.tokenizer, base, read, until)
    }

    fn erased(&self, contacts: &[ContactKey], history: &[StoredEvent]) {
        if let Some(images) = &self.images {
            images.invalidate();
        }
        self.index.erase(contacts, history);
    }

    fn seq(&self) -> u64 {
        self.index.seq()
    }

    fn identifiers(&self) -> usize {
        self.index.len()
    }

    fn set_loaded(&self, yes: bool) {
        self.index.set_loaded(yes);
    }

    fn heard_from_store(&self, now: crate::model::Millis) {
        self.index.heard_from_store(now);
    }

    fn fact_seqs(&self, contacts: &[ContactKey]) -> Vec<u64> {
        self.index.fact_seqs(contacts)
    }

    fn contacts_for_tokens(&self, tokens: &[crate::model::Token]) -> Vec<ContactKey> {
        self.index.contacts_for_tokens(tokens)
    }

    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}
