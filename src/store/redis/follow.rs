//! Keeping a replica in step: the first full load (snapshot, then the stream after it),
//! pub/sub notices applied strictly in seq order, gap catch-up from the stream, heartbeats,
//! and what to do when Redis comes back without its data.
use super::conn::unavailable;
use super::log::{LogCache, LogEntry, Notice};
use super::{Shared, apply_entries, image, registry, snapshot};
use crate::store::StoreError;
use futures::StreamExt;
use std::sync::atomic::Ordering;

/// Stream entries fetched per round trip while catching up.
const PAGE: usize = 2_000;

pub(super) async fn run(shared: std::sync::Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.opts.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        let subscribed = async {
            let mut ps = tokio::time::timeout(shared.opts.timeout, shared.redis.pubsub())
                .await
                .map_err(|_| unavailable("timed out connecting for pub/sub"))??;
            tokio::time::timeout(
                shared.opts.timeout,
                ps.subscribe(&[shared.keys.channel(), shared.keys.registry_channel()]),
            )
            .await
            .map_err(|_| unavailable("timed out subscribing"))?
            .map_err(unavailable)?;
            Ok::<_, StoreError>(ps)
        }
        .await;
        let ps = match subscribed {
            Ok(ps) => ps,
            Err(e) => {
                shared.failed("connect", &e);
                tokio::time::sleep(shared.opts.heartbeat).await;
                continue;
            }
        };
        // Subscribed first, then loaded: anything committed in between arrives as a
        // notice, and a notice for something already loaded is skipped.
        if let Err(e) = sync_now(&shared).await {
            shared.failed("load", &e);
            tokio::time::sleep(shared.opts.heartbeat).await;
            continue;
        }
        let mut messages = ps.into_on_message();
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(msg) => {
                        step(&shared, "notice", on_message(&shared, msg)).await;
                    }
                    None => {
                        shared.failed("pubsub_closed", &"the pub/sub connection closed");
                        break;
                    }
                },
                _ = tick.tick() => {
                    ticks += 1;
                    if let Some(Err(e)) = step(&shared, "heartbeat", heartbeat(&shared, ticks)).await {
                        shared.failed("heartbeat", &e);
                    }
                    super::mirror::spawn_sync(&shared);
                    let image = shared.image_seq.load(Ordering::Relaxed);
                    let snap = shared.snap_seq.load(Ordering::Relaxed);
                    if image::due(&shared, snap, (image > 0).then_some(image)) {
                        image::spawn_build(&shared);
                    }
                },
                _ = shared.snapshot_wanted.notified() => snapshot::spawn(&shared),
            }
        }
    }
}

/// Bound on one step of following, in response timeouts: every Redis call is bounded
/// already, so this is for an await that is not one (a replica was seen to stop following
/// for good after a Sentinel failover, no error logged, every thread idle).
const STEP_BOUND: u32 = 60;

/// Runs one step of following (a notice, a heartbeat, a snapshot), given up after
/// `STEP_BOUND` response timeouts: a step that never finishes would stop the replica
/// following for good. The abandoned step is logged by name and counted, and the shared
/// connection dropped so the next step dials anew.
async fn step<T>(
    shared: &Shared,
    what: &'static str,
    f: impl std::future::Future<Output = T>,
) -> Option<T> {
    let bound = shared.opts.timeout * STEP_BOUND;
    match tokio::time::timeout(bound, f).await {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::error!(
                step = what,
                bound_ms = bound.as_millis() as u64,
                "redis: a step of following did not finish; abandoned, the connection is dialled anew"
            );
            shared.failed(
                "stalled",
                &format!("{what} did not finish within {} ms", bound.as_millis()),
            );
            shared.redis.reset();
            None
        }
    }
}

async fn on_message(shared: &Shared, msg: redis::Msg) {
    if msg.get_channel_name() == shared.keys.registry_channel() {
        if let Err(e) = registry::fetch_newer(shared).await {
            shared.failed("registry", &e);
        }
        return;
    }
    let notice: Notice = match serde_json::from_slice(msg.get_payload_bytes()) {
        Ok(n) => n,
        Err(e) => {
            shared.failed("decode", &e);
            return;
        }
    };
    if shared.epoch().as_deref() != Some(notice.epoch.as_str()) {
        // Another lineage: the heartbeat decides what that means.
        if let Err(e) = heartbeat(shared, 0).await {
            shared.failed("heartbeat", &e);
        }
        return;
    }
    match shared.apply(&notice.entries) {
        Ok(()) => shared.heard(),
        Err(expected) => {
            tracing::warn!(
                expected,
                got = notice.entries.first().map(|e| e.seq()),
                "change notice skipped ahead; catching up from the stream"
            );
            crate::telemetry::sync_error("gap");
            if let Err(e) = catch_up(shared).await {
                shared.failed("catch_up", &e);
            }
        }
    }
}

