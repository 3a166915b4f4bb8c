//! Large values (index images, registry versions, snapshots of the former format) as
//! numbered chunks: written, read and dropped a few chunks per round trip, so no single
//! request or reply is huge.
use super::conn::Redis;
use crate::store::StoreError;

/// Chunks per round trip.
const PER_TRIP: usize = 4;

/// A random id for one upload, so that two uploads never write the same keys.
pub fn blob_id() -> String {
    hex::encode(rand::random::<[u8; 4]>())
}

/// Writes `bytes` as chunks of `size` bytes under `key(0)`, `key(1)`, ...; returns how many.
pub async fn put(
    redis: &Redis,
    bytes: &[u8],
    size: usize,
    key: impl Fn(usize) -> String,
) -> Result<usize, StoreError> {
    let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
    for (trip, group) in chunks.chunks(PER_TRIP).enumerate() {
        let mut p = redis::pipe();
        for (j, c) in group.iter().enumerate() {
            p.set(key(trip * PER_TRIP + j), *c).ignore();
        }
        redis.pipe::<()>(&p).await?;
    }
    Ok(chunks.len())
}

/// Reads `n` chunks back into one buffer; None when any is gone (replaced meanwhile).
pub async fn get(
    redis: &Redis,
    n: usize,
    key: impl Fn(usize) -> String,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    for start in (0..n).step_by(PER_TRIP) {
        let mut cmd = redis::cmd("MGET");
        for i in start..(start + PER_TRIP).min(n) {
            cmd.arg(key(i));
        }
        let parts: Vec<Option<Vec<u8>>> = redis.query(&cmd).await?;
        for p in parts {
            match p {
                Some(b) => out.extend_from_slice(&b),
                None => return Ok(None),
            }
        }
    }
    Ok(Some(out))
}

pub async fn drop(
    redis: &Redis,
    n: usize,
    key: impl Fn(usize) -> String,
) -> Result<(), StoreError> {
    let mut p = redis::pipe();
    for i in 0..n {
        p.del(key(i)).ignore();
    }
    redis.pipe::<()>(&p).await
}
