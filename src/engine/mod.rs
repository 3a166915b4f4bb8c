//! The one core every transport calls: validates, decides from the index, writes through the store.
mod access;
mod args;
mod attempts;
mod audit;
mod check;
mod consent;
mod dnc;
mod identity;
pub mod images;
mod import;
mod inbound;
mod privacy;
mod projection;
mod records;
mod registry;
mod watch;
mod webhooks;
mod writes;

pub use crate::policy::Policies;
pub use args::{Arg, When, time_arg};
pub use attempts::{
    AttemptRequest, AttemptResult, AttemptsOutcome, MAX_AHEAD_MS, RecordAttemptsRequest,
};
pub use audit::{AUDIT_PAGE, AuditRange};
pub use check::BatchOutcome;
pub use check::{BatchChecks, CheckOutcome, CheckRequest, echoable};
pub use consent::{ConsentOutcome, ConsentRequest, ContactView};
pub use dnc::{
    AddEntriesRequest, DncEntryRequest, EntriesOutcome, EntryResult, EntryStatus, EntryView,
    RemoveEntriesRequest, RemoveEntryRequest,
};
pub use identity::{LinkOutcome, LinkRequest};
pub use import::{ConsentImport, ImportChunk, ImportReject, ImportRow, MAX_REJECTS};
pub use inbound::{InboundOutcome, InboundRequest};
pub use privacy::{RegisterOutcome, RequestView, SubmitRequest};
pub use projection::Projection;
pub use registry::{RegistryUpload, UploadChunk};

use crate::audit::Tokenizer;
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::keywords::Inbound;
use crate::model::{ContactRef, Millis, StoredEvent};
use crate::normalize::{self, PhoneNormalizer, Region};
use crate::privacy::PrivacyState;
use crate::registry::Registries;
use crate::store::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// Most items one batch call takes (checks, DNC entries).
pub const MAX_BATCH: usize = 10_000;

/// Refuses a call carrying more than MAX_BATCH items in `field`.
pub fn check_batch_len(field: &str, n: usize) -> crate::error::Result<()> {
    if n > MAX_BATCH {
        return Err(crate::error::Error::ResourceExhausted(format!(
            "{field}: {n} items, at most {MAX_BATCH} per call"
        )));
    }
    Ok(())
}

pub struct EngineSettings {
    /// How long a removed DNC entry stays in the archive when the caller names no date.
    pub archive_retention_ms: Millis,
    /// Registry imports with more malformed lines than this fraction are refused.
    pub max_reject_fraction: f64,
    pub inbound: Inbound,
    /// Where ACCESS bundles are written.
    pub export_dir: PathBuf,
    /// How long a bundle stays after its request completed.
    pub export_ttl_ms: Millis,
    /// Where change events are delivered as webhooks.
    pub webhooks: Vec<crate::webhooks::Endpoint>,
}

