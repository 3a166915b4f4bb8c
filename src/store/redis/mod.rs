//! Redis as the shared source of truth for many replicas: atomic commits through one Lua
//! script, a Redis Stream change log with pub/sub notices, snapshots under a lease, and
//! registry versions as chunked blobs.
//!
//! Keys all carry one hash tag (`{prefix}`), so the layout also fits one Redis Cluster slot.
mod backfill;
mod chunks;
mod commit;
pub mod conn;
mod copy;
mod follow;
pub mod image;
pub mod log;
mod mirror;
mod registry;
mod settings;
mod snapshot;

use super::{Append, AppendOutcome, Erasure, ErasureOutcome, Stamped, Store, StoreError};
use crate::audit::RawAudit;
use crate::clock::SharedClock;
use crate::model::{Millis, StoredEvent, Token};
use crate::registry::{Registries, RegistrySet};
use crate::store::EventSink;
use conn::Redis;
use futures::future::BoxFuture;
use log::{LogCache, LogEntry};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};

pub use follow::load_projection;
pub use settings::RedisConfig;

#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Where the master is: a URL, or the sentinels to ask.
    pub target: conn::Target,
    pub tls: conn::TlsFiles,
    /// Key prefix; replicas sharing one prefix share one store.
    pub prefix: String,
    /// Connect and response timeout; a write fails `Unavailable` after it.
    pub timeout: Duration,
    /// How often a replica asks Redis where the log is, idle or not.
    pub heartbeat: Duration,
    /// Events between snapshots.
    pub snapshot_every: u64,
    /// Entries left in the stream behind a snapshot, for replicas a little behind.
    pub stream_keep: u64,
    /// Events between index images (see `RedisConfig::image_every`).
    pub image_every: u64,
    pub idempotency_ttl_ms: Millis,
    /// Redis replicas that must hold a commit before it is acknowledged (WAIT).
    pub min_replicas_ack: u32,
    pub replica_ack_timeout: Duration,
    /// Where this replica keeps its copy of the audit trail and idempotency records (to put
    /// an emptied Redis back whole); None keeps none.
    pub copy_path: Option<std::path::PathBuf>,
    /// Where this replica keeps its copy of the change log (an unnamed file); None keeps
    /// it in memory.
    pub log_dir: Option<std::path::PathBuf>,
}

impl RedisOptions {
    pub fn new(url: &str) -> RedisOptions {
        RedisOptions {
            target: conn::Target::Url(url.to_string()),
            tls: conn::TlsFiles::default(),
            min_replicas_ack: 0,
            replica_ack_timeout: Duration::from_secs(1),
            copy_path: None,
            log_dir: None,
            prefix: "preflight".into(),
            timeout: Duration::from_secs(2),
            heartbeat: Duration::from_millis(500),
            snapshot_every: 100_000,
            stream_keep: 10_000,
            image_every: 1_000_000,
            idempotency_ttl_ms: 48 * 3_600_000,
        }
    }
}

/// Saves a webhook record unless the stored generation is above ARGV[1]; then answers the
/// stored generation and record.
const SAVE_CURSOR: &str = r#"
local g = redis.call('HGET', KEYS[1], 'gen')
if g and tonumber(g) > tonumber(ARGV[1]) then return {g, redis.call('HGET', KEYS[1], 'rec')} end
redis.call('HSET', KEYS[1], 'gen', ARGV[2], 'rec', ARGV[3])
return {}
"#;

impl RedisOptions {
    /// Where the store is, for logs and /readyz: the URL without its password, or the
    /// sentinels and the master's name.
    pub fn describe_target(&self) -> String {
        match &self.target {
            conn::Target::Url(u) => conn::masked_url(u),
            conn::Target::Sentinel(s) => {
                format!("sentinel {} master `{}`", s.sentinels.join(","), s.master)
            }
            conn::Target::Cluster(c) => format!("cluster {}", c.nodes.join(",")),
        }
    }
}

