//! What a replica keeps of Redis beyond the change log, so that a Redis that comes back
//! empty is put back whole: the audit trail (personal parts included, and stripped again
//! when an erasure reaches them) and the live idempotency records. Kept in a redb file in
//! the replica's data directory, filled from Redis in the background.
use crate::model::Millis;
use crate::store::StoreError;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

/// Audit seq -> the record's JSON, as Redis holds it.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Audit seq -> its personal part.
const PERSONAL: TableDefinition<u64, &[u8]> = TableDefinition::new("personal");
/// Idempotency key (the full Redis key) -> expiry (8 bytes LE, epoch ms) ++ the value.
const IDEM: TableDefinition<&str, &[u8]> = TableDefinition::new("idem");
/// `head`: the audit head the held records end at; `idem_cursor`: the last idempotency
/// log entry read; `erasures`: the change-log seq up to which erasures were applied here.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn e(x: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("replica copy: {x}"))
}

pub struct Copy {
    /// Behind a lock: after an erasure the file is rewritten and the handle replaced.
    db: std::sync::Mutex<Database>,
    path: std::path::PathBuf,
}

/// One audit record as stored in Redis.
pub struct AuditItem {
    pub seq: u64,
    pub record: Vec<u8>,
    pub personal: Option<Vec<u8>>,
}

/// A live idempotency record.
pub struct IdemItem {
    pub key: String,
    pub value: Vec<u8>,
    pub expires_at: Millis,
}

