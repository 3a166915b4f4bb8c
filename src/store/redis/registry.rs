//! Registry versions through Redis: the importing replica uploads the binary set in chunks
//! (hundreds of megabytes, not 258 million set members); the others download and swap it in.
use super::conn::unavailable;
use super::{Shared, chunks};
use crate::registry::{ListInfo, RegistrySet};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const CHUNK: usize = 8 << 20;

#[derive(Serialize, Deserialize)]
struct Published {
    info: ListInfo,
    /// The upload the chunks belong to: two replicas publishing one version number never
    /// write (or drop) each other's chunks.
    blob: String,
    chunks: usize,
}

impl Published {
    fn chunk(&self, k: &super::Keys, i: usize) -> String {
        k.registry_chunk(&self.info.name, self.info.version, &self.blob, i)
    }
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
    let mut mine = Published {
        info: info.clone(),
        blob: chunks::blob_id(),
        chunks: 0,
    };
    mine.chunks = chunks::put(&shared.redis, &bytes, CHUNK, |i| mine.chunk(k, i)).await?;
    let meta = serde_json::to_string(&mine).expect("registry info serializes");
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
        if prev.info.version >= info.version {
            // Someone published this version number (or a later one) first: keep theirs.
            chunks::drop(&shared.redis, mine.chunks, |i| mine.chunk(k, i)).await?;
            return Err(StoreError::Unavailable(format!(
                "list {} version {} was already published by another replica; import again",
                info.name, prev.info.version
            )));
        }
        chunks::drop(&shared.redis, prev.chunks, |i| prev.chunk(k, i)).await?;
    }
    tracing::info!(list = %info.name, version = info.version, count = info.count, chunks = mine.chunks, "registry version published to redis");
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
        let Some(bytes) = chunks::get(&shared.redis, p.chunks, |i| p.chunk(k, i)).await? else {
            // Replaced by a newer version while reading: the next round gets that one.
            return Ok(());
        };
        let registries = shared.registries.clone();
        let info = p.info.clone();
        tokio::task::spawn_blocking(move || {
            let set = crate::registry::set::NumberSet::read_from(&mut bytes.as_slice())
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