pub struct Engine {
    index: Arc<Index>,
    registries: Arc<Registries>,
    store: Arc<dyn Store>,
    policies: Policies,
    clock: SharedClock,
    phones: PhoneNormalizer,
    settings: EngineSettings,
    privacy: Arc<PrivacyState>,
    tokenizer: Tokenizer,
    /// Privacy writes check-then-write (one consumer per identifier): one at a time.
    privacy_lock: tokio::sync::Mutex<()>,
    counters: crate::telemetry::DecisionCounters,
    images: Option<Arc<images::Images>>,
    webhooks: crate::webhooks::Webhooks,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        projection: &Projection,
        registries: Arc<Registries>,
        store: Arc<dyn Store>,
        policies: Policies,
        clock: SharedClock,
        default_region: Region,
        mut settings: EngineSettings,
    ) -> Engine {
        let webhooks = crate::webhooks::Webhooks::new(std::mem::take(&mut settings.webhooks));
        Engine {
            index: projection.index.clone(),
            registries,
            store,
            policies,
            clock,
            phones: PhoneNormalizer::new(default_region),
            settings,
            webhooks,
            privacy: projection.privacy.clone(),
            tokenizer: projection.tokenizer.clone(),
            privacy_lock: tokio::sync::Mutex::new(()),
            counters: crate::telemetry::DecisionCounters::new(),
            images: projection.images.clone(),
        }
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    pub fn registries(&self) -> &Arc<Registries> {
        &self.registries
    }

    /// Change-log events after `after`, at most `limit`, in seq order.
    pub fn read_events(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        Ok(self.store.read_events(after, limit)?)
    }

    /// Sets the gauges that describe state rather than events, just before a scrape renders.
    pub fn refresh_gauges(&self) {
        let now = self.clock.now_ms();
        crate::telemetry::index_state(self.index.seq(), self.index.age_ms(now), &self.index_size());
        if let Some(s) = self.image_status() {
            crate::telemetry::image_state(s.newest_seq, s.newest_bytes);
        }
        for l in self.registries.list() {
            crate::telemetry::registry_state(&l.name, l.count, l.version, l.imported_at);
        }
        if let Ok(last) = self.store.last_seq() {
            self.webhooks.refresh_gauges(last);
        }
        self.privacy_metrics();
    }

    /// The index images, for a store that keeps them here (the embedded one).
    pub fn image_status(&self) -> Option<images::ImageStatus> {
        self.images.as_ref().map(|i| i.status())
    }

    /// Writes an index image of the log as it is now, in the calling thread (the builder
    /// does the same in the background): what an operator asks for before a planned restart.
    pub fn write_image(&self) -> Result<Option<images::ImageWritten>> {
        let Some(images) = &self.images else {
            return Err(Error::FailedPrecondition(
                "this store keeps no index images (Redis replicas load the shared snapshot)".into(),
            ));
        };
        let last = self.store.last_seq()?;
        images
            .build(&*self.store, &self.tokenizer, last)
            .map_err(|e| {
                images.failed(e.clone());
                Error::Unavailable(format!("index image: {e}"))
            })
    }

    /// How big the index and the store are.
    pub fn index_size(&self) -> crate::telemetry::IndexSize {
        crate::telemetry::IndexSize {
            identifiers: self.index.len(),
            bytes: self.index.bytes(),
            store_bytes: self.store.bytes(),
        }
    }

    /// Whether this replica should take traffic: its index holds a full load, has heard
    /// from a shared store within the strictest policy's `max_staleness_ms` (past it that
    /// policy's checks BLOCK with INDEX_STALE here, while a replica that still hears could
    /// answer), and its store can make writes durable (checks answer from the index either
    /// way). Err says why not.
    pub fn readiness(&self) -> std::result::Result<(), String> {
        if !self.index.ready() {
            return Err("the index has not finished loading".into());
        }
        if let Some(limit) = self.policies.strictest_staleness() {
            let age = self.index.age_ms(self.now());
            if age > limit {
                return Err(format!(
                    "the index has not heard from the store for {age} ms (a policy's max_staleness_ms is {limit})"
                ));
            }
        }
        self.store
            .writable()
            .map_err(|why| format!("writes cannot be made durable: {why}"))
    }

    /// Whether this is one replica of a store others write to (Redis).
    pub fn store_shared(&self) -> bool {
        self.store.shared()
    }

    /// The store and how it is doing (kind, and for a shared store its connection).
    pub fn store_description(&self) -> serde_json::Value {
        self.store.describe()
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    fn region(&self, field: &str, region: &str) -> Result<Option<Region>> {
        if region.trim().is_empty() {
            return Ok(None);
        }
        Region::parse(region)
            .map(Some)
            .map_err(|e| Error::invalid(field, e.to_string()))
    }

    /// Normalizes a contact for a write, naming the field on failure, and puts it into the
    /// current span as the logs may show it: masked in its normalized form, or only its
    /// length and kind when it does not parse (masking the raw input kept 9 of 10 digits).
    fn logged_contact<'a>(
        &self,
        field: &'static str,
        input: &'a str,
        region: Option<Region>,
    ) -> Result<ContactRef<'a>> {
        let parsed = self.contact(field, input, region);
        let shown = match &parsed {
            Ok(c) => c.to_key().masked(),
            Err(_) => crate::model::ids::describe_unparsed(input),
        };
        tracing::Span::current().record(field, tracing::field::display(shown));
        parsed
    }

    /// Normalizes a contact for a write or a lookup, naming the field on failure.
    fn contact<'a>(
        &self,
        field: &str,
        input: &'a str,
        region: Option<Region>,
    ) -> Result<ContactRef<'a>> {
        normalize::contact(&self.phones, input, region).map_err(|e| match e {
            normalize::ContactError::TooLong(_) => Error::invalid(field, e.to_string()),
            _ => Error::invalid(
                field,
                format!(
                    "`{}` is not a valid contact: {e}",
                    crate::model::ids::quote(input)
                ),
            ),
        })
    }
}
