//! The log blocks a replica started without: one that loads an index image fetches only the
//! snapshot's blocks after it before it serves, then the older ones here, in the background
//! (or at once, for the few a read needs first).
use super::conn::{Redis, blocking, unavailable};
use super::log::{self, LogEntry, Unfetched};
use super::{Keys, Shared, snapshot};
use crate::store::StoreError;
use std::sync::Arc;

/// Blocks per round trip.
const PER_TRIP: usize = 8;

/// Fills `todo` from Redis; returns how many it filled. A block gone from its key (an
/// erasure rewrote it, and the snapshot that holds the new version dropped the old) is read
/// from the current snapshot's blocks over the same seqs.
pub(super) async fn fetch(
    redis: &Redis,
    keys: &Keys,
    todo: &[Unfetched],
) -> Result<usize, StoreError> {
    let mut filled = 0;
    for group in todo.chunks(PER_TRIP) {
        let group: Vec<Unfetched> = group.iter().filter(|u| !u.is_filled()).cloned().collect();
        if group.is_empty() {
            continue;
        }
        let mut cmd = redis::cmd("MGET");
        for u in &group {
            cmd.arg(u.key());
        }
        let got: Vec<Option<Vec<u8>>> = redis.query(&cmd).await?;
        let mut gone = Vec::new();
        let mut here = Vec::new();
        for (u, gz) in group.into_iter().zip(got) {
            match gz {
                Some(gz) => here.push((u, gz)),
                None => gone.push(u),
            }
        }
        filled += here.len() + gone.len();
        blocking("log block fetch", move || {
            for (u, gz) in here {
                u.fill(gz)?;
            }
            Ok(())
        })
        .await?;
        for u in &gone {
            fetch_moved(redis, keys, u).await?;
        }
    }
    Ok(filled)
}

/// Reads the seqs of `u` from the blocks the current snapshot names over them.
async fn fetch_moved(redis: &Redis, keys: &Keys, u: &Unfetched) -> Result<(), StoreError> {
    let dir: Option<String> = redis
        .query(redis::cmd("HGET").arg(keys.snap()).arg("blocks"))
        .await?;
    let dir = dir.ok_or_else(|| unavailable("the snapshot names no blocks any more"))?;
    let (first, last) = u.seqs();
    let over: Vec<String> = snapshot::parse_directory(&dir)
        .filter(|(f, l, _)| *l >= first && *f <= last)
        .map(|(_, _, k)| k.to_string())
        .collect();
    if over.is_empty() {
        return Err(unavailable(format!(
            "the snapshot holds no block over seqs {first}..={last}"
        )));
    }
    let mut cmd = redis::cmd("MGET");
    for k in &over {
        cmd.arg(k);
    }
    let got: Vec<Option<Vec<u8>>> = redis.query(&cmd).await?;
    let mut blocks = Vec::with_capacity(got.len());
    for gz in got {
        // Replaced again while reading: the next pass reads the new directory.
        blocks.push(gz.ok_or_else(|| unavailable("the snapshot changed while it was read"))?);
    }
    let entries = blocking("log block fetch", move || {
        let mut out: Vec<LogEntry> = Vec::new();
        for gz in blocks {
            out.extend(
                log::decode(&gz)?
                    .into_iter()
                    .filter(|e| (first..=last).contains(&e.seq())),
            );
        }
        Ok(out)
    })
    .await?;
    Ok(u.fill_entries(&entries)?)
}

/// Fetches every block this replica's log copy still lacks, in a task of its own, retrying
/// at each heartbeat until they are all there (or the copy was replaced by a whole one).
pub(super) fn spawn(shared: &Arc<Shared>) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut blocks = 0usize;
        loop {
            let todo = shared.lock().cache.unfetched();
            if todo.is_empty() {
                break;
            }
            blocks = blocks.max(todo.len());
            match fetch(&shared.redis, &shared.keys, &todo).await {
                Ok(n) => shared.status().blocks_fetched_late += n as u64,
                Err(e) => {
                    shared.failed("backfill", &e);
                    tokio::time::sleep(shared.opts.heartbeat).await;
                }
            }
        }
        if blocks > 0 {
            tracing::info!(
                blocks,
                ms = started.elapsed().as_millis() as u64,
                "the log copy's blocks before the index image are fetched"
            );
        }
    });
}

/// For a synchronous reader that needs `todo` before the background fetch reaches them:
/// fetched at once (a block moved since the copy was made is left to the background).
pub(super) fn fetch_sync(shared: &Shared, todo: &[Unfetched]) -> Result<(), StoreError> {
    for group in todo.chunks(PER_TRIP) {
        let mut cmd = redis::cmd("MGET");
        for u in group {
            cmd.arg(u.key());
        }
        let got: Vec<Option<Vec<u8>>> = shared.redis.query_sync(&cmd)?;
        for (u, gz) in group.iter().zip(got) {
            match gz {
                Some(gz) => {
                    u.fill(gz)?;
                    shared.status().blocks_fetched_late += 1;
                }
                None if u.is_filled() => {}
                None => {
                    let (first, last) = u.seqs();
                    return Err(unavailable(format!(
                        "log block {first}..={last} moved in redis; it is being fetched again, try again shortly"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// `fetch` for a caller outside any runtime (the start, before the service runs one): on
/// a thread and runtime of its own.
pub(super) fn fetch_now(
    opts: &super::RedisOptions,
    todo: Vec<Unfetched>,
) -> Result<(), StoreError> {
    if todo.is_empty() {
        return Ok(());
    }
    let opts = opts.clone();
    on_own_runtime(move || async move {
        let redis = Redis::open(opts.target.clone(), opts.tls.clone(), opts.timeout)?;
        fetch(&redis, &Keys::new(&opts.prefix), &todo)
            .await
            .map(drop)
    })
}

/// Runs `f`'s future to the end on a thread and current-thread runtime of its own (the
/// caller may be on any runtime, or none).
pub(super) fn on_own_runtime<T, F>(f: impl FnOnce() -> F + Send + 'static) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    std::thread::Builder::new()
        .name("preflight-preload".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| unavailable(e.to_string()))?;
            rt.block_on(f())
        })
        .map_err(|e| unavailable(e.to_string()))?
        .join()
        .map_err(|_| unavailable("the preload thread panicked"))?
}
