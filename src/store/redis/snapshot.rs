//! Snapshots: one replica at a time (a lease in Redis) writes its copy of the log as
//! chunked blobs and trims the stream behind it; after an erasure the trim reaches past
//! the erasure, so no copy of the subjects in clear is left in Redis.
use super::conn::unavailable;
use super::{Shared, chunks};
use crate::store::StoreError;
use std::sync::atomic::Ordering;

const CHUNK: usize = 4 << 20;
const LEASE_MS: u64 = 30_000;

pub(super) const TAKE_LEASE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"#;

/// Switches to the new snapshot if this replica still holds the lease and the lineage is
/// the same, drops the old chunks and trims the stream.
const SWITCH: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[5]) ~= ARGV[7] then return 0 end
local old = redis.call('HGET', KEYS[2], 'id')
local oldn = tonumber(redis.call('HGET', KEYS[2], 'chunks') or '0')
local oldseq = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if oldseq > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[2], 'id', ARGV[2], 'seq', ARGV[3], 'chunks', ARGV[4], 'at', ARGV[8])
if old and old ~= ARGV[2] then
  for i = 0, oldn - 1 do redis.call('DEL', ARGV[5] .. old .. ':' .. i) end
end
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[6])
local scrub = tonumber(redis.call('GET', KEYS[4]) or '0')
if scrub > 0 and scrub <= tonumber(ARGV[3]) then redis.call('DEL', KEYS[4]) end
-- An index image from before the latest erasure holds its subjects in clear: it goes with
-- the stream it was made from.
local erased = tonumber(redis.call('GET', KEYS[6]) or '0')
local img = redis.call('HGET', KEYS[2], 'img')
if img and erased > tonumber(redis.call('HGET', KEYS[2], 'img_seq') or '0') then
  local n = tonumber(redis.call('HGET', KEYS[2], 'img_chunks') or '0')
  for i = 0, n - 1 do redis.call('DEL', ARGV[9] .. img .. ':' .. i) end
  redis.call('HDEL', KEYS[2], 'img', 'img_seq', 'img_chunks')
end
return 1
"#;

/// Puts a lost store back from this replica's log: only into an empty Redis.
const RESEED: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
-- The audit trail written back from the copy continues from its head.
if ARGV[7] ~= '' then redis.call('SET', KEYS[5], ARGV[7]) end
-- A replica with nothing loaded may have named a new lineage on the empty store; nothing
-- was written under it (there is no seq), so the lineage that holds the data wins.
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[4], ARGV[6])
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[3], 'id', ARGV[3], 'seq', ARGV[2], 'chunks', ARGV[4], 'at', ARGV[5])
return 1
"#;

async fn take_lease(shared: &Shared) -> Result<bool, StoreError> {
    let script = redis::Script::new(TAKE_LEASE);
    let mut inv = script.prepare_invoke();
    inv.key(shared.keys.lease())
        .arg(&shared.owner)
        .arg(LEASE_MS);
    Ok(shared.redis.invoke::<i64>(&inv).await? == 1)
}

/// This replica's log copy, as snapshot bytes, and the seq it ends at; the copy is cheap
/// (blocks are shared) and the encoding runs off the async workers.
async fn capture(shared: &Shared) -> Result<(u64, Vec<u8>), StoreError> {
    let cache = shared.lock().cache.clone();
    let (seq, bytes) = tokio::task::spawn_blocking(move || (cache.last_seq(), cache.to_bytes()))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    Ok((seq, bytes.map_err(StoreError::Corrupt)?))
}

/// Writes the chunks of a snapshot; returns its id and chunk count.
async fn upload(shared: &Shared, seq: u64, bytes: &[u8]) -> Result<(String, usize), StoreError> {
    let id = format!("{seq}-{}", chunks::blob_id());
    let n = chunks::put(&shared.redis, bytes, CHUNK, |i| {
        shared.keys.snap_chunk(&id, i)
    })
    .await?;
    Ok((id, n))
}

async fn drop_chunks(shared: &Shared, id: &str, n: usize) {
    let _ = chunks::drop(&shared.redis, n, |i| shared.keys.snap_chunk(id, i)).await;
}

/// Writes a snapshot if this replica holds (or gets) the lease; `scrub` trims the stream
/// right up to it instead of leaving `stream_keep` entries behind.
pub(super) async fn maybe_write(shared: &Shared, scrub: bool) -> Result<(), StoreError> {
    let Some(epoch) = shared.epoch() else {
        return Ok(());
    };
    if !take_lease(shared).await? {
        return Ok(());
    }
    let (seq, bytes) = capture(shared).await?;
    if seq == 0 || seq <= shared.snap_seq.load(Ordering::Relaxed) && !scrub {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let (id, n) = upload(shared, seq, &bytes).await?;
    let keep = if scrub { 0 } else { shared.opts.stream_keep };
    let min_id = (seq + 1).saturating_sub(keep).max(1);
    let k = &shared.keys;
    let script = redis::Script::new(SWITCH);
    let mut inv = script.prepare_invoke();
    inv.key(k.lease())
        .key(k.snap())
        .key(k.log())
        .key(k.scrub())
        .key(k.epoch())
        .key(k.erased())
        .arg(&shared.owner)
        .arg(&id)
        .arg(seq)
        .arg(n)
        .arg(k.snap_chunk_prefix())
        .arg(format!("{min_id}-0"))
        .arg(&epoch)
        .arg(shared.clock.now_ms())
        .arg(k.img_chunk_prefix());
    if shared.redis.invoke::<i64>(&inv).await? != 1 {
        drop_chunks(shared, &id, n).await;
        return Ok(());
    }
    shared.snap_seq.store(seq, Ordering::Relaxed);
    shared.status().snapshots_written += 1;
    tracing::info!(
        seq,
        bytes = bytes.len(),
        chunks = n,
        trimmed_below = min_id,
        ms = started.elapsed().as_millis() as u64,
        "snapshot written"
    );
    Ok(())
}

/// Re-seeds an empty Redis with this replica's log under this replica's epoch; false when
/// another replica got there first (or this one has nothing to give).
pub(super) async fn reseed(shared: &Shared) -> Result<bool, StoreError> {
    let Some(epoch) = shared.epoch() else {
        return Ok(false);
    };
    let (seq, bytes) = capture(shared).await?;
    if seq == 0 || seq != shared.sink.seq() {
        return Ok(false);
    }
    if !take_lease(shared).await? {
        return Ok(false);
    }
    let (id, n) = upload(shared, seq, &bytes).await?;
    // The audit trail and idempotency keys go back first; the script below commits the
    // re-seed (if another replica did it first, these were the same records).
    let head = super::mirror::restore(shared).await?.unwrap_or_default();
    let k = &shared.keys;
    let script = redis::Script::new(RESEED);
    let mut inv = script.prepare_invoke();
    inv.key(k.seq())
        .key(k.epoch())
        .key(k.snap())
        .key(k.key_id())
        .key(k.head())
        .arg(&epoch)
        .arg(seq)
        .arg(&id)
        .arg(n)
        .arg(shared.clock.now_ms())
        .arg(shared.key_id())
        .arg(head);
    let done = shared
        .redis
        .invoke::<i64>(&inv)
        .await
        .map_err(|e| unavailable(e.to_string()))?
        == 1;
    if !done {
        drop_chunks(shared, &id, n).await;
        return Ok(false);
    }
    shared.snap_seq.store(seq, Ordering::Relaxed);
    Ok(true)
}
