//! Index images in Redis: one replica at a time (a lease) encodes an image of the index at
//! a seq from its log copy and stores it as chunks named in the snapshot hash; a replica
//! starting cold loads the newest one and replays only the log after it.
//!
//! An image holds identifiers in clear, so one older than the last erasure is never
//! installed, and the snapshot that scrubs an erasure drops it (`snapshot::SWITCH`).
use super::conn::unavailable;
use super::log::LogCache;
use super::{Keys, Shared, chunks};
use crate::model::StoredEvent;
use crate::store::StoreError;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const CHUNK: usize = 4 << 20;
/// Long enough for a build at 100M contacts; a builder that dies leaves it to expire.
const LEASE_MS: u64 = 30 * 60_000;

/// The image the snapshot hash names.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Named {
    pub id: String,
    pub seq: u64,
    pub chunks: usize,
}

/// Installs an image unless the lineage changed, an image as new is already there, or an
/// erasure came after its seq; drops the chunks of the image it replaces.
const INSTALL: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[4] then return 0 end
if tonumber(redis.call('GET', KEYS[3]) or '0') > tonumber(ARGV[2]) then return 0 end
local old = redis.call('HGET', KEYS[1], 'img')
local oldn = tonumber(redis.call('HGET', KEYS[1], 'img_chunks') or '0')
local oldseq = tonumber(redis.call('HGET', KEYS[1], 'img_seq') or '0')
if old and oldseq >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'img', ARGV[1], 'img_seq', ARGV[2], 'img_chunks', ARGV[3])
if old and old ~= ARGV[1] then
  for i = 0, oldn - 1 do redis.call('DEL', ARGV[5] .. old .. ':' .. i) end
end
return 1
"#;

/// The image the snapshot hash names, if any.
pub(super) async fn named(shared: &Shared) -> Result<Option<Named>, StoreError> {
    named_in(&shared.redis, &shared.keys).await
}

async fn named_in(redis: &super::Redis, keys: &Keys) -> Result<Option<Named>, StoreError> {
    let (id, seq, n): (Option<String>, Option<u64>, Option<usize>) = redis
        .query(
            redis::cmd("HMGET")
                .arg(keys.snap())
                .arg("img")
                .arg("img_seq")
                .arg("img_chunks"),
        )
        .await?;
    Ok(match (id, seq, n) {
        (Some(id), Some(seq), Some(chunks)) => Some(Named { id, seq, chunks }),
        _ => None,
    })
}

/// The image's bytes; None when it was replaced or dropped while being read.
async fn fetch(
    redis: &super::Redis,
    keys: &Keys,
    named: &Named,
) -> Result<Option<Vec<u8>>, StoreError> {
    chunks::get(redis, named.chunks, |i| keys.img_chunk(&named.id, i)).await
}

/// Whether this replica should build an image now: the newest is `image_every` events
/// behind the snapshot (or there is none), and no build of its own is under way. Images
/// are made at the snapshot's seq, so a replica that loads one finds the log before it in
/// the snapshot (its log copy has no hole).
pub(super) fn due(shared: &Shared, snap_seq: u64, image_seq: Option<u64>) -> bool {
    snap_seq > 0
        && shared.sink.seq() >= snap_seq
        && !shared.imaging.load(Ordering::Relaxed)
        && image_seq.is_none_or(|s| snap_seq.saturating_sub(s) >= shared.opts.image_every)
}

/// Builds and installs an image in a task of its own, so following never waits for it.
pub(super) fn spawn_build(shared: &Arc<Shared>) {
    if shared.imaging.swap(true, Ordering::AcqRel) {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        if let Err(e) = build(&shared).await {
            crate::telemetry::sync_error("image");
            tracing::warn!(error = %e, "redis: index image not written; the next heartbeat retries");
        }
        shared.imaging.store(false, Ordering::Release);
    });
}

async fn build(shared: &Shared) -> Result<(), StoreError> {
    let Some(epoch) = shared.epoch() else {
        return Ok(());
    };
    let k = &shared.keys;
    let lease = k.named_lease("image");
    let script = redis::Script::new(super::snapshot::TAKE_LEASE);
    let mut inv = script.prepare_invoke();
    inv.key(&lease).arg(&shared.owner).arg(LEASE_MS);
    if shared.redis.invoke::<i64>(&inv).await? != 1 {
        return Ok(());
    }
    let result = build_held(shared, &epoch).await;
    let release = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1",
    );
    let mut inv = release.prepare_invoke();
    inv.key(&lease).arg(&shared.owner);
    let _ = shared.redis.invoke::<i64>(&inv).await;
    result
}

