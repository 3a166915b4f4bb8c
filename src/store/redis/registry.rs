//! Registry versions through Redis: the importing replica uploads the binary set in chunks
//! (hundreds of megabytes, not 258 million set members); the others download and swap it in.
use super::Shared;
use super::conn::unavailable;
use crate::registry::{ListInfo, RegistrySet};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const CHUNK: usize = 8 << 20;

#[derive(Serialize, Deserialize)]
struct Published {
    info: ListInfo,
    chunks: usize,
}

/// Only a newer version replaces the published one.
const PUBLISH: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local v = cjson.decode(cur)['info']['version']
  if v >= tonumber(ARGV[3]) then return cur end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[1])
if cur then return cur end
return ''
"#;

pub(super) async fn publish(shared: &Shared, set: Arc<RegistrySet>) -> Result<(), StoreError> {
    let info = set.info.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let mut v = Vec::with_capacity(set.heap_bytes() + 64);
        set.write_set(&mut v).map(|_| v)
    })
    .await
    .map_err(|e| unavailable(e.to_string()))?
    .map_err(|e| StoreError::Corrupt(format!("registry {}: {e}", info.name)))?;
    let k = &shared.keys;
    let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
    for (i, group) in chunks.chunks(4).enumerate() {
        let mut p = redis::pipe();
        for (j, c) in group.iter().enumerate() {
            p.set(k.registry_chunk(&info.name, info.version, i * 4 + j), *c)
                .ignore();
        }
        shared.redis.pipe::<()>(&p).await?;
    }
    let meta = serde_json::to_string(&Published {
        info: info.clone(),
        chunks: chunks.len(),
    })
    .expect("registry info serializes");
    let script = redis::Script::new(PUBLISH);
    let mut inv = script.prepare_invoke();
    inv.key(k.registries())
        .arg(&info.name)
        .arg(&meta)
        .arg(info.version)
        .arg(k.registry_channel());
    let previous: String = shared.redis.invoke(&inv).await?;
    if !previous.is_empty() {
        let prev: Published = serde_json::from_str(&previous)
            .map_err(|e| StoreError::Corrupt(format!("published registry info: {e}")))?;
        let drop_version = if prev.info.version >= info.version {
            // Someone published this version number (or a later one) first: keep theirs.
            Some((info.version, chunks.len()))
        } else {
            Some((prev.info.version, prev.chunks))
        };
        if let Some((v, n)) = drop_version {
            let mut p = redis::pipe();
            for i in 0..n {
                p.del(k.registry_chunk(&info.name, v, i)).ignore();
            }
            shared.redis.pipe::<()>(&p).await?;
        }
        if prev.info.version >= info.version {
            return Err(StoreError::Unavailable(format!(
                "list {} version {} was already published by another replica; import again",
                info.name, prev.info.version
            )));
        }
    }
    tracing::info!(list = %info.name, version = info.version, count = info.count, chunks = chunks.len(), "registry version published to redis");
    Ok(())
}

/// Installs every published list version newer than the one this replica serves.
pub(super) async fn fetch_newer(shared: &Shared) -> Result<(), StoreError> {
    let k = &shared.keys;
    let all: std::collections::HashMap<String, String> = shared
        .redis
        .query(redis::cmd("HGETALL").arg(k.registries()))
        .await?;
    for (list, meta) in all {
        let p: Published = serde_json::from_str(&meta)
            .map_err(|e| StoreError::Corrupt(format!("published registry {list}: {e}")))?;
        let local = shared
            .registries
            .get(&list)
            .map(|s| s.info.version)
            .unwrap_or(0);
        if p.info.version <= local {
            continue;
        }
        let mut bytes = Vec::new();
        for i in 0..p.chunks {
            let part: Option<Vec<u8>> = shared
                .redis
                .query(redis::cmd("GET").arg(k.registry_chunk(&list, p.info.version, i)))
                .await?;
            match part {
                Some(b) => bytes.extend_from_slice(&b),
                // Replaced by a newer version while reading: the next round gets that one.
                None => return Ok(()),
            }
        }
        let registries = shared.registries.clone();
        let info = p.info.clone();
        tokio::task::spawn_blocking(move || {
            let set = crate::registry::ef::EliasFano::read_from(&mut bytes.as_slice())
                .map_err(|e| format!("decoding: {e}"))?;
            if set.len() != info.count {
                return Err(format!(
                    "holds {} numbers, its info says {}",
                    set.len(),
                    info.count
                ));
            }
            registries.install(info, set).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .map_err(|e| {
            StoreError::Corrupt(format!("registry {list} version {}: {e}", p.info.version))
        })?;
        tracing::info!(list = %list, version = p.info.version, count = p.info.count, "registry version installed from redis");
    }
    Ok(())
}
