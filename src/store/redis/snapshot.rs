//! Snapshots: one replica at a time (a lease in Redis) writes its copy of the log as
//! immutable blocks (only those the store does not hold yet are uploaded) named by a
//! directory in the snapshot hash, and trims the stream behind it; after an erasure the
//! rewritten blocks replace the old ones and the trim reaches past the erasure, so no copy
//! of the subjects in clear is left in Redis.
use super::conn::unavailable;
use super::log::SnapBlock;
use super::{Shared, chunks};
use crate::store::StoreError;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Blocks uploaded a round trip (a block is about 4,096 entries, a few hundred KB).
const BLOCKS_PER_TRIP: usize = 8;
const LEASE_MS: u64 = 30_000;

pub(super) const TAKE_LEASE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"#;

/// Switches to the new snapshot if this replica still holds the lease, the lineage is the
/// same and every block the directory names is stored; drops the blocks (and a snapshot of
/// the former, single-blob format) it no longer names, and trims the stream.
const SWITCH: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[5]) ~= ARGV[7] then return 0 end
local oldseq = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if oldseq > tonumber(ARGV[3]) then return 0 end
local keep = {}
for key in string.gmatch(ARGV[2], '%d+ %d+ (%S+)') do
  if redis.call('EXISTS', key) == 0 then return -1 end
  keep[key] = true
end
local old = redis.call('HGET', KEYS[2], 'id')
if old then
  local oldn = tonumber(redis.call('HGET', KEYS[2], 'chunks') or '0')
  for i = 0, oldn - 1 do redis.call('DEL', ARGV[5] .. old .. ':' .. i) end
  redis.call('HDEL', KEYS[2], 'id', 'chunks')
end
local olddir = redis.call('HGET', KEYS[2], 'blocks')
if olddir then
  for key in string.gmatch(olddir, '%d+ %d+ (%S+)') do
    if not keep[key] then redis.call('DEL', key) end
  end
end
redis.call('HSET', KEYS[2], 'seq', ARGV[3], 'blocks', ARGV[2], 'at', ARGV[8])
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
redis.call('HSET', KEYS[3], 'seq', ARGV[2], 'blocks', ARGV[3], 'at', ARGV[5])
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

/// The blocks of this replica's log copy a snapshot at its last seq is made of (the
/// encoding runs off the async workers); blocks stored under a key in `stored` are named,
/// not uploaded again.
async fn capture(shared: &Shared, stored: HashSet<String>) -> Result<Captured, StoreError> {
    let (cache, generation) = {
        let st = shared.lock();
        (st.cache.clone(), st.generation)
    };
    tokio::task::spawn_blocking(move || {
        let blocks = cache.snapshot_blocks(|k| stored.contains(k))?;
        Ok::<_, super::log::LogError>(Captured {
            seq: cache.last_seq(),
            blocks,
            generation,
        })
    })
    .await
    .map_err(|e| unavailable(e.to_string()))?
    .map_err(StoreError::from)
}

/// A snapshot's blocks, taken from the log copy of one generation (see `ReplicaState`).
struct Captured {
    seq: u64,
    blocks: Vec<SnapBlock>,
    generation: u64,
}

/// The uploaded blocks' keys go on the copy they were taken from, not on one adopted since.
fn mark_archived(shared: &Shared, c: &Captured) {
    let mut st = shared.lock();
    if st.generation == c.generation {
        st.cache.mark_archived(&c.blocks);
    }
}

/// The keys of the blocks the current snapshot names.
async fn stored_blocks(shared: &Shared) -> Result<HashSet<String>, StoreError> {
    let dir: Option<String> = shared
        .redis
        .query(redis::cmd("HGET").arg(shared.keys.snap()).arg("blocks"))
        .await?;
    Ok(dir
        .as_deref()
        .map(|d| parse_directory(d).map(|(_, _, k)| k.to_string()).collect())
        .unwrap_or_default())
}

/// A directory's lines: `first last key`.
pub(super) fn parse_directory(dir: &str) -> impl Iterator<Item = (u64, u64, &str)> {
    dir.lines().filter_map(|l| {
        let mut w = l.split(' ');
        Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?, w.next()?))
    })
}