/// Where the store is: its seq, epoch, last snapshot and pending scrub.
struct Position {
    seq: u64,
    /// How far this replica may apply: `seq`, or less with replica acknowledgements.
    visible: u64,
    epoch: Option<String>,
    snap_seq: u64,
    scrub: u64,
    /// The audit trail's head and the idempotency log's last entry id, read in the same
    /// round trip for the replica's copy (an idle heartbeat then asks nothing more).
    audit_head: Option<String>,
    idem_last: Option<String>,
    /// The newest index image's seq, if there is one.
    image_seq: Option<u64>,
}

async fn position(shared: &Shared) -> Result<Position, StoreError> {
    let k = &shared.keys;
    type StreamEntry = (String, Vec<(String, String)>);
    type Read = (
        Option<u64>,
        Option<String>,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        Option<String>,
        Vec<StreamEntry>,
        Option<u64>,
    );
    let (seq, epoch, snap_seq, scrub, acked, audit_head, idem_last, image_seq): Read = shared
        .redis
        .pipe(
            redis::pipe()
                .get(k.seq())
                .get(k.epoch())
                .hget(k.snap(), "seq")
                .get(k.scrub())
                .get(k.acked())
                .get(k.head())
                .cmd("XREVRANGE")
                .arg(k.idem_log())
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .hget(k.snap(), "img_seq"),
        )
        .await?;
    Ok(Position {
        image_seq,
        seq: seq.unwrap_or(0),
        visible: shared.visible(seq.unwrap_or(0), acked),
        epoch,
        snap_seq: snap_seq.unwrap_or(0),
        scrub: scrub.unwrap_or(0),
        audit_head,
        idem_last: idem_last.into_iter().next().map(|(id, _)| id),
    })
}

/// The first load (until one has finished), or a catch-up after the pub/sub connection
/// came back.
async fn sync_now(shared: &Shared) -> Result<(), StoreError> {
    if shared.epoch().is_none() {
        first_load(shared).await?;
    } else {
        heartbeat(shared, 0).await?;
    }
    Ok(())
}

/// Sets `key` unless it is set; returns what it holds afterwards.
async fn set_if_absent(shared: &Shared, key: &str, value: &str) -> Result<String, StoreError> {
    let (_, now): (Option<String>, Option<String>) = shared
        .redis
        .pipe(
            redis::pipe()
                .cmd("SET")
                .arg(key)
                .arg(value)
                .arg("NX")
                .cmd("GET")
                .arg(key),
        )
        .await?;
    now.ok_or_else(|| unavailable(format!("{key} vanished right after it was set")))
}

async fn first_load(shared: &Shared) -> Result<(), StoreError> {
    let k = &shared.keys;
    // Every replica must hash erased identifiers with the same key, or an erased person's
    // opt-out would not be found on some of them.
    let key_id = shared.key_id();
    let stored = set_if_absent(shared, &k.key_id(), &key_id).await?;
    if stored != key_id {
        crate::telemetry::sync_error("privacy_key");
        return Err(StoreError::Corrupt(
            "this replica's privacy key differs from the one the store was written with; \
             mount the same privacy.key on every replica"
                .into(),
        ));
    }
    let pos = position(shared).await?;
    let epoch = match pos.epoch {
        Some(e) => e,
        None if pos.seq == 0 && pos.snap_seq == 0 => {
            // A new store: whoever comes first names its lineage.
            let fresh = hex::encode(rand::random::<[u8; 12]>());
            set_if_absent(shared, &k.epoch(), &fresh).await?
        }
        None => {
            return Err(StoreError::Corrupt(format!(
                "the store holds seq {} but no epoch; was the key evicted? (set maxmemory-policy noeviction)",
                pos.seq
            )));
        }
    };
    let started = std::time::Instant::now();
    if pos.snap_seq > shared.sink.seq() {
        load_snapshot(shared).await?;
    }
    catch_up(shared).await?;
    registry::fetch_newer(shared).await?;
    // The epoch marks the first load as done: a load that fails before here is started
    // over (sync_now), not taken for finished.
    shared.lock().epoch = Some(epoch.clone());
    shared.sink.set_loaded(true);
    tracing::info!(
        seq = shared.sink.seq(),
        identifiers = shared.sink.identifiers(),
        epoch = %epoch,
        ms = started.elapsed().as_millis() as u64,
        "replica loaded from redis"
    );
    Ok(())
}

