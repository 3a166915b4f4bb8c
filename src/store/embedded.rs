//! The embedded store: redb in the data directory, one writer thread doing group commit.
//!
//! Every request waits for the fsync of the transaction that holds it; requests that
//! arrive while a commit is in flight share the next one. A commit that fails (a full disk)
//! leaves redb refusing every later write until it is reopened, so the writer reopens it,
//! applies whatever did land, and says it cannot write until a probe write succeeds.
use super::blocks::Item;
use super::sequence::{self, Open, Sizing};
use super::subjects;
use super::{
    Append, AppendOutcome, Erasure, ErasureOutcome, EventSink, Stamped, Store, StoreError,
};
use crate::audit::chain::ChainHead;
use crate::audit::{AuditRecord, RawAudit};
use crate::clock::SharedClock;
use crate::model::{Millis, StoredEvent, Token};
use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// Event seq -> the event's JSON (`StoredEvent`): the change log's tail.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// First event seq -> a compressed block of the events from it on.
const EVENT_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("event_blocks");
/// key -> created_at (8 bytes LE) ++ fingerprint (32) ++ response
const IDEM: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
const IDEM_BY_TIME: TableDefinition<(i64, &str), ()> = TableDefinition::new("idempotency_by_time");
/// Audit seq -> the record's JSON (`AuditRecord`), hash-chained: the trail's tail.
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Audit seq -> the record's personal part, removed by erasure (the tail's).
pub const AUDIT_PERSONAL: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_personal");
/// First audit seq -> a compressed block of records from it on, each with its personal part.
const AUDIT_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_blocks");

const EVENT_LOG: sequence::Tables = sequence::Tables {
    blocks: EVENT_BLOCKS,
    main: EVENTS,
    extra: None,
    what: "event",
};
pub const AUDIT_TRAIL: sequence::Tables = sequence::Tables {
    blocks: AUDIT_BLOCKS,
    main: AUDIT,
    extra: Some(AUDIT_PERSONAL),
    what: "audit",
};
/// Written and removed again to find out whether the disk takes writes (see `probe`).
const PROBE: TableDefinition<u8, &[u8]> = TableDefinition::new("write_probe");

/// Webhook endpoint name -> generation (8 bytes LE) ++ its delivery record.
const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhook_cursors");

/// Most requests one commit takes; bounds the latency of the first in line.
const MAX_GROUP: usize = 1024;

type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;
type EraseReply = oneshot::Sender<Result<ErasureOutcome, StoreError>>;

enum Job {
    Append(Append, Reply),
    Erase(Erasure, EraseReply),
}

/// How often the writer retries reopening the database while writes fail.
const RETRY: Duration = Duration::from_secs(1);

/// Free space the data directory's filesystem must have before writes resume after a
/// failure. Right at the edge of a full disk redb's commits fail and succeed by turns as
/// pages free up; callers and readiness get one steady answer instead until space returns.
const HEADROOM: u64 = 8 << 20;

/// The open database, shared by the writer and the readers; empty while the writer reopens
/// it (redb takes a file lock, so the old handle must be gone first).
#[derive(Clone)]
struct Handle(Arc<RwLock<Option<Arc<Database>>>>);

impl Handle {
    fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| unavailable("the store is being reopened after a failed write"))
    }

    fn set(&self, db: Option<Arc<Database>>) -> Option<Arc<Database>> {
        std::mem::replace(&mut *self.0.write().unwrap_or_else(|e| e.into_inner()), db)
    }
}

/// Why writes cannot be made durable right now; None when they can.
#[derive(Clone, Default)]
struct WriteHealth(Arc<Mutex<Option<String>>>);

impl WriteHealth {
    fn set(&self, why: Option<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }
    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub struct EmbeddedStore {
    db: Handle,
    tx: mpsc::Sender<Job>,
    health: WriteHealth,
    /// The data file, for its size.
    path: PathBuf,
}

pub struct EmbeddedOptions {
    /// How long an idempotency key is remembered.
    pub idempotency_retention_ms: Millis,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            idempotency_retention_ms: 48 * 3_600_000,
        }
    }
}