/// Key names.
#[derive(Clone)]
pub struct Keys {
    tag: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            tag: format!("{{{prefix}}}"),
        }
    }
    fn k(&self, s: &str) -> String {
        format!("{}:{s}", self.tag)
    }
    pub fn seq(&self) -> String {
        self.k("seq")
    }
    /// With `min_replicas_ack`: the last seq known to be on the Redis replicas, which
    /// followers do not apply past.
    pub fn acked(&self) -> String {
        self.k("acked")
    }
    /// Random id of this store's lineage; a Redis that lost its data has another (or none).
    pub fn epoch(&self) -> String {
        self.k("epoch")
    }
    /// Fingerprint of the privacy key; every replica must hash erased identifiers alike.
    pub fn key_id(&self) -> String {
        self.k("key_id")
    }
    /// The audit chain's head: "<next seq> <previous hash>".
    pub fn head(&self) -> String {
        self.k("audit:head")
    }
    pub fn log(&self) -> String {
        self.k("log")
    }
    pub fn audit(&self) -> String {
        self.k("audit")
    }
    pub fn personal(&self) -> String {
        self.k("audit:personal")
    }
    pub fn subject(&self, t: &Token) -> String {
        self.k(&format!("audit:subject:{}", hex::encode(t)))
    }
    pub fn idem(&self, key: &str) -> String {
        self.k(&format!("idem:{key}"))
    }
    pub fn snap(&self) -> String {
        self.k("snap")
    }
    pub fn snap_chunk_prefix(&self) -> String {
        self.k("snap:")
    }
    pub fn snap_chunk(&self, id: &str, i: usize) -> String {
        format!("{}{id}:{i}", self.snap_chunk_prefix())
    }
    /// One block of the log (entries `first..=last`, gzip), as a snapshot's directory names
    /// it; a rewritten block gets a new key.
    pub fn block(&self, first: u64, last: u64, id: &str) -> String {
        self.k(&format!("blk:{first}-{last}-{id}"))
    }
    /// Chunks of an index image (named in `snap` as `img`, `img_seq`, `img_chunks`).
    pub fn img_chunk_prefix(&self) -> String {
        self.k("img:")
    }
    pub fn img_chunk(&self, id: &str, i: usize) -> String {
        format!("{}{id}:{i}", self.img_chunk_prefix())
    }
    pub fn lease(&self) -> String {
        self.k("lease")
    }
    /// A webhook endpoint's delivery record: hash of `gen` and `rec`.
    pub fn webhook(&self, endpoint: &str) -> String {
        self.k(&format!("webhook:{endpoint}"))
    }
    /// Names of idempotency keys as they are set (`k`) and hashes of those an erasure
    /// forgot (`h`): what replicas follow to keep their copy.
    pub fn idem_log(&self) -> String {
        self.k("idem-log")
    }
    /// A named lease other than the snapshot's (`webhook:<endpoint>`).
    pub fn named_lease(&self, name: &str) -> String {
        self.k(&format!("lease:{name}"))
    }
    /// Seq of an erasure whose subjects the stream and snapshot still hold in clear.
    pub fn scrub(&self) -> String {
        self.k("scrub")
    }
    /// Seq of the latest erasure: no index image from before it is installed.
    pub fn erased(&self) -> String {
        self.k("erased")
    }
    pub fn registries(&self) -> String {
        self.k("registries")
    }
    /// Chunk `i` of one upload (`blob`) of a list version.
    pub fn registry_chunk(&self, list: &str, version: u64, blob: &str, i: usize) -> String {
        self.k(&format!("registry:{list}:{version}:{blob}:{i}"))
    }
    pub fn channel(&self) -> String {
        self.k("changes")
    }
    pub fn registry_channel(&self) -> String {
        self.k("registry-changes")
    }
}

