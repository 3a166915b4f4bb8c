//! Keeps a replica's copy (`copy.rs`) in step with Redis from the heartbeat, and writes it
//! back into a Redis that came back empty before the re-seed commits.
use super::Shared;
use super::conn::unavailable;
use super::copy::{AuditItem, Copy, IdemItem};
use crate::model::{ContactKey, Event};
use crate::store::StoreError;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Audit records fetched or written back at a time.
const PAGE: u64 = 500;

async fn blocking<T: Send + 'static>(
    copy: &Arc<Copy>,
    f: impl FnOnce(&Copy) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let c = copy.clone();
    super::conn::blocking("replica copy task", move || f(&c)).await
}

/// Runs `sync` with what the last heartbeat read, in a task of its own, unless one is
/// still running (the next heartbeat asks again).
pub(super) fn spawn_sync(shared: &Arc<Shared>) {
    if shared.copy.is_none() || shared.mirroring.swap(true, Ordering::AcqRel) {
        return;
    }
    let Some((head, idem_last)) = shared.copy_due().take() else {
        shared.mirroring.store(false, Ordering::Release);
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        if let Err(e) = sync(&shared, head, idem_last).await {
            crate::telemetry::sync_error("copy");
            tracing::debug!(error = %e, "replica copy not brought up to date");
        }
        shared.mirroring.store(false, Ordering::Release);
    });
}

/// Fetches what Redis has that the copy lacks: audit records, idempotency records, and the
/// personal parts erasures removed since.
/// `audit_head` and `idem_last` are the store's audit head and the idempotency log's last
/// entry id, as the heartbeat just read them: when the copy already holds both, an idle
/// replica's sync costs no round trip.
pub(super) async fn sync(
    shared: &Shared,
    audit_head: Option<String>,
    idem_last: Option<String>,
) -> Result<(), StoreError> {
    let Some(copy) = shared.copy.clone() else {
        return Ok(());
    };
    audit(shared, &copy, audit_head.unwrap_or_default()).await?;
    erasures(shared, &copy).await?;
    idempotency(shared, &copy, idem_last).await
}

async fn audit(shared: &Shared, copy: &Arc<Copy>, head: String) -> Result<(), StoreError> {
    let k = &shared.keys;
    let next: u64 = head
        .split_once(' ')
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(1);
    let mut held = blocking(copy, |c| c.audit_next()).await?;
    if held >= next {
        // Caught up; the head may still be missing (the last page was written before it).
        if held == next && blocking(copy, |c| c.head()).await?.as_deref() != Some(&head) {
            let h = head.clone();
            blocking(copy, move |c| c.put_audit(&[], Some(&h))).await?;
        }
        return Ok(());
    }
    while held < next {
        let upto = (held + PAGE).min(next);
        let mut rec = redis::cmd("HMGET");
        let mut per = redis::cmd("HMGET");
        rec.arg(k.audit());
        per.arg(k.personal());
        for s in held..upto {
            rec.arg(s);
            per.arg(s);
        }
        let r: Vec<Option<Vec<u8>>> = shared.redis.query(&rec).await?;
        let p: Vec<Option<Vec<u8>>> = shared.redis.query(&per).await?;
        let items: Vec<AuditItem> = (held..upto)
            .zip(r.into_iter().zip(p))
            .map_while(|(seq, (record, personal))| {
                record.map(|record| AuditItem {
                    seq,
                    record,
                    personal,
                })
            })
            .collect();
        let complete = items.len() as u64 == upto - held;
        held += items.len() as u64;
        let h = (complete && upto == next).then(|| head.clone());
        blocking(copy, move |c| c.put_audit(&items, h.as_deref())).await?;
        if !complete {
            return Err(StoreError::Corrupt(format!(
                "audit record {held} is missing from redis below its head {next}"
            )));
        }
    }
    Ok(())
}

