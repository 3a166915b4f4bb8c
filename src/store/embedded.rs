//! The embedded store: redb in the data directory, one writer thread doing group commit.
//!
//! Every request waits for the fsync of the transaction that holds it; requests that
//! arrive while a commit is in flight share the next one.
use super::{Append, AppendOutcome, EventSink, Store, StoreError};
use crate::clock::SharedClock;
use crate::model::{Millis, StoredEvent};
use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// key -> created_at (8 bytes LE) ++ fingerprint (32) ++ response
const IDEM: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
const IDEM_BY_TIME: TableDefinition<(i64, &str), ()> = TableDefinition::new("idempotency_by_time");

/// Most requests one commit takes; bounds the latency of the first in line.
const MAX_GROUP: usize = 1024;

type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

pub struct EmbeddedStore {
    db: Arc<Database>,
    tx: mpsc::Sender<(Append, Reply)>,
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
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            sink,
            clock,
            next_seq,
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

impl Store for EmbeddedStore {
    fn append(&self, req: Append) -> BoxFuture<'static, Result<AppendOutcome, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send((req, reply));
        Box::pin(async move {
            sent.map_err(|_| unavailable("the store writer has stopped"))?;
            rx.await
                .map_err(|_| unavailable("the store writer has stopped"))?
        })
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
    retention: Millis,
}

/// What one request turned into inside a transaction.
enum Pending {
    Done(Result<AppendOutcome, StoreError>),
    Commit(AppendOutcome, Vec<StoredEvent>),
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<(Append, Reply)>) {
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
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
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
        let (requests, replies): (Vec<Append>, Vec<Reply>) = group.into_iter().unzip();
        let staged = (|| -> Result<(redb::WriteTransaction, Vec<Pending>), StoreError> {
            let txn = self.db.begin_write().map_err(unavailable)?;
            let mut pending = Vec::with_capacity(requests.len());
            {
                let mut events = txn.open_table(EVENTS).map_err(unavailable)?;
                let mut idem = txn.open_table(IDEM).map_err(unavailable)?;
                let mut idem_time = txn.open_table(IDEM_BY_TIME).map_err(unavailable)?;
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
                    let mut stored = Vec::with_capacity(req.events.len());
                    for event in req.events {
                        let ev = StoredEvent {
                            seq: next,
                            recorded_at: now,
                            event,
                        };
                        let bytes = serde_json::to_vec(&ev)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        events.insert(next, bytes.as_slice()).map_err(unavailable)?;
                        stored.push(ev);
                        next += 1;
                    }
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