/// redb's page cache. Its default (1 GiB) would fill from the replay at start and stay
/// resident; the index, not this cache, is what reads are served from, so a small one
/// that holds the B-trees' upper levels is enough.
const PAGE_CACHE_BYTES: usize = 64 << 20;

fn open_file(path: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(PAGE_CACHE_BYTES)
        .create(path)
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/preflight.redb`. Replay events into the index with
    /// `read_events` before giving the store a sink.
    pub fn open(dir: &Path) -> Result<Database, StoreError> {
        crate::store::private::data_dir(dir)?;
        let path = dir.join(DB_FILE);
        crate::store::private::file(&path)?;
        let db = open_file(&path)
            .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(unavailable)?;
        {
            txn.open_table(EVENTS).map_err(unavailable)?;
            txn.open_table(EVENT_BLOCKS).map_err(unavailable)?;
            txn.open_table(AUDIT_BLOCKS).map_err(unavailable)?;
            txn.open_table(IDEM).map_err(unavailable)?;
            txn.open_table(IDEM_BY_TIME).map_err(unavailable)?;
            txn.open_table(AUDIT).map_err(unavailable)?;
            txn.open_table(AUDIT_PERSONAL).map_err(unavailable)?;
            let folded = subjects::open_write(&txn)?.fold_legacy()?;
            if folded > 0 {
                tracing::info!(
                    entries = folded,
                    "an earlier store format's audit subject index folded into a sorted run"
                );
            }
        }
        txn.commit().map_err(unavailable)?;
        for def in [EVENT_LOG, AUDIT_TRAIL] {
            let n = sequence::fold(&db, def)?;
            if n > 0 {
                tracing::info!(
                    records = n,
                    kind = def.what,
                    "records of an earlier store format folded into compressed blocks"
                );
            }
        }
        Ok(db)
    }

    /// Starts the writer thread over `db`, opened from `dir` by `open`. `sink` sees every
    /// committed event before its writer is answered.
    pub fn start(
        db: Database,
        dir: &Path,
        sink: Arc<dyn EventSink>,
        clock: SharedClock,
        opts: EmbeddedOptions,
    ) -> Result<Self, StoreError> {
        let next_seq = last_seq_of(&db)? + 1;
        let (audit_next, audit_prev) = audit_head(&db)?;
        let db = Handle(Arc::new(RwLock::new(Some(Arc::new(db)))));
        let health = WriteHealth::default();
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            path: dir.join(DB_FILE),
            health: health.clone(),
            broken: None,
            sink,
            clock,
            next_seq,
            audit_next,
            audit_prev,
            retention: opts.idempotency_retention_ms,
            sizing: Sizings::default(),
        };
        std::thread::Builder::new()
            .name("preflight-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(unavailable)?;
        Ok(EmbeddedStore {
            db,
            tx,
            health,
            path: dir.join(DB_FILE),
        })
    }
}

const DB_FILE: &str = "preflight.redb";

/// The first event seq and the first audit seq still held one by one: everything below
/// them is in compressed blocks.
pub fn block_span(db: &Database) -> Result<(u64, u64), StoreError> {
    let r = db.begin_read().map_err(unavailable)?;
    Ok((
        Open::read(&r, EVENT_LOG)?.tail_start()?,
        Open::read(&r, AUDIT_TRAIL)?.tail_start()?,
    ))
}

pub fn last_seq_of(db: &Database) -> Result<u64, StoreError> {
    let r = db.begin_read().map_err(unavailable)?;
    Open::read(&r, EVENT_LOG)?.last_seq()
}

/// The next audit seq and the hash to chain it to.
fn audit_head(db: &Database) -> Result<(u64, String), StoreError> {
    let r = db.begin_read().map_err(unavailable)?;
    match Open::read(&r, AUDIT_TRAIL)?.last()? {
        None => Ok((1, crate::audit::chain::GENESIS.to_string())),
        Some((seq, it)) => {
            let rec: AuditRecord = serde_json::from_slice(&it.main).map_err(|e| {
                StoreError::Corrupt(format!(
                    "last audit record {seq} unreadable, refusing to extend the chain: {e}"
                ))
            })?;
            Ok((seq + 1, rec.hash))
        }
    }
}

pub fn read_audit_from(
    db: &Database,
    after: u64,
    limit: usize,
) -> Result<Vec<RawAudit>, StoreError> {
    let r = db.begin_read().map_err(unavailable)?;
    let trail = Open::read(&r, AUDIT_TRAIL)?;
    Ok(trail
        .range(after, limit)?
        .into_iter()
        .map(|(seq, it)| raw_audit(seq, it))
        .collect())
}

/// A stored record with its personal part, if that is still held.
fn raw_audit(seq: u64, it: Item) -> RawAudit {
    RawAudit {
        seq,
        record: it.main,
        personal: it.extra,
    }
}

fn read_audit_seqs(db: &Database, seqs: &[u64]) -> Result<Vec<RawAudit>, StoreError> {
    let r = db.begin_read().map_err(unavailable)?;
    let trail = Open::read(&r, AUDIT_TRAIL)?;
    let mut out = Vec::new();
    for &seq in seqs {
        if let Some(it) = trail.get(seq)? {
            out.push(raw_audit(seq, it));
        }
    }
    Ok(out)
}

pub fn read_events_from(
    db: &Database,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let r = db.begin_read().map_err(unavailable)?;
    let log = Open::read(&r, EVENT_LOG)?;
    log.range(after, limit)?
        .into_iter()
        .map(|(seq, it)| parse_event(seq, &it.main))
        .collect()
}

fn parse_event(seq: u64, bytes: &[u8]) -> Result<StoredEvent, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("event {seq}: {e}")))
}

fn read_event_at(db: &Database, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
    let r = db.begin_read().map_err(unavailable)?;
    match Open::read(&r, EVENT_LOG)?.get(seq)? {
        Some(it) => parse_event(seq, &it.main).map(Some),
        None => Ok(None),
    }
}

/// Runs a short redb transaction off the async workers (it may wait for the writer's).
fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> BoxFuture<'static, Result<T, StoreError>> {
    Box::pin(async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| unavailable(format!("store task: {e}")))?
    })
}

fn stamped(v: &[u8]) -> Result<Stamped, StoreError> {
    if v.len() < 8 {
        return Err(StoreError::Corrupt(format!(
            "a webhook cursor of {} bytes",
            v.len()
        )));
    }
    let (g, bytes) = v.split_at(8);
    Ok(Stamped {
        generation: u64::from_le_bytes(g.try_into().unwrap_or_default()),
        bytes: bytes.to_vec(),
    })
}

impl EmbeddedStore {
    /// Hands a job to the writer thread and waits for its answer.
    fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(job(reply));
        Box::pin(async move {
            sent.map_err(|_| unavailable("the store writer has stopped"))?;
            rx.await
                .map_err(|_| unavailable("the store writer has stopped"))?
        })
    }
}

impl Store for EmbeddedStore {
    fn append(&self, req: Append) -> BoxFuture<'static, Result<AppendOutcome, StoreError>> {
        self.submit(|reply| Job::Append(req, reply))
    }

    fn erase(&self, req: Erasure) -> BoxFuture<'static, Result<ErasureOutcome, StoreError>> {
        self.submit(|reply| Job::Erase(req, reply))
    }

    fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<RawAudit>, StoreError> {
        read_audit_from(&*self.db.get()?, after, limit)
    }

    fn audit_seqs_for(&self, token: &Token) -> Result<Vec<u64>, StoreError> {
        let r = self.db.get()?.begin_read().map_err(unavailable)?;
        subjects::open_read(&r)?.seqs_of(token)
    }

    fn read_audit_at(&self, seqs: &[u64]) -> Result<Vec<RawAudit>, StoreError> {
        read_audit_seqs(&*self.db.get()?, seqs)
    }

    fn read_events(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        read_events_from(&*self.db.get()?, after, limit)
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        last_seq_of(&*self.db.get()?)
    }

    fn read_event(&self, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
        read_event_at(&*self.db.get()?, seq)
    }

    fn load_cursor(
        &self,
        endpoint: &str,
    ) -> BoxFuture<'static, Result<Option<Stamped>, StoreError>> {
        let (db, endpoint) = (self.db.clone(), endpoint.to_string());
        blocking(move || {
            let r = db.get()?.begin_read().map_err(unavailable)?;
            let t = match r.open_table(CURSORS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(unavailable(e)),
            };
            let got = t.get(endpoint.as_str()).map_err(unavailable)?;
            got.map(|v| stamped(v.value())).transpose()
        })
    }

    fn save_cursor(
        &self,
        endpoint: &str,
        if_at_most: u64,
        next: Stamped,
    ) -> BoxFuture<'static, Result<Option<Stamped>, StoreError>> {
        let (db, endpoint) = (self.db.clone(), endpoint.to_string());
        blocking(move || {
            let db = db.get()?;
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut t = txn.open_table(CURSORS).map_err(unavailable)?;
                let stored = t
                    .get(endpoint.as_str())
                    .map_err(unavailable)?
                    .map(|v| stamped(v.value()))
                    .transpose()?;
                if let Some(stored) = stored.filter(|s| s.generation > if_at_most) {
                    return Ok(Some(stored));
                }
                let mut value = next.generation.to_le_bytes().to_vec();
                value.extend_from_slice(&next.bytes);
                t.insert(endpoint.as_str(), value.as_slice())
                    .map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)?;
            Ok(None)
        })
    }

    fn writable(&self) -> Result<(), String> {
        match self.health.get() {
            None => Ok(()),
            Some(why) => Err(why),
        }
    }

    fn bytes(&self) -> Option<u64> {
        std::fs::metadata(&self.path).ok().map(|m| m.len())
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "embedded", "writable": self.health.get().is_none(),
            "write_error": self.health.get() })
    }
}

struct Writer {
    db: Handle,
    path: PathBuf,
    health: WriteHealth,
    /// Why the last write failed, until a reopen and a probe write succeed.
    broken: Option<String>,
    sink: Arc<dyn EventSink>,
    clock: SharedClock,
    next_seq: u64,
    audit_next: u64,
    audit_prev: String,
    retention: Millis,
    sizing: Sizings,
}

/// How large the next block of each sequence is made.
#[derive(Default)]
struct Sizings {
    events: Sizing,
    audit: Sizing,
}

/// What one request turned into inside a transaction.
enum Pending {
    Done(Result<AppendOutcome, StoreError>),
    Commit(AppendOutcome, Vec<StoredEvent>),
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut last_purge: Millis = 0;
        loop {
            let wait = if self.broken.is_some() {
                RETRY
            } else {
                Duration::from_secs(60)
            };
            let first = match rx.recv_timeout(wait) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.broken.is_some() {
                        self.recover();
                    } else {
                        self.purge_idempotency();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            if self.broken.is_some() {
                self.recover();
            }
            if let Some(why) = self.broken.clone() {
                // Nothing can be made durable: refuse at once rather than queue.
                let e = unavailable(format!("writes cannot be made durable: {why}"));
                match first {
                    Job::Append(_, r) => drop(r.send(Err(e))),
                    Job::Erase(_, r) => drop(r.send(Err(e))),
                }
                continue;
            }
            let mut group = Vec::new();
            let mut erasure = None;
            match first {
                Job::Append(a, r) => group.push((a, r)),
                Job::Erase(e, r) => erasure = Some((e, r)),
            }
            // An erasure runs alone, after the appends that arrived before it.
            while erasure.is_none() && group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(Job::Append(a, r)) => group.push((a, r)),
                    Ok(Job::Erase(e, r)) => erasure = Some((e, r)),
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.commit_group(group);
            }
            if let Some((e, reply)) = erasure {
                let out = self.erase(e);
                if let Err(StoreError::Unavailable(why)) = &out {
                    self.failed(why);
                }
                let _ = reply.send(out);
            }
            let now = self.clock.now_ms();
            if now - last_purge > 600_000 {
                last_purge = now;
                self.purge_idempotency();
            }
        }
    }

    fn commit_group(&mut self, group: Vec<(Append, Reply)>) {
        let now = self.clock.now_ms();
        let mut next = self.next_seq;
        let mut chain = ChainHead {
            next: self.audit_next,
            prev: self.audit_prev.clone(),
        };
        let (requests, replies): (Vec<Append>, Vec<Reply>) = group.into_iter().unzip();
        let db = match self.db.get() {
            Ok(db) => db,
            Err(e) => return fail_all(replies, &e),
        };
        let staged = stage(&db, requests, now, &mut next, &mut chain, &mut self.sizing);
        let (txn, pending) = match staged {
            Ok(s) => s,
            Err(e) => {
                // The transaction was dropped unfinished: nothing of this group is written.
                tracing::error!(error = %e, "store write failed before commit");
                fail_all(replies, &e);
                drop(db);
                if let StoreError::Unavailable(why) = &e {
                    self.failed(why);
                }
                return;
            }
        };
        let committed = txn.commit();
        drop(db);
        match committed {
            Ok(()) => {
                self.next_seq = next;
                self.audit_next = chain.next;
                self.audit_prev = chain.prev;
                self.answer(pending, replies);
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                fail_all(replies, &unavailable(format!("commit failed: {e}")));
                self.failed(&format!("commit failed: {e}"));
            }
        }
    }

    /// After the commit: the committed events go to the sink, then each caller is answered.
    fn answer(&self, pending: Vec<Pending>, replies: Vec<Reply>) {
        for (p, reply) in pending.into_iter().zip(replies) {
            let outcome = match p {
                Pending::Done(outcome) => outcome,
                Pending::Commit(outcome, stored) => {
                    for ev in &stored {
                        self.sink.apply(ev);
                    }
                    Ok(outcome)
                }
            };
            let _ = reply.send(outcome);
        }
    }

    /// Compacts the database file, with the handle taken from readers for the while.
    fn compact(&mut self) -> Result<(), StoreError> {
        let mut db = self.exclusive()?;
        let out = db
            .compact()
            .map(|_| ())
            .map_err(|e| unavailable(format!("compaction: {e}")));
        self.db.set(Some(Arc::new(db)));
        out
    }

    /// Zero-fills the pages compaction left free (see `store::scrub`).
    fn scrub_free_pages(&mut self) -> Result<(), StoreError> {
        super::scrub::zero_free_pages(&*self.db.get()?).map_err(unavailable)?;
        self.compact()
    }

    /// The database for this thread alone: taken out of the shared handle once readers let
    /// go of it (they hold it for one read at most). Readers get UNAVAILABLE meanwhile.
    fn exclusive(&mut self) -> Result<Database, StoreError> {
        let Some(mut old) = self.db.set(None) else {
            return Err(unavailable("the store is not open"));
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match Arc::try_unwrap(old) {
                Ok(db) => return Ok(db),
                Err(still) if std::time::Instant::now() < deadline => {
                    old = still;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(still) => {
                    self.db.set(Some(still));
                    return Err(unavailable("readers still hold the database"));
                }
            }
        }
    }

    /// A write failed: redb refuses every later write until it is reopened, so reopen now.
    fn failed(&mut self, why: &str) {
        tracing::error!(error = %why, "store write failed; reopening the database");
        self.broken = Some(why.to_string());
        self.health.set(Some(why.to_string()));
        self.recover();
    }

    /// Reopens the database, applies what landed of a commit reported as failed, and
    /// clears the failure once a probe write is durable.
    fn recover(&mut self) {
        match self.reopen() {
            Ok(()) => {
                tracing::warn!(next_seq = self.next_seq, "store writable again");
                self.broken = None;
                self.health.set(None);
            }
            Err(e) => {
                let why = e.to_string();
                tracing::debug!(error = %why, "store still not writable");
                self.health.set(Some(why.clone()));
                self.broken = Some(why);
            }
        }
    }

    fn reopen(&mut self) -> Result<(), StoreError> {
        if self.db.get().is_ok() {
            drop(self.exclusive()?);
        }
        if let Some(free) = free_bytes(&self.path)
            && free < HEADROOM
        {
            return Err(unavailable(format!(
                "{} bytes free where the data directory is, {HEADROOM} needed to resume writes",
                free
            )));
        }
        let db = open_file(&self.path)
            .map_err(|e| unavailable(format!("cannot reopen {}: {e}", self.path.display())))?;
        let db = Arc::new(db);
        self.db.set(Some(db.clone()));
        // A commit reported as failed may have landed: its events are applied now, once
        // (the sink ignores what it has), and its idempotency record answers a retry.
        let last = last_seq_of(&db)?;
        while self.next_seq <= last {
            let events = read_events_from(&db, self.next_seq - 1, 10_000)?;
            if events.is_empty() {
                break;
            }
            for ev in &events {
                self.sink.apply(ev);
                self.next_seq = ev.seq + 1;
            }
        }
        let (audit_next, audit_prev) = audit_head(&db)?;
        self.audit_next = audit_next;
        self.audit_prev = audit_prev;
        probe(&db)
    }

    /// Rewrites the history of the erased subjects, strips the personal part of their audit
    /// records and appends the erasure event, in one transaction.
    fn erase(&mut self, req: Erasure) -> Result<ErasureOutcome, StoreError> {
        let now = self.clock.now_ms();
        let mut next = self.next_seq;
        let mut chain = ChainHead {
            next: self.audit_next,
            prev: self.audit_prev.clone(),
        };
        let db = self.db.get()?;
        let txn = db.begin_write().map_err(unavailable)?;
        let mut history: std::collections::BTreeMap<u64, StoredEvent> = Default::default();
        let mut rewritten = 0;
        let mut stripped = 0;
        let first_seq = next;
        let appended;
        {
            let mut events = Open::write(&txn, EVENT_LOG)?;
            let mut audit = AuditTables::open(&txn)?;
            let mut seqs = BTreeSet::new();
            for t in &req.tokens {
                seqs.extend(audit.subjects.seqs_of(t)?);
            }
            for a in seqs {
                let Some(mut record) = audit.trail.get(a)? else {
                    continue;
                };
                let event_seq = serde_json::from_slice::<AuditRecord>(&record.main)
                    .map_err(|e| StoreError::Corrupt(format!("audit record {a}: {e}")))?
                    .event_seq;
                if record.extra.take().is_some() {
                    audit.trail.replace(a, record)?;
                    stripped += 1;
                }
                let Some(es) = event_seq else { continue };
                if history.contains_key(&es) {
                    continue;
                }
                let stored = match events.get(es)? {
                    Some(it) => parse_event(es, &it.main)?,
                    None => continue,
                };
                let stored = match (req.redact)(&stored.event) {
                    Some(event) => {
                        let ev = StoredEvent { event, ..stored };
                        let bytes = serde_json::to_vec(&ev)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        events.replace(es, Item::new(bytes))?;
                        rewritten += 1;
                        ev
                    }
                    None => stored,
                };
                history.insert(es, stored);
            }
            let mut staged = Vec::new();
            appended = write_events(&mut staged, req.append.events, &mut next, now)?;
            events.append(staged, usize::MAX, &mut self.sizing.events)?;
            audit.write(&mut chain, req.append.audit, first_seq, now)?;
            audit.flush(&mut self.sizing.audit)?;
            let mut idem = txn.open_table(IDEM).map_err(unavailable)?;
            let mut idem_time = txn.open_table(IDEM_BY_TIME).map_err(unavailable)?;
            forget_answers_naming(&mut idem, &mut idem_time, &req.contacts)?;
        }
        txn.commit()
            .map_err(|e| unavailable(format!("commit failed: {e}")))?;
        self.next_seq = next;
        self.audit_next = chain.next;
        self.audit_prev = chain.prev;
        drop(db);
        let history: Vec<StoredEvent> = history.into_values().collect();
        self.sink.erased(&req.contacts, &history);
        for ev in &appended {
            self.sink.apply(ev);
        }
        // The rewritten pages are free but still hold the erased bytes until reused: compact
        // the file so they leave it, and overwrite the free pages compaction leaves behind.
        if let Err(e) = self.compact().and_then(|()| self.scrub_free_pages()) {
            tracing::warn!(error = %e, "compaction after an erasure failed; erased bytes may stay in free pages until reused");
        }
        Ok(ErasureOutcome {
            first_seq,
            rewritten,
            audit_stripped: stripped,
        })
    }

    fn purge_idempotency(&self) {
        let cutoff = self.clock.now_ms() - self.retention;
        let result = (|| -> Result<usize, StoreError> {
            let txn = self.db.get()?.begin_write().map_err(unavailable)?;
            let mut n = 0;
            {
                let mut idem = txn.open_table(IDEM).map_err(unavailable)?;
                let mut idem_time = txn.open_table(IDEM_BY_TIME).map_err(unavailable)?;
                let old: Vec<(i64, String)> = idem_time
                    .range((i64::MIN, "")..(cutoff, ""))
                    .map_err(unavailable)?
                    .filter_map(|r| r.ok().map(|(k, _)| (k.value().0, k.value().1.to_string())))
                    .collect();
                for (t, key) in old {
                    idem_time.remove((t, key.as_str())).map_err(unavailable)?;
                    idem.remove(key.as_str()).map_err(unavailable)?;
                    n += 1;
                }
            }
            txn.commit().map_err(unavailable)?;
            Ok(n)
        })();
        match result {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired idempotency keys purged"),
            Err(e) => tracing::warn!(error = %e, "idempotency purge failed"),
        }
    }
}

/// Bytes free to unprivileged writers on the filesystem holding `path`, where known.
fn free_bytes(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let dir = path.parent()?;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid C string and `s` a properly sized out-parameter.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return None;
        }
        Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

fn fail_all(replies: Vec<Reply>, e: &StoreError) {
    for reply in replies {
        let _ = reply.send(Err(e.clone()));
    }
}

/// Writes a group of appends into one transaction (not yet committed): each request's
/// events and audit records, or, for an idempotency key seen before, its first answer.
fn stage(
    db: &Database,
    requests: Vec<Append>,
    now: Millis,
    next: &mut u64,
    chain: &mut ChainHead,
    sizing: &mut Sizings,
) -> Result<(redb::WriteTransaction, Vec<Pending>), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let mut pending = Vec::with_capacity(requests.len());
    {
        let mut events = Vec::new();
        let mut idem = txn.open_table(IDEM).map_err(unavailable)?;
        let mut idem_time = txn.open_table(IDEM_BY_TIME).map_err(unavailable)?;
        let mut audit = AuditTables::open(&txn)?;
        for req in requests {
            if let Some(claim) = &req.idempotency {
                let seen = idem
                    .get(claim.key.as_str())
                    .map_err(unavailable)?
                    .map(|v| v.value().to_vec());
                if let Some(seen) = seen {
                    pending.push(Pending::Done(super::idempotency::replay(&seen, claim)));
                    continue;
                }
            }
            let first_seq = *next;
            let stored = write_events(&mut events, req.events, next, now)?;
            audit.write(chain, req.audit, first_seq, now)?;
            let response = match req.idempotency {
                Some(claim) => {
                    let response = (claim.respond)(first_seq);
                    let v = super::idempotency::encode(now, &claim.fingerprint, &response);
                    idem.insert(claim.key.as_str(), v.as_slice())
                        .map_err(unavailable)?;
                    idem_time
                        .insert((now, claim.key.as_str()), ())
                        .map_err(unavailable)?;
                    Some(response)
                }
                None => None,
            };
            let outcome = AppendOutcome::Committed {
                first_seq,
                last_seq: *next - 1,
                response,
            };
            pending.push(Pending::Commit(outcome, stored));
        }
        Open::write(&txn, EVENT_LOG)?.append(events, usize::MAX, &mut sizing.events)?;
        audit.flush(&mut sizing.audit)?;
    }
    Ok((txn, pending))
}

/// Drops remembered answers whose key or response names one of `contacts` (a consent
/// outcome carries the normalized contact): a DELETE leaves no copy of the identifier.
fn forget_answers_naming(
    idem: &mut redb::Table<&str, &[u8]>,
    idem_time: &mut redb::Table<(i64, &str), ()>,
    contacts: &[crate::model::ContactKey],
) -> Result<usize, StoreError> {
    let naming = super::idempotency::Naming::new(contacts);
    let named = |hay: &[u8]| naming.found_in(hay);
    let mut gone: Vec<(String, i64)> = Vec::new();
    for item in idem.iter().map_err(unavailable)? {
        let (k, v) = item.map_err(unavailable)?;
        let (key, value) = (k.value(), v.value());
        if named(key.as_bytes()) || named(value) {
            let at = super::idempotency::recorded_at(value);
            gone.push((key.to_string(), at));
        }
    }
    for (key, at) in &gone {
        idem.remove(key.as_str()).map_err(unavailable)?;
        idem_time.remove((*at, key.as_str())).map_err(unavailable)?;
    }
    Ok(gone.len())
}

/// A small durable write that needs fresh pages, so a disk that is still full says so
/// before callers are told the store is writable.
fn probe(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut t = txn.open_table(PROBE).map_err(unavailable)?;
        t.insert(0, [0u8; 16 * 1024].as_slice())
            .map_err(unavailable)?;
        t.remove(0).map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)
}

/// Gives `batch` its seqs and stages it in `events`, to be appended at the end of the
/// transaction.
fn write_events(
    events: &mut Vec<(u64, Item)>,
    batch: Vec<crate::model::Event>,
    next: &mut u64,
    now: Millis,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stored = Vec::with_capacity(batch.len());
    for event in batch {
        let ev = StoredEvent {
            seq: *next,
            recorded_at: now,
            event,
        };
        let bytes = serde_json::to_vec(&ev).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        events.push((*next, Item::new(bytes)));
        stored.push(ev);
        *next += 1;
    }
    Ok(stored)
}

struct AuditTables<'t> {
    trail: Open<redb::Table<'t, u64, &'static [u8]>>,
    subjects: subjects::WriteTables<'t>,
    /// Sealed in this transaction, appended by `flush`.
    staged: Vec<(u64, Item)>,
}

impl<'t> AuditTables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(AuditTables {
            trail: Open::write(txn, AUDIT_TRAIL)?,
            subjects: subjects::open_write(txn)?,
            staged: Vec::new(),
        })
    }

    fn flush(&mut self, sizing: &mut Sizing) -> Result<(), StoreError> {
        let staged = std::mem::take(&mut self.staged);
        self.trail.append(staged, usize::MAX, sizing)?;
        self.subjects.maintain()
    }

    /// Chains and writes `drafts`; `first_seq` is the seq of the append's first event.
    fn write(
        &mut self,
        chain: &mut ChainHead,
        drafts: Vec<crate::audit::Rendered>,
        first_seq: u64,
        now: Millis,
    ) -> Result<(), StoreError> {
        for rec in crate::audit::chain::seal(chain, drafts, first_seq, now) {
            self.subjects.add(rec.seq, &rec.tokens)?;
            self.staged.push((
                rec.seq,
                Item {
                    main: rec.json,
                    extra: rec.personal,
                },
            ));
        }
        Ok(())
    }
}
