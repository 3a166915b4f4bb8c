//! The embedded store: redb in the data directory, one writer thread doing group commit.
//!
//! Every request waits for the fsync of the transaction that holds it; requests that
//! arrive while a commit is in flight share the next one.
use super::{Append, AppendOutcome, Erasure, ErasureOutcome, EventSink, Store, StoreError};
use crate::audit::chain::ChainHead;
use crate::audit::{AuditRecord, RawAudit};
use crate::clock::SharedClock;
use crate::model::{Millis, StoredEvent, Token};
use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// key -> created_at (8 bytes LE) ++ fingerprint (32) ++ response
const IDEM: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
const IDEM_BY_TIME: TableDefinition<(i64, &str), ()> = TableDefinition::new("idempotency_by_time");
/// Audit seq -> the record's JSON (`AuditRecord`), hash-chained.
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Audit seq -> the record's personal part, removed by erasure.
pub const AUDIT_PERSONAL: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_personal");
/// (subject token, audit seq): the records about a subject.
const AUDIT_SUBJECTS: TableDefinition<(&[u8], u64), ()> = TableDefinition::new("audit_subjects");

/// Most requests one commit takes; bounds the latency of the first in line.
const MAX_GROUP: usize = 1024;

type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;
type EraseReply = oneshot::Sender<Result<ErasureOutcome, StoreError>>;

enum Job {
    Append(Append, Reply),
    Erase(Erasure, EraseReply),
}