/// One poll of the store: keeps an idle replica fresh, notices missed notices, a reset
/// store, and snapshot and registry work.
pub(super) async fn heartbeat(shared: &Shared, tick: u64) -> Result<(), StoreError> {
    // Read before asking Redis: this replica's own commits may be applied meanwhile, and
    // the store's seq can only be at or past what was applied before the question.
    let applied = shared.sink.seq();
    let pos = position(shared).await?;
    shared.snap_seq.store(pos.snap_seq, Ordering::Relaxed);
    shared
        .image_seq
        .store(pos.image_seq.unwrap_or(0), Ordering::Relaxed);
    let mine = shared.epoch();
    let index = &*shared.sink;
    if pos.epoch != mine {
        return store_reset(shared, &pos).await;
    }
    if pos.seq < applied {
        index.set_loaded(false);
        return Err(StoreError::Corrupt(format!(
            "the store is at seq {} but this replica applied {applied}: it lost acknowledged \
             writes; this replica stops serving until it is restarted",
            pos.seq
        )));
    }
    catch_up_to(shared, pos.visible).await?;
    let due = index.seq().saturating_sub(pos.snap_seq) >= shared.opts.snapshot_every;
    if pos.scrub > pos.snap_seq {
        shared.snapshot_scrub.store(true, Ordering::Release);
    }
    if due || pos.scrub > pos.snap_seq {
        // Written in a task of its own: uploads at 10^8 events must not hold up following.
        shared.snapshot_wanted.notify_one();
    }
    if tick.is_multiple_of(10) {
        registry::fetch_newer(shared).await?;
    }
    // The copy is for a Redis that comes back empty: `run` brings it up to date in a task
    // of its own, so following (and Watch delivery) never waits for its disk writes.
    *shared.copy_due() = Some((pos.audit_head, pos.idem_last));
    Ok(())
}

/// Redis answers with another lineage, or none: it restarted without its data (or was
/// flushed). A replica holding the log puts it back under its own epoch; until someone
/// has, writes are refused and the replica stops hearing (checks go stale).
async fn store_reset(shared: &Shared, pos: &Position) -> Result<(), StoreError> {
    let mine = shared.epoch();
    if shared.sink.seq() == 0 && pos.epoch.is_some() {
        // Nothing applied yet: this replica simply follows the lineage the store holds.
        shared.lock().epoch = pos.epoch.clone();
        return catch_up_to(shared, pos.visible).await;
    }
    crate::telemetry::sync_error("store_reset");
    tracing::error!(store_epoch = ?pos.epoch, replica_epoch = ?mine, store_seq = pos.seq, "redis lost its data");
    if pos.seq == 0 && pos.snap_seq == 0 {
        if snapshot::reseed(shared).await? {
            let mut s = shared.status();
            s.reseeds += 1;
            drop(s);
            tracing::warn!(
                seq = shared.sink.seq(),
                "redis re-seeded from this replica's log"
            );
            crate::telemetry::sync_error("reseeded");
            shared.heard();
            return Ok(());
        }
        return Err(unavailable(
            "redis is empty; another replica is re-seeding it",
        ));
    }
    shared.sink.set_loaded(false);
    Err(StoreError::Corrupt(format!(
        "redis holds another lineage (epoch {:?} at seq {}) than this replica loaded ({mine:?}); \
         restart this replica to load it",
        pos.epoch, pos.seq
    )))
}

/// Fetches and applies everything after the index's seq, up to the store's seq; from the
/// snapshot when the stream no longer reaches back that far.
pub(super) async fn catch_up(shared: &Shared) -> Result<(), StoreError> {
    let k = &shared.keys;
    let (seq, acked): (Option<u64>, Option<u64>) = shared
        .redis
        .pipe(redis::pipe().get(k.seq()).get(k.acked()))
        .await?;
    catch_up_to(shared, shared.visible(seq.unwrap_or(0), acked)).await
}