impl Copy {
    pub fn open(path: &Path) -> Result<Copy, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(e)?;
        }
        Ok(Copy {
            db: std::sync::Mutex::new(create(path)?),
            path: path.to_path_buf(),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Database> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the live records into a new file and puts it in place of this one: a record
    /// deleted for an erasure leaves no bytes behind in the old file's free pages.
    fn rewrite(&self, db: &mut Database) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("rewrite");
        let _ = std::fs::remove_file(&tmp);
        let fresh = create(&tmp)?;
        {
            let r = db.begin_read().map_err(e)?;
            let w = fresh.begin_write().map_err(e)?;
            copy_table(&r, &w, AUDIT)?;
            copy_table(&r, &w, PERSONAL)?;
            copy_table(&r, &w, IDEM)?;
            copy_table(&r, &w, META)?;
            w.commit().map_err(e)?;
        }
        drop(fresh);
        // The old handle must be gone before the rename (redb locks the file it opened).
        let placeholder = create(&self.path.with_extension("swap"))?;
        drop(std::mem::replace(db, placeholder));
        std::fs::rename(&tmp, &self.path).map_err(e)?;
        let reopened = create(&self.path)?;
        let old = std::mem::replace(db, reopened);
        drop(old);
        let _ = std::fs::remove_file(self.path.with_extension("swap"));
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.db();
        let r = db.begin_read().map_err(e)?;
        let t = r.open_table(META).map_err(e)?;
        Ok(t.get(key).map_err(e)?.map(|v| v.value().to_vec()))
    }

    /// The seq of the next audit record to fetch.
    pub fn audit_next(&self) -> Result<u64, StoreError> {
        let db = self.db();
        let r = db.begin_read().map_err(e)?;
        let t = r.open_table(AUDIT).map_err(e)?;
        Ok(t.last().map_err(e)?.map_or(1, |(k, _)| k.value() + 1))
    }

    /// The audit head (`"<next> <prev hash>"`) the held records end at.
    pub fn head(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta("head")?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Adds records (in seq order, after those held) and, once caught up, the head.
    pub fn put_audit(&self, items: &[AuditItem], head: Option<&str>) -> Result<(), StoreError> {
        let db = self.db();
        let txn = db.begin_write().map_err(e)?;
        {
            let mut a = txn.open_table(AUDIT).map_err(e)?;
            let mut p = txn.open_table(PERSONAL).map_err(e)?;
            for it in items {
                a.insert(it.seq, it.record.as_slice()).map_err(e)?;
                if let Some(pp) = &it.personal {
                    p.insert(it.seq, pp.as_slice()).map_err(e)?;
                }
            }
            if let Some(h) = head {
                txn.open_table(META)
                    .map_err(e)?
                    .insert("head", h.as_bytes())
                    .map_err(e)?;
            }
        }
        txn.commit().map_err(e)
    }

    /// Removes the personal parts of these records (an erasure reached them).
    pub fn strip_personal(&self, seqs: &[u64], erasures_upto: u64) -> Result<(), StoreError> {
        let mut db = self.db();
        let txn = db.begin_write().map_err(e)?;
        {
            let mut p = txn.open_table(PERSONAL).map_err(e)?;
            for s in seqs {
                p.remove(*s).map_err(e)?;
            }
            txn.open_table(META)
                .map_err(e)?
                .insert("erasures", erasures_upto.to_le_bytes().as_slice())
                .map_err(e)?;
        }
        txn.commit().map_err(e)?;
        if seqs.is_empty() {
            return Ok(());
        }
        self.rewrite(&mut db)
    }

    /// The change-log seq up to which erasures were applied to this copy.
    pub fn erasures_upto(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta("erasures")?
            .and_then(|v| v.try_into().ok())
            .map_or(0, u64::from_le_bytes))
    }

    pub fn idem_cursor(&self) -> Result<String, StoreError> {
        Ok(self.meta("idem_cursor")?.map_or_else(
            || "0-0".into(),
            |v| String::from_utf8_lossy(&v).into_owned(),
        ))
    }

    /// Records set, keys forgotten (an erasure; by `key_hash`), and the log position
    /// reached; expired records are dropped on the way.
    pub fn apply_idem(
        &self,
        set: &[IdemItem],
        forgotten: &[String],
        cursor: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut db = self.db();
        let txn = db.begin_write().map_err(e)?;
        {
            let mut t = txn.open_table(IDEM).map_err(e)?;
            for it in set {
                let mut v = it.expires_at.to_le_bytes().to_vec();
                v.extend_from_slice(&it.value);
                t.insert(it.key.as_str(), v.as_slice()).map_err(e)?;
            }
            t.retain(|k, v| {
                expiry(v) > now && (forgotten.is_empty() || !forgotten.contains(&key_hash(k)))
            })
            .map_err(e)?;
            txn.open_table(META)
                .map_err(e)?
                .insert("idem_cursor", cursor.as_bytes())
                .map_err(e)?;
        }
        txn.commit().map_err(e)?;
        if forgotten.is_empty() {
            return Ok(());
        }
        self.rewrite(&mut db)
    }

    /// The live idempotency records.
    pub fn idem(&self, now: Millis) -> Result<Vec<IdemItem>, StoreError> {
        let db = self.db();
        let r = db.begin_read().map_err(e)?;
        let t = r.open_table(IDEM).map_err(e)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(e)? {
            let (k, v) = row.map_err(e)?;
            let v = v.value();
            if expiry(v) > now && v.len() >= 8 {
                out.push(IdemItem {
                    key: k.value().to_string(),
                    value: v[8..].to_vec(),
                    expires_at: expiry(v),
                });
            }
        }
        Ok(out)
    }

    /// Audit records from `from` on, at most `limit`, in order.
    pub fn audit_page(&self, from: u64, limit: usize) -> Result<Vec<AuditItem>, StoreError> {
        let db = self.db();
        let r = db.begin_read().map_err(e)?;
        let a = r.open_table(AUDIT).map_err(e)?;
        let p = r.open_table(PERSONAL).map_err(e)?;
        let mut out = Vec::new();
        for row in a.range(from..).map_err(e)?.take(limit) {
            let (k, v) = row.map_err(e)?;
            let seq = k.value();
            out.push(AuditItem {
                seq,
                record: v.value().to_vec(),
                personal: p.get(seq).map_err(e)?.map(|x| x.value().to_vec()),
            });
        }
        Ok(out)
    }
}

/// The hash an idempotency key is forgotten by: the log never names a forgotten key.
pub fn key_hash(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// Every row of table `def` from `r` into `w`.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    r: &redb::ReadTransaction,
    w: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<(), StoreError> {
    let (src, mut dst) = (r.open_table(def).map_err(e)?, w.open_table(def).map_err(e)?);
    for row in src.iter().map_err(e)? {
        let (k, v) = row.map_err(e)?;
        dst.insert(k.value(), v.value()).map_err(e)?;
    }
    Ok(())
}

fn create(path: &Path) -> Result<Database, StoreError> {
    let db = redb::Builder::new()
        .set_cache_size(8 << 20)
        .create(path)
        .map_err(e)?;
    let txn = db.begin_write().map_err(e)?;
    txn.open_table(AUDIT).map_err(e)?;
    txn.open_table(PERSONAL).map_err(e)?;
    txn.open_table(IDEM).map_err(e)?;
    txn.open_table(META).map_err(e)?;
    txn.commit().map_err(e)?;
    Ok(db)
}

fn expiry(v: &[u8]) -> Millis {
    v.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i64::from_le_bytes)
}