pub struct EmbeddedStore {
    db: Arc<Database>,
    tx: mpsc::Sender<Job>,
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

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/preflight.redb`. Replay events into the index with
    /// `read_events` before giving the store a sink.
    pub fn open(dir: &Path) -> Result<Database, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            unavailable(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("preflight.redb");
        let db = Database::create(&path)
            .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(unavailable)?;
        {
            txn.open_table(EVENTS).map_err(unavailable)?;
            txn.open_table(IDEM).map_err(unavailable)?;
            txn.open_table(IDEM_BY_TIME).map_err(unavailable)?;
            txn.open_table(AUDIT).map_err(unavailable)?;
            txn.open_table(AUDIT_PERSONAL).map_err(unavailable)?;
            txn.open_table(AUDIT_SUBJECTS).map_err(unavailable)?;
        }
        txn.commit().map_err(unavailable)?;
        Ok(db)
    }

    /// Starts the writer thread. `sink` sees every committed event before its writer is answered.
    pub fn start(
        db: Database,
        sink: Arc<dyn EventSink>,
        clock: SharedClock,
        opts: EmbeddedOptions,
    ) -> Result<Self, StoreError> {
        let db = Arc::new(db);
        let next_seq = last_seq_of(&db)? + 1;
        let (audit_next, audit_prev) = audit_head(&db)?;
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            sink,
            clock,
            next_seq,
            audit_next,
            audit_prev,
            retention: opts.idempotency_retention_ms,
        };
        std::thread::Builder::new()
            .name("preflight-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(unavailable)?;
        Ok(EmbeddedStore { db, tx })
    }
}

fn last_seq_of(db: &Database) -> Result<u64, StoreError> {
    let r = db.begin_read().map_err(unavailable)?;
    let t = r.open_table(EVENTS).map_err(unavailable)?;
    Ok(t.last()
        .map_err(unavailable)?
        .map(|(k, _)| k.value())
        .unwrap_or(0))
}

/// The next audit seq and the hash to chain it to.
fn audit_head(db: &Database) -> Result<(u64, String), StoreError> {
    let r = db.begin_read().map_err(unavailable)?;
    let t = r.open_table(AUDIT).map_err(unavailable)?;
    match t.last().map_err(unavailable)? {
        None => Ok((1, crate::audit::chain::GENESIS.to_string())),
        Some((k, v)) => {
            let rec: AuditRecord = serde_json::from_slice(v.value()).map_err(|e| {
                StoreError::Corrupt(format!(
                    "last audit record {} unreadable, refusing to extend the chain: {e}",
                    k.value()
                ))
            })?;
            Ok((k.value() + 1, rec.hash))
        }
    }
}

pub fn read_audit_from(
    db: &Database,
    after: u64,
    limit: usize,
) -> Result<Vec<RawAudit>, StoreError> {
    let r = db.begin_read().map_err(unavailable)?;
    let t = r.open_table(AUDIT).map_err(unavailable)?;
    let p = r.open_table(AUDIT_PERSONAL).map_err(unavailable)?;
    let mut out = Vec::new();
    for item in t.range(after + 1..).map_err(unavailable)?.take(limit) {
        let (k, v) = item.map_err(unavailable)?;
        out.push(raw_audit(&p, k.value(), v.value())?);
    }
    Ok(out)
}

/// A stored record with its personal part, if that is still held.
fn raw_audit(
    personal: &redb::ReadOnlyTable<u64, &'static [u8]>,
    seq: u64,
    record: &[u8],
) -> Result<RawAudit, StoreError> {
    Ok(RawAudit {
        seq,
        record: record.to_vec(),
        personal: personal
            .get(seq)
            .map_err(unavailable)?
            .map(|v| v.value().to_vec()),
    })
}

fn read_audit_seqs(db: &Database, seqs: &[u64]) -> Result<Vec<RawAudit>, StoreError> {
    let r = db.begin_read().map_err(unavailable)?;
    let t = r.open_table(AUDIT).map_err(unavailable)?;
    let p = r.open_table(AUDIT_PERSONAL).map_err(unavailable)?;
    let mut out = Vec::new();
    for &seq in seqs {
        if let Some(v) = t.get(seq).map_err(unavailable)? {
            out.push(raw_audit(&p, seq, v.value())?);
        }
    }
    Ok(out)
}

fn subject_seqs<T: ReadableTable<(&'static [u8], u64), ()>>(
    t: &T,
    token: &Token,
) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    let range = t
        .range((token.as_slice(), 0u64)..=(token.as_slice(), u64::MAX))
        .map_err(unavailable)?;
    for item in range {
        let (k, _) = item.map_err(unavailable)?;
        out.push(k.value().1);
    }
    Ok(out)
}

pub fn read_events_from(
    db: &Database,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let r = db.begin_read().map_err(unavailable)?;
    let t = r.open_table(EVENTS).map_err(unavailable)?;
    let mut out = Vec::new();
    for item in t.range(after + 1..).map_err(unavailable)?.take(limit) {
        let (k, v) = item.map_err(unavailable)?;
        let ev: StoredEvent = serde_json::from_slice(v.value())
            .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", k.value())))?;
        out.push(ev);
    }
    Ok(out)
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
        read_audit_from(&self.db, after, limit)
    }

    fn audit_seqs_for(&self, token: &Token) -> Result<Vec<u64>, StoreError> {
        let r = self.db.begin_read().map_err(unavailable)?;
        let t = r.open_table(AUDIT_SUBJECTS).map_err(unavailable)?;
        subject_seqs(&t, token)
    }

    fn read_audit_at(&self, seqs: &[u64]) -> Result<Vec<RawAudit>, StoreError> {
        read_audit_seqs(&self.db, seqs)
    }

    fn read_events(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        read_events_from(&self.db, after, limit)
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        last_seq_of(&self.db)
    }
}

struct Writer {
    db: Arc<Database>,
    sink: Arc<dyn EventSink>,
    clock: SharedClock,
    next_seq: u64,
    audit_next: u64,
    audit_prev: String,
    retention: Millis,
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
            let first = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.purge_idempotency();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
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
                let _ = reply.send(self.erase(e));
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
        let staged = (|| -> Result<(redb::WriteTransaction, Vec<Pending>), StoreError> {
            let txn = self.db.begin_write().map_err(unavailable)?;
            let mut pending = Vec::with_capacity(requests.len());
            {
                let mut events = txn.open_table(EVENTS).map_err(unavailable)?;
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
                            let outcome = if seen.len() >= 40 && seen[8..40] == claim.fingerprint {
                                Ok(AppendOutcome::Replayed {
                                    response: seen[40..].to_vec(),
                                })
                            } else {
                                Err(StoreError::IdempotencyConflict(claim.key.clone()))
                            };
                            pending.push(Pending::Done(outcome));
                            continue;
                        }
                    }
                    let first_seq = next;
                    let stored = write_events(&mut events, req.events, &mut next, now)?;
                    audit.write(&mut chain, req.audit, first_seq, now)?;
                    let response = match req.idempotency {
                        Some(claim) => {
                            let response = (claim.respond)(first_seq);
                            let mut v = Vec::with_capacity(40 + response.len());
                            v.extend_from_slice(&now.to_le_bytes());
                            v.extend_from_slice(&claim.fingerprint);
                            v.extend_from_slice(&response);
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
                        last_seq: next - 1,
                        response,
                    };
                    pending.push(Pending::Commit(outcome, stored));
                }
            }
            Ok((txn, pending))
        })();

        let (txn, pending) = match staged {
            Ok(s) => s,
            Err(e) => {
                // The transaction was dropped unfinished: nothing of this group is written.
                tracing::error!(error = %e, "store write failed before commit");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
        };
        match txn.commit() {
            Ok(()) => {
                self.next_seq = next;
                self.audit_next = chain.next;
                self.audit_prev = chain.prev;
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
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                for reply in replies {
                    let _ = reply.send(Err(unavailable(format!("commit failed: {e}"))));
                }
            }
        }
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
        let txn = self.db.begin_write().map_err(unavailable)?;
        let mut history: std::collections::BTreeMap<u64, StoredEvent> = Default::default();
        let mut rewritten = 0;
        let mut stripped = 0;
        let first_seq = next;
        let appended;
        {
            let mut events = txn.open_table(EVENTS).map_err(unavailable)?;
            let mut audit = AuditTables::open(&txn)?;
            let mut seqs = BTreeSet::new();
            for t in &req.tokens {
                seqs.extend(subject_seqs(&audit.subjects, t)?);
            }
            for a in seqs {
                if audit.personal.remove(a).map_err(unavailable)?.is_some() {
                    stripped += 1;
                }
                let event_seq = match audit.records.get(a).map_err(unavailable)? {
                    Some(v) => {
                        serde_json::from_slice::<AuditRecord>(v.value())
                            .map_err(|e| StoreError::Corrupt(format!("audit record {a}: {e}")))?
                            .event_seq
                    }
                    None => None,
                };
                let Some(es) = event_seq else { continue };
                if history.contains_key(&es) {
                    continue;
                }
                let stored = match events.get(es).map_err(unavailable)? {
                    Some(v) => serde_json::from_slice::<StoredEvent>(v.value())
                        .map_err(|e| StoreError::Corrupt(format!("event {es}: {e}")))?,
                    None => continue,
                };
                let stored = match (req.redact)(&stored.event) {
                    Some(event) => {
                        let ev = StoredEvent { event, ..stored };
                        let bytes = serde_json::to_vec(&ev)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        events.insert(es, bytes.as_slice()).map_err(unavailable)?;
                        rewritten += 1;
                        ev
                    }
                    None => stored,
                };
                history.insert(es, stored);
            }
            appended = write_events(&mut events, req.append.events, &mut next, now)?;
            audit.write(&mut chain, req.append.audit, first_seq, now)?;
        }
        txn.commit()
            .map_err(|e| unavailable(format!("commit failed: {e}")))?;
        self.next_seq = next;
        self.audit_next = chain.next;
        self.audit_prev = chain.prev;
        let history: Vec<StoredEvent> = history.into_values().collect();
        self.sink.erased(&req.contacts, &history);
        for ev in &appended {
            self.sink.apply(ev);
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
            let txn = self.db.begin_write().map_err(unavailable)?;
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

fn write_events(
    events: &mut redb::Table<u64, &[u8]>,
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
        events
            .insert(*next, bytes.as_slice())
            .map_err(unavailable)?;
        stored.push(ev);
        *next += 1;
    }
    Ok(stored)
}

struct AuditTables<'t> {
    records: redb::Table<'t, u64, &'static [u8]>,
    personal: redb::Table<'t, u64, &'static [u8]>,
    subjects: redb::Table<'t, (&'static [u8], u64), ()>,
}

impl<'t> AuditTables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(AuditTables {
            records: txn.open_table(AUDIT).map_err(unavailable)?,
            personal: txn.open_table(AUDIT_PERSONAL).map_err(unavailable)?,
            subjects: txn.open_table(AUDIT_SUBJECTS).map_err(unavailable)?,
        })
    }

    /// Chains and writes `drafts`; `first_seq` is the seq of the append's first event.
    fn write(
        &mut self,
        chain: &mut ChainHead,
        drafts: Vec<crate::audit::AuditDraft>,
        first_seq: u64,
        now: Millis,
    ) -> Result<(), StoreError> {
        for rec in crate::audit::chain::seal(chain, drafts, first_seq, now) {
            self.records
                .insert(rec.seq, rec.json.as_slice())
                .map_err(unavailable)?;
            if let Some(p) = &rec.personal {
                self.personal
                    .insert(rec.seq, p.as_slice())
                    .map_err(unavailable)?;
            }
            for t in &rec.tokens {
                self.subjects
                    .insert((t.as_slice(), rec.seq), ())
                    .map_err(unavailable)?;
            }
        }
        Ok(())
    }
}