async fn build_held(shared: &Shared, epoch: &str) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let cache = shared.lock().cache.clone();
    let until = shared.snap_seq.load(Ordering::Relaxed);
    let current = named(shared).await?;
    if until == 0 || cache.last_seq() < until || current.as_ref().is_some_and(|c| c.seq >= until) {
        return Ok(());
    }
    let base = match &current {
        Some(c) => fetch(&shared.redis, &shared.keys, c).await?,
        None => None,
    };
    let sink = shared.sink.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let read = |after: u64, limit: usize| cache.events_after(after, limit);
        sink.build_image(base.as_deref(), &read, until)
    })
    .await
    .map_err(|e| unavailable(e.to_string()))?
    .map_err(StoreError::Corrupt)?;
    let k = &shared.keys;
    let id = format!("{until}-{}", chunks::blob_id());
    let n = chunks::put(&shared.redis, &bytes, CHUNK, |i| k.img_chunk(&id, i)).await?;
    let script = redis::Script::new(INSTALL);
    let mut inv = script.prepare_invoke();
    inv.key(k.snap())
        .key(k.epoch())
        .key(k.erased())
        .arg(&id)
        .arg(until)
        .arg(n)
        .arg(epoch)
        .arg(k.img_chunk_prefix());
    if shared.redis.invoke::<i64>(&inv).await? != 1 {
        let _ = chunks::drop(&shared.redis, n, |i| k.img_chunk(&id, i)).await;
        return Ok(());
    }
    shared.image_seq.store(until, Ordering::Relaxed);
    shared.status().images_written += 1;
    tracing::info!(
        seq = until,
        bytes = bytes.len(),
        chunks = n,
        from_image = current.map(|c| c.seq),
        ms = started.elapsed().as_millis() as u64,
        "index image written to redis"
    );
    Ok(())
}

/// What a replica starting cold takes from Redis before it serves: the snapshot (the log
/// copy) and the newest index image, when there is one.
pub struct Preloaded {
    /// Where the blocks before the image are, for reads that need them before the
    /// background fetch (`backfill`) has them.
    opts: super::RedisOptions,
    pub(super) snap_seq: u64,
    pub(super) cache: LogCache,
    /// The image's seq and bytes, until taken.
    image: Option<(u64, Vec<u8>)>,
    /// The image the sink was loaded from and the events replayed after it.
    pub(super) started_from: Option<(u64, u64)>,
}

impl Preloaded {
    /// The events at `seqs` (sorted), from the snapshot; the blocks before the image that
    /// hold them are fetched first (the privacy events an image names are few).
    pub fn events_at(&self, seqs: &[u64]) -> Result<Vec<StoredEvent>, StoreError> {
        super::backfill::fetch_now(&self.opts, self.cache.unfetched_for(seqs))?;
        self.cache.events_at(seqs)
    }

    /// The image's seq and bytes (once).
    pub fn take_image(&mut self) -> Option<(u64, Vec<u8>)> {
        self.image.take()
    }

    /// Applies the snapshot's events after the sink's seq: those after the image over an
    /// index loaded from it (`image_seq`), all of them over an empty one.
    pub fn replay_into(
        &mut self,
        sink: &dyn crate::store::EventSink,
        image_seq: Option<u64>,
    ) -> Result<u64, StoreError> {
        let applied = super::follow::replay_copy(sink, &self.cache)?;
        self.started_from = image_seq.map(|s| (s, applied));
        Ok(applied)
    }
}

/// Reads the newest image and the snapshot after it, on a thread and runtime of its own
/// (the caller may be on any runtime, or none). None when Redis holds no image, or holds data
/// written under another privacy key (the follower then refuses it, as it would without this).
pub fn preload(
    opts: &super::RedisOptions,
    key_id: String,
) -> Result<Option<Preloaded>, StoreError> {
    let opts = opts.clone();
    super::backfill::on_own_runtime(move || async move { preload_async(&opts, &key_id).await })
}

async fn preload_async(
    opts: &super::RedisOptions,
    key_id: &str,
) -> Result<Option<Preloaded>, StoreError> {
    let redis = super::Redis::open(opts.target.clone(), opts.tls.clone(), opts.timeout)?;
    let keys = Keys::new(&opts.prefix);
    let stored: Option<String> = redis.query(redis::cmd("GET").arg(keys.key_id())).await?;
    if stored.as_deref() != Some(key_id) {
        return Ok(None);
    }
    for _ in 0..5 {
        let Some(named) = named_in(&redis, &keys).await? else {
            return Ok(None);
        };
        let Some(bytes) = fetch(&redis, &keys, &named).await? else {
            continue;
        };
        let Some((snap_seq, cache)) =
            super::follow::fetch_snapshot_from(&redis, &keys, named.seq).await?
        else {
            return Ok(None);
        };
        if snap_seq < named.seq {
            // Images are made at a snapshot's seq; one past it (a store put back from a
            // replica's older copy) is not used.
            return Ok(None);
        }
        return Ok(Some(Preloaded {
            opts: opts.clone(),
            snap_seq,
            cache,
            image: Some((named.seq, bytes)),
            started_from: None,
        }));
    }
    Err(unavailable(
        "the index image kept changing while it was read",
    ))
}