/// What replicas share between the write task, the follower and the store's readers.
pub(crate) struct Shared {
    redis: Redis,
    keys: Keys,
    /// The index side: every event this replica applies goes here.
    sink: Arc<dyn EventSink>,
    registries: Arc<Registries>,
    clock: SharedClock,
    opts: RedisOptions,
    /// This process, as lease owner.
    owner: String,
    state: std::sync::Mutex<ReplicaState>,
    snapshot_wanted: Notify,
    /// This replica's copy of the audit trail and idempotency records.
    copy: Option<Arc<copy::Copy>>,
    /// Seq of the last snapshot this replica knows of.
    snap_seq: AtomicU64,
    /// Seq of the newest index image in Redis this replica knows of (0: none).
    image_seq: AtomicU64,
    /// An index image build of this replica's is under way.
    imaging: std::sync::atomic::AtomicBool,
    /// A snapshot of this replica's is under way.
    snapshotting: std::sync::atomic::AtomicBool,
    /// The next snapshot scrubs an erasure (trims the stream right up to it).
    snapshot_scrub: std::sync::atomic::AtomicBool,
    /// A sync of this replica's copy is under way.
    mirroring: std::sync::atomic::AtomicBool,
    /// The audit head and idempotency log id the last heartbeat read, for the copy's sync.
    copy_due: std::sync::Mutex<Option<(Option<String>, Option<String>)>>,
    status: std::sync::Mutex<Status>,
}

#[derive(Default)]
struct ReplicaState {
    /// The lineage this replica loaded; None until the first load.
    epoch: Option<String>,
    cache: LogCache,
    /// Bumped each time another copy is adopted: what a snapshot uploaded from one copy
    /// marks on it only.
    generation: u64,
}

#[derive(Default, Clone)]
struct Status {
    connected: bool,
    last_error: Option<String>,
    reseeds: u64,
    snapshots_written: u64,
    images_written: u64,
    /// Where this replica's index came from at start: the image's seq and the events
    /// replayed after it (None: no image was loaded).
    started_from_image: Option<(u64, u64)>,
    /// Log blocks before the image fetched after this replica began serving.
    blocks_fetched_late: u64,
}

impl Shared {
    fn epoch(&self) -> Option<String> {
        self.lock().epoch.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplicaState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `cache` this replica's log copy, on disk when the replica has a directory for
    /// it (a new file: the one of the copy it replaces goes with that copy).
    fn adopt(&self, st: &mut ReplicaState, mut cache: LogCache) {
        if let Some(dir) = &self.opts.log_dir {
            match log::BlockFile::create_in(dir) {
                Ok(f) => cache.spill_to(f),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot create the log copy's file; keeping the log in memory")
                }
            }
        }
        st.cache = cache;
        st.generation += 1;
    }

    fn copy_due(&self) -> std::sync::MutexGuard<'_, Option<(Option<String>, Option<String>)>> {
        self.copy_due.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How far followers may apply, given the store's seq and acknowledged seq.
    fn visible(&self, seq: u64, acked: Option<u64>) -> u64 {
        match (self.opts.min_replicas_ack, acked) {
            (0, _) | (_, None) => seq,
            (_, Some(a)) => seq.min(a),
        }
    }

    fn failed(&self, kind: &'static str, e: &dyn std::fmt::Display) {
        crate::telemetry::sync_error(kind);
        let mut s = self.status();
        s.connected = false;
        let why = format!("{kind}: {e}");
        // Once per distinct fault: a Redis that stays away is not a line every heartbeat.
        if s.last_error.as_deref() != Some(why.as_str()) {
            tracing::warn!(target_store = %self.opts.describe_target(), "redis: {why}");
        }
        s.last_error = Some(why);
    }

    /// Applies `entries` under the state lock; see `apply_entries`.
    fn apply(&self, entries: &[LogEntry]) -> Result<(), u64> {
        apply_entries(&*self.sink, Some(&mut self.lock().cache), entries)
    }

    /// The events at `seqs` (sorted) from this replica's copy of the log.
    fn events_at(&self, seqs: &[u64]) -> Result<Vec<StoredEvent>, StoreError> {
        let cache = self.lock().cache.clone();
        backfill::fetch_sync(self, &cache.unfetched_for(seqs))?;
        cache.events_at(seqs)
    }

    fn key_id(&self) -> String {
        key_id(self.sink.tokenizer())
    }

    fn heard(&self) {
        self.sink.heard_from_store(self.clock.now_ms());
        let mut s = self.status();
        s.connected = true;
        s.last_error = None;
    }
}