/// `catch_up` when the store's seq is already known.
async fn catch_up_to(shared: &Shared, target: u64) -> Result<(), StoreError> {
    let index = &*shared.sink;
    while index.seq() < target {
        let cur = index.seq();
        let page = read_stream(shared, cur + 1, PAGE).await?;
        if page.first().map(|e| e.seq()) != Some(cur + 1) {
            // Trimmed past this replica's position: the snapshot has it.
            load_snapshot(shared).await?;
            if index.seq() == cur {
                return Err(StoreError::Corrupt(format!(
                    "seq {} is neither in the stream nor in the snapshot",
                    cur + 1
                )));
            }
            continue;
        }
        if let Err(expected) = shared.apply(&page) {
            return Err(StoreError::Corrupt(format!(
                "the stream skips seq {expected}"
            )));
        }
    }
    shared.heard();
    Ok(())
}

/// Stream entries from seq `from`, at most `count`.
async fn read_stream(
    shared: &Shared,
    from: u64,
    count: usize,
) -> Result<Vec<LogEntry>, StoreError> {
    let raw: Vec<(String, Vec<Vec<u8>>)> = shared
        .redis
        .query(
            redis::cmd("XRANGE")
                .arg(shared.keys.log())
                .arg(format!("{from}-0"))
                .arg("+")
                .arg("COUNT")
                .arg(count),
        )
        .await?;
    raw.into_iter()
        .map(|(id, fields)| parse_stream_entry(&id, &fields))
        .collect()
}

fn parse_stream_entry(id: &str, fields: &[Vec<u8>]) -> Result<LogEntry, StoreError> {
    let bad = |m: String| StoreError::Corrupt(format!("stream entry {id}: {m}"));
    let mut e = None;
    let mut r = Vec::new();
    for pair in fields.chunks(2) {
        match (pair[0].as_slice(), pair.get(1)) {
            (b"e", Some(v)) => e = Some(serde_json::from_slice(v).map_err(|x| bad(x.to_string()))?),
            (b"r", Some(v)) => r = serde_json::from_slice(v).map_err(|x| bad(x.to_string()))?,
            _ => {}
        }
    }
    let e: crate::model::StoredEvent = e.ok_or_else(|| bad("no event".into()))?;
    if !id.starts_with(&format!("{}-", e.seq)) {
        return Err(bad(format!("holds seq {}", e.seq)));
    }
    Ok(LogEntry { e, r })
}

/// Downloads the current snapshot (retrying if a newer one replaces it meanwhile).
pub(super) async fn fetch_snapshot(shared: &Shared) -> Result<Option<(u64, LogCache)>, StoreError> {
    fetch_snapshot_from(&shared.redis, &shared.keys, 0).await
}

/// `fetch_snapshot` on a connection of its own.
/// The snapshot's seq and its blocks as a log copy. Blocks that end at or before
/// `leave_upto` are left to fetch later (`backfill`): a replica loading an index image at
/// that seq needs only those after it to serve.
pub(super) async fn fetch_snapshot_from(
    redis: &super::Redis,
    keys: &super::Keys,
    leave_upto: u64,
) -> Result<Option<(u64, LogCache)>, StoreError> {
    for _ in 0..5 {
        let meta: std::collections::HashMap<String, String> =
            redis.query(redis::cmd("HGETALL").arg(keys.snap())).await?;
        let Some(seq) = meta.get("seq") else {
            return Ok(None);
        };
        let seq: u64 = seq
            .parse()
            .map_err(|_| StoreError::Corrupt("snapshot seq".into()))?;
        if let Some(dir) = meta.get("blocks") {
            match fetch_blocks(redis, dir, leave_upto).await? {
                Some(cache) if cache.last_seq() == seq => return Ok(Some((seq, cache))),
                Some(cache) => {
                    return Err(StoreError::Corrupt(format!(
                        "the snapshot's blocks end at {} but it says {seq}",
                        cache.last_seq()
                    )));
                }
                // A block was replaced while reading: read the new directory.
                None => continue,
            }
        }
        // A snapshot of the former format: one blob in chunks.
        let (Some(id), Some(chunks)) = (meta.get("id"), meta.get("chunks")) else {
            return Ok(None);
        };
        let chunks: usize = chunks
            .parse()
            .map_err(|_| StoreError::Corrupt("snapshot chunks".into()))?;
        let Some(bytes) = super::chunks::get(redis, chunks, |i| keys.snap_chunk(id, i)).await?
        else {
            // Replaced while reading: read the new one.
            continue;
        };
        let cache = tokio::task::spawn_blocking(move || LogCache::from_bytes(&bytes))
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if cache.last_seq() != seq {
            return Err(StoreError::Corrupt(format!(
                "snapshot {id} ends at {} but says {seq}",
                cache.last_seq()
            )));
        }
        return Ok(Some((seq, cache)));
    }
    Err(unavailable("the snapshot kept changing while it was read"))
}