/// Personal parts of the records about subjects erased since the last look.
async fn erasures(shared: &Shared, copy: &Arc<Copy>) -> Result<(), StoreError> {
    let from = blocking(copy, |c| c.erasures_upto()).await?;
    let (cache, applied) = (shared.lock().cache.clone(), shared.sink.seq());
    if applied <= from {
        return Ok(());
    }
    let mut tokens = Vec::new();
    cache.for_each_after(from, |en| {
        if let Event::SubjectsErased(er) = &en.e.event {
            tokens.extend(er.tokens.iter().filter_map(|t| match t {
                ContactKey::Erased(t) => Some(*t),
                _ => None,
            }));
        }
        Ok(())
    })?;
    let mut seqs = Vec::new();
    for t in &tokens {
        let s: Vec<u64> = shared
            .redis
            .query(
                redis::cmd("ZRANGE")
                    .arg(shared.keys.subject(t))
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        seqs.extend(s);
    }
    blocking(copy, move |c| c.strip_personal(&seqs, applied)).await
}

/// New and forgotten idempotency records from the idempotency log, up to `last` (its last
/// entry id when the heartbeat looked; none for an empty log).
async fn idempotency(
    shared: &Shared,
    copy: &Arc<Copy>,
    last: Option<String>,
) -> Result<(), StoreError> {
    let k = &shared.keys;
    let Some(last) = last else {
        return Ok(());
    };
    loop {
        let cursor = blocking(copy, |c| c.idem_cursor()).await?;
        if cursor == last {
            return Ok(());
        }
        type Entry = (String, Vec<(String, String)>);
        let page: Vec<Entry> = shared
            .redis
            .query(
                redis::cmd("XRANGE")
                    .arg(k.idem_log())
                    .arg(format!("({cursor}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(PAGE),
            )
            .await?;
        let Some(last) = page.last().map(|(id, _)| id.clone()) else {
            return Ok(());
        };
        let mut set_keys = Vec::new();
        let mut forgotten = Vec::new();
        for (_, fields) in &page {
            for (f, v) in fields {
                match f.as_str() {
                    "k" => set_keys.push(v.clone()),
                    "h" => forgotten.push(v.clone()),
                    _ => {}
                }
            }
        }
        let mut set = Vec::new();
        if !set_keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &set_keys {
                pipe.get(key).cmd("PTTL").arg(key);
            }
            let got: Vec<(Option<Vec<u8>>, i64)> =
                pipe_pairs(shared, &pipe, set_keys.len()).await?;
            let now = shared.clock.now_ms();
            for (key, (value, ttl)) in set_keys.into_iter().zip(got) {
                if let (Some(value), true) = (value, ttl > 0) {
                    set.push(IdemItem {
                        key,
                        value,
                        expires_at: now + ttl,
                    });
                }
            }
        }
        let now = shared.clock.now_ms();
        let n = page.len();
        blocking(copy, move |c| c.apply_idem(&set, &forgotten, &last, now)).await?;
        if (n as u64) < PAGE {
            return Ok(());
        }
    }
}

/// A pipeline of GET and PTTL pairs, answered as pairs.
async fn pipe_pairs(
    shared: &Shared,
    pipe: &redis::Pipeline,
    n: usize,
) -> Result<Vec<(Option<Vec<u8>>, i64)>, StoreError> {
    let flat: Vec<redis::Value> = shared.redis.pipe(pipe).await?;
    if flat.len() != n * 2 {
        return Err(unavailable("unexpected answer to GET/PTTL"));
    }
    let mut out = Vec::with_capacity(n);
    for pair in flat.chunks(2) {
        let v: Option<Vec<u8>> = redis::from_redis_value(pair[0].clone()).map_err(unavailable)?;
        let t: i64 = redis::from_redis_value(pair[1].clone()).map_err(unavailable)?;
        out.push((v, t));
    }
    Ok(out)
}

/// Writes the copy's audit trail (with the subject sets erasures look up) and live
/// idempotency records into an emptied Redis; returns the audit head to set with the
/// re-seed, or None when the copy holds no trail.
pub(super) async fn restore(shared: &Shared) -> Result<Option<String>, StoreError> {
    let Some(copy) = shared.copy.clone() else {
        return Ok(None);
    };
    let k = &shared.keys;
    let Some(head) = blocking(&copy, |c| c.head()).await? else {
        return Ok(None);
    };
    let mut from = 1;
    loop {
        let page = blocking(&copy, move |c| c.audit_page(from, PAGE as usize)).await?;
        let Some(last) = page.last().map(|i| i.seq) else {
            break;
        };
        let mut pipe = redis::pipe();
        for it in &page {
            pipe.hset(k.audit(), it.seq, it.record.as_slice()).ignore();
            if let Some(p) = &it.personal {
                pipe.hset(k.personal(), it.seq, p.as_slice()).ignore();
            }
            for t in erased_subjects(&it.record) {
                pipe.zadd(k.subject(&t), it.seq, it.seq).ignore();
            }
        }
        let () = shared.redis.pipe(&pipe).await?;
        from = last + 1;
    }
    let now = shared.clock.now_ms();
    let live = blocking(&copy, move |c| c.idem(now)).await?;
    for chunk in live.chunks(PAGE as usize) {
        let mut pipe = redis::pipe();
        for it in chunk {
            let left = (it.expires_at - now).max(1);
            pipe.cmd("SET")
                .arg(&it.key)
                .arg(it.value.as_slice())
                .arg("PX")
                .arg(left)
                .ignore();
            pipe.cmd("XADD")
                .arg(k.idem_log())
                .arg("*")
                .arg("k")
                .arg(&it.key)
                .ignore();
        }
        let () = shared.redis.pipe(&pipe).await?;
    }
    tracing::warn!(head = %head, idempotency_keys = live.len(), "audit trail and idempotency keys written back from this replica's copy");
    Ok(Some(head))
}

/// The erased subjects (tokens) an audit record names, as its subject sets hold them.
fn erased_subjects(record: &[u8]) -> Vec<crate::model::Token> {
    #[derive(serde::Deserialize)]
    struct Subjects {
        #[serde(default)]
        subjects: Vec<String>,
    }
    serde_json::from_slice::<Subjects>(record)
        .map(|s| {
            s.subjects
                .iter()
                .filter_map(|x| match ContactKey::from_canonical(x) {
                    Some(ContactKey::Erased(t)) => Some(t),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}