/// A fingerprint of the privacy key (a token of a fixed name), safe to store.
pub fn key_id(tokenizer: &crate::audit::Tokenizer) -> String {
    hex::encode(tokenizer.token(&crate::model::ContactRef::External("preflight:key-id")))
}

pub struct RedisStore {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<commit::Job>,
}

impl RedisStore {
    /// Starts the write task and the follower, and returns at once: the replica answers
    /// (NOT_SERVING, checks blocked) while it connects and loads in the background.
    /// `preloaded`: what `image::preload` read, already replayed into `sink`.
    pub fn start(
        opts: RedisOptions,
        sink: Arc<dyn EventSink>,
        registries: Arc<Registries>,
        clock: SharedClock,
        preloaded: Option<image::Preloaded>,
    ) -> Result<RedisStore, StoreError> {
        let redis = Redis::open(opts.target.clone(), opts.tls.clone(), opts.timeout)?;
        let copy = match &opts.copy_path {
            Some(p) => Some(Arc::new(copy::Copy::open(p)?)),
            None => None,
        };
        let shared = Arc::new(Shared {
            copy,
            redis,
            keys: Keys::new(&opts.prefix),
            sink,
            registries,
            clock,
            owner: hex::encode(rand::random::<[u8; 8]>()),
            opts,
            state: Default::default(),
            snapshot_wanted: Notify::new(),
            snap_seq: AtomicU64::new(0),
            image_seq: AtomicU64::new(0),
            imaging: Default::default(),
            snapshotting: Default::default(),
            snapshot_scrub: Default::default(),
            mirroring: Default::default(),
            copy_due: Default::default(),
            status: Default::default(),
        });
        match preloaded {
            Some(p) => {
                shared.snap_seq.store(p.snap_seq, Ordering::Relaxed);
                if let Some((seq, _)) = p.started_from {
                    shared.image_seq.store(seq, Ordering::Relaxed);
                }
                shared.status().started_from_image = p.started_from;
                shared.adopt(&mut shared.lock(), p.cache);
            }
            None => shared.adopt(&mut shared.lock(), LogCache::default()),
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(commit::Committer::new(shared.clone()).run(rx));
        tokio::spawn(follow::run(shared.clone()));
        backfill::spawn(&shared);
        Ok(RedisStore { shared, tx })
    }

    fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> commit::Job,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(job(reply));
        Box::pin(async move {
            sent.map_err(|_| StoreError::Unavailable("the redis writer has stopped".into()))?;
            rx.await
                .map_err(|_| StoreError::Unavailable("the redis writer has stopped".into()))?
        })
    }

    fn audit_at(&self, seqs: &[u64]) -> Result<Vec<RawAudit>, StoreError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let k = &self.shared.keys;
        let mut records = redis::cmd("HMGET");
        records.arg(k.audit());
        let mut personal = redis::cmd("HMGET");
        personal.arg(k.personal());
        for s in seqs {
            records.arg(*s);
            personal.arg(*s);
        }
        let r: Vec<Option<Vec<u8>>> = self.shared.redis.query_sync(&records)?;
        let p: Vec<Option<Vec<u8>>> = self.shared.redis.query_sync(&personal)?;
        Ok(seqs
            .iter()
            .zip(r.into_iter().zip(p))
            .filter_map(|(seq, (record, personal))| {
                record.map(|record| RawAudit {
                    seq: *seq,
                    record,
                    personal,
                })
            })
            .collect())
    }
}