/// The blocks a snapshot directory names, as a log copy (those ending at or before
/// `leave_upto` named, not fetched); None when one is gone (the snapshot was replaced
/// meanwhile).
async fn fetch_blocks(
    redis: &super::Redis,
    dir: &str,
    leave_upto: u64,
) -> Result<Option<LogCache>, StoreError> {
    let listed: Vec<(u64, u64, &str)> = snapshot::parse_directory(dir).collect();
    let mut blocks = Vec::with_capacity(listed.len());
    let later = listed.partition_point(|(_, last, _)| *last <= leave_upto);
    for (first, last, key) in &listed[..later] {
        blocks.push((*first, *last, std::sync::Arc::<str>::from(*key), None));
    }
    for group in listed[later..].chunks(8) {
        let mut cmd = redis::cmd("MGET");
        for (_, _, k) in group {
            cmd.arg(*k);
        }
        let got: Vec<Option<Vec<u8>>> = redis.query(&cmd).await?;
        for ((first, last, key), gz) in group.iter().zip(got) {
            let Some(gz) = gz else {
                return Ok(None);
            };
            blocks.push((*first, *last, std::sync::Arc::<str>::from(*key), Some(gz)));
        }
    }
    tokio::task::spawn_blocking(move || LogCache::from_blocks(blocks))
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .map(Some)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Applies the snapshot's entries after the index's seq and adopts it as the log copy.
async fn load_snapshot(shared: &Shared) -> Result<(), StoreError> {
    let Some((seq, cache)) = fetch_snapshot(shared).await? else {
        return Ok(());
    };
    shared.snap_seq.store(seq, Ordering::Relaxed);
    let after = shared.sink.seq();
    if seq <= after {
        return Ok(());
    }
    let mut st = shared.lock();
    replay_copy(&*shared.sink, &cache)?;
    shared.adopt(&mut st, cache);
    tracing::info!(seq, "applied redis snapshot");
    Ok(())
}

/// Applies a whole log copy's entries after the sink's seq, one by one (the copy already
/// carries its erasures' rewrites); returns how many were applied.
pub(super) fn replay_copy(
    sink: &dyn crate::store::EventSink,
    cache: &LogCache,
) -> Result<u64, StoreError> {
    let (from, mut applied) = (sink.seq(), 0u64);
    let mut result = Ok(());
    let walked = cache.for_each_after(from, |en| {
        if result.is_ok() {
            result = apply_entries(sink, None, std::slice::from_ref(&en));
            applied += 1;
        }
        Ok(())
    });
    walked?;
    result.map_err(|expected| StoreError::Corrupt(format!("snapshot skips seq {expected}")))?;
    Ok(applied)
}

/// Builds a projection from Redis alone (snapshot, then stream), without starting a
/// replica: for tools and tests that compare replicas with the store.
pub async fn load_projection<S: crate::store::EventSink + Clone>(
    opts: &super::RedisOptions,
    sink: S,
) -> Result<S, StoreError> {
    let shared = Shared {
        redis: super::conn::Redis::open(opts.target.clone(), opts.tls.clone(), opts.timeout)?,
        keys: super::Keys::new(&opts.prefix),
        sink: std::sync::Arc::new(sink.clone()),
        registries: std::sync::Arc::new(crate::registry::Registries::in_memory()),
        clock: std::sync::Arc::new(crate::clock::SystemClock),
        opts: opts.clone(),
        owner: String::new(),
        state: Default::default(),
        snapshot_wanted: Default::default(),
        copy: None,
        snap_seq: Default::default(),
        image_seq: Default::default(),
        imaging: Default::default(),
        snapshotting: Default::default(),
        snapshot_scrub: Default::default(),
        mirroring: Default::default(),
        copy_due: Default::default(),
        status: Default::default(),
    };
    load_snapshot(&shared).await?;
    catch_up(&shared).await?;
    Ok(sink)
}