/// Uploads the blocks not stored yet, which then carry their new keys; returns those keys.
async fn upload(shared: &Shared, blocks: &mut [SnapBlock]) -> Result<Vec<String>, StoreError> {
    let mut new = Vec::new();
    let mut todo: Vec<&mut SnapBlock> = blocks.iter_mut().filter(|b| b.key.is_none()).collect();
    let mut renewed = std::time::Instant::now();
    for group in todo.chunks_mut(BLOCKS_PER_TRIP) {
        // A long upload (the whole log, the first time) keeps its lease: lost, the switch
        // would refuse what was uploaded.
        if renewed.elapsed() >= std::time::Duration::from_millis(LEASE_MS / 3) {
            if !take_lease(shared).await? {
                drop_blocks(shared, &new).await;
                return Err(unavailable("the snapshot lease went to another replica"));
            }
            renewed = std::time::Instant::now();
        }
        let mut p = redis::pipe();
        for b in group.iter_mut() {
            let key = shared.keys.block(b.first, b.last, &chunks::blob_id());
            p.set(&key, b.gz.take().unwrap_or_default()).ignore();
            b.key = Some(key.as_str().into());
            new.push(key);
        }
        shared.redis.pipe::<()>(&p).await?;
    }
    Ok(new)
}

fn directory(blocks: &[SnapBlock]) -> String {
    let mut d = String::with_capacity(blocks.len() * 48);
    for b in blocks {
        if let Some(k) = &b.key {
            d.push_str(&format!("{} {} {k}\n", b.first, b.last));
        }
    }
    d
}

async fn drop_blocks(shared: &Shared, keys: &[String]) {
    for group in keys.chunks(256) {
        let mut p = redis::pipe();
        for k in group {
            p.del(k).ignore();
        }
        let _ = shared.redis.pipe::<()>(&p).await;
    }
}

/// Writes a snapshot in a task of its own, one at a time, so that following (and Watch
/// delivery) never waits for its uploads: the first one after a format change uploads the
/// whole log. A scrub asked for meanwhile is kept for the next.
pub(super) fn spawn(shared: &Arc<Shared>) {
    if shared.snapshotting.swap(true, Ordering::AcqRel) {
        return;
    }
    struct Done(Arc<Shared>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.snapshotting.store(false, Ordering::Release);
        }
    }
    let done = Done(shared.clone());
    tokio::spawn(async move {
        let shared = &done.0;
        let scrub = shared.snapshot_scrub.swap(false, Ordering::AcqRel);
        if let Err(e) = maybe_write(shared, scrub).await {
            if scrub {
                shared.snapshot_scrub.store(true, Ordering::Release);
            }
            shared.failed("snapshot", &e);
        }
    });
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
    let stored = stored_blocks(shared).await?;
    let mut captured = capture(shared, stored).await?;
    let seq = captured.seq;
    if seq == 0 || seq <= shared.snap_seq.load(Ordering::Relaxed) && !scrub {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let new = upload(shared, &mut captured.blocks).await?;
    let blocks = &captured.blocks;
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
        .arg(directory(blocks))
        .arg(seq)
        .arg(0)
        .arg(k.snap_chunk_prefix())
        .arg(format!("{min_id}-0"))
        .arg(&epoch)
        .arg(shared.clock.now_ms())
        .arg(k.img_chunk_prefix());
    let switched = shared.redis.invoke::<i64>(&inv).await?;
    if switched != 1 {
        drop_blocks(shared, &new).await;
        if switched == -1 {
            return Err(StoreError::Corrupt(
                "a block the snapshot would name is gone from redis; the next one uploads it"
                    .into(),
            ));
        }
        return Ok(());
    }
    mark_archived(shared, &captured);
    shared.snap_seq.store(seq, Ordering::Relaxed);
    shared.status().snapshots_written += 1;
    tracing::info!(
        seq,
        blocks = captured.blocks.len(),
        uploaded = new.len(),
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
    let mut captured = capture(shared, HashSet::new()).await?;
    let seq = captured.seq;
    if seq == 0 || seq != shared.sink.seq() {
        return Ok(false);
    }
    if !take_lease(shared).await? {
        return Ok(false);
    }
    let new = upload(shared, &mut captured.blocks).await?;
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
        .arg(directory(&captured.blocks))
        .arg(0)
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
        drop_blocks(shared, &new).await;
        return Ok(false);
    }
    mark_archived(shared, &captured);
    shared.snap_seq.store(seq, Ordering::Relaxed);
    Ok(true)
}