impl Store for RedisStore {
    fn append(&self, req: Append) -> BoxFuture<'static, Result<AppendOutcome, StoreError>> {
        self.submit(|reply| commit::Job::Append(req, reply))
    }

    fn erase(&self, req: Erasure) -> BoxFuture<'static, Result<ErasureOutcome, StoreError>> {
        self.submit(|reply| commit::Job::Erase(req, reply))
    }

    /// From this replica's copy of the log, which holds everything it has applied.
    fn read_events(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let cache = self.shared.lock().cache.clone();
        backfill::fetch_sync(&self.shared, &cache.unfetched_after(after, limit))?;
        cache.events_after(after, limit)
    }

    fn read_event(&self, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
        Ok(self.shared.events_at(&[seq])?.pop())
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        let v: Option<u64> = self
            .shared
            .redis
            .query_sync(redis::cmd("GET").arg(self.shared.keys.seq()))?;
        Ok(v.unwrap_or(0))
    }

    fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<RawAudit>, StoreError> {
        let seqs: Vec<u64> = (after + 1..=after.saturating_add(limit as u64)).collect();
        let mut out = self.audit_at(&seqs)?;
        // Audit seqs have no holes: stop at the first one not written yet.
        if let Some(i) = out
            .iter()
            .enumerate()
            .position(|(i, r)| r.seq != after + 1 + i as u64)
        {
            out.truncate(i);
        }
        Ok(out)
    }

    fn audit_seqs_for(&self, token: &Token) -> Result<Vec<u64>, StoreError> {
        self.shared.redis.query_sync(
            redis::cmd("ZRANGE")
                .arg(self.shared.keys.subject(token))
                .arg(0)
                .arg(-1),
        )
    }

    fn read_audit_at(&self, seqs: &[u64]) -> Result<Vec<RawAudit>, StoreError> {
        self.audit_at(seqs)
    }

    fn publish_registry(
        &self,
        set: Arc<RegistrySet>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let shared = self.shared.clone();
        Box::pin(async move { registry::publish(&shared, set).await })
    }

    fn load_cursor(
        &self,
        endpoint: &str,
    ) -> BoxFuture<'static, Result<Option<Stamped>, StoreError>> {
        let (shared, key) = (self.shared.clone(), self.shared.keys.webhook(endpoint));
        Box::pin(async move {
            let (g, rec): (Option<u64>, Option<Vec<u8>>) = shared
                .redis
                .query(redis::cmd("HMGET").arg(&key).arg("gen").arg("rec"))
                .await?;
            Ok(g.zip(rec)
                .map(|(generation, bytes)| Stamped { generation, bytes }))
        })
    }

    fn save_cursor(
        &self,
        endpoint: &str,
        if_at_most: u64,
        next: Stamped,
    ) -> BoxFuture<'static, Result<Option<Stamped>, StoreError>> {
        let (shared, key) = (self.shared.clone(), self.shared.keys.webhook(endpoint));
        Box::pin(async move {
            let script = redis::Script::new(SAVE_CURSOR);
            let mut inv = script.prepare_invoke();
            inv.key(&key)
                .arg(if_at_most)
                .arg(next.generation)
                .arg(next.bytes);
            let stored: Vec<Vec<u8>> = shared.redis.invoke(&inv).await?;
            match stored.as_slice() {
                [] => Ok(None),
                [g, rec] => {
                    let generation = std::str::from_utf8(g)
                        .ok()
                        .and_then(|g| g.parse().ok())
                        .ok_or_else(|| StoreError::Corrupt(format!("{key}: generation")))?;
                    Ok(Some(Stamped {
                        generation,
                        bytes: rec.clone(),
                    }))
                }
                _ => Err(StoreError::Corrupt(format!("{key}: unexpected answer"))),
            }
        })
    }

    fn hold_lease(&self, name: &str, ttl_ms: u64) -> BoxFuture<'static, Result<bool, StoreError>> {
        let (shared, key) = (self.shared.clone(), self.shared.keys.named_lease(name));
        Box::pin(async move {
            let script = redis::Script::new(snapshot::TAKE_LEASE);
            let mut inv = script.prepare_invoke();
            inv.key(&key).arg(&shared.owner).arg(ttl_ms);
            Ok(shared.redis.invoke::<i64>(&inv).await? == 1)
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn describe(&self) -> serde_json::Value {
        let s = self.shared.status().clone();
        let (log_bytes, to_fetch) = {
            let st = self.shared.lock();
            (st.cache.heap_bytes(), st.cache.unfetched().len())
        };
        serde_json::json!({
            "kind": "redis",
            "target": self.shared.opts.describe_target(),
            "master": self.shared.redis.master().0,
            "failovers": self.shared.redis.master().1,
            "prefix": self.shared.opts.prefix,
            "epoch": self.shared.epoch(),
            "connected": s.connected,
            "last_error": s.last_error,
            "reseeds": s.reseeds,
            "snapshot_seq": self.shared.snap_seq.load(Ordering::Relaxed),
            "snapshots_written": s.snapshots_written,
            "image_seq": Some(self.shared.image_seq.load(Ordering::Relaxed)).filter(|s| *s > 0),
            "images_written": s.images_written,
            "started_from_image_seq": s.started_from_image.map(|(seq, _)| seq),
            "replayed_at_start": s.started_from_image.map(|(_, n)| n),
            "log_cache_bytes": log_bytes,
            "log_blocks_to_fetch": to_fetch,
            "log_blocks_fetched_late": s.blocks_fetched_late,
        })
    }
}

/// Applies `entries` in order to the index, the privacy state and `cache` (this replica's
/// log copy; None while replaying a copy that is already whole). Returns the seq expected
/// next when an entry is missing.
fn apply_entries(
    sink: &dyn EventSink,
    mut cache: Option<&mut LogCache>,
    entries: &[LogEntry],
) -> Result<(), u64> {
    for en in entries {
        let cur = sink.seq();
        if en.seq() <= cur {
            continue;
        }
        if en.seq() != cur + 1 {
            return Err(cur + 1);
        }
        if let crate::model::Event::SubjectsErased(er) = &en.e.event {
            erase_locally(sink, cache.as_deref_mut(), er, &en.r);
        }
        sink.apply(&en.e);
        if let Some(c) = cache.as_deref_mut() {
            c.push(en.clone());
        }
    }
    Ok(())
}

/// Another replica's (or this one's) erasure: find the identifiers by token, move their
/// index entries as the writer did, and rewrite this replica's copy of the log.
fn erase_locally(
    sink: &dyn EventSink,
    cache: Option<&mut LogCache>,
    er: &crate::model::ErasureEvent,
    rider: &[StoredEvent],
) {
    let tokens: Vec<Token> = er
        .tokens
        .iter()
        .filter_map(|k| match k {
            crate::model::ContactKey::Erased(t) => Some(*t),
            _ => None,
        })
        .collect();
    let contacts = sink.contacts_for_tokens(&tokens);
    sink.erased(&contacts, rider);
    let map: std::collections::HashMap<_, _> = contacts
        .iter()
        .map(|c| (c.clone(), sink.tokenizer().token_of(c)))
        .collect();
    let Some(cache) = cache else {
        return;
    };
    if map.is_empty() {
        return;
    }
    let redact = crate::store::redact::shared_redactor(map);
    let rewritten = cache.rewrite(Arc::new(move |en: &mut LogEntry| {
        match redact(&en.e.event) {
            Some(ev) => {
                en.e.event = ev;
                true
            }
            None => false,
        }
    }));
    if let Err(e) = rewritten {
        tracing::error!(error = %e, "cannot rewrite the local log copy for an erasure");
    }
}

impl Shared {
    /// After this replica's own commit: apply, fetching anything other writers put before it.
    async fn applied_own(&self, entries: Vec<LogEntry>) {
        if self.apply(&entries).is_err()
            && let Err(e) = follow::catch_up(self).await
        {
            self.failed("catch_up", &e);
        }
    }

    async fn want_scrub(&self, seq: u64) {
        let script = redis::Script::new(
            "for _, k in ipairs(KEYS) do \
             local c = tonumber(redis.call('GET', k) or '0') \
             if tonumber(ARGV[1]) > c then redis.call('SET', k, ARGV[1]) end end return 1",
        );
        let mut inv = script.prepare_invoke();
        inv.key(self.keys.scrub()).key(self.keys.erased()).arg(seq);
        if let Err(e) = self.redis.invoke::<i64>(&inv).await {
            self.failed("scrub", &e);
        }
        self.snapshot_scrub.store(true, Ordering::Release);
        self.snapshot_wanted.notify_one();
    }
}
