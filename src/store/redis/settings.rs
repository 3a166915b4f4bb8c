//! The `[redis]` section of the config: where the shared store is and how replicas keep up
//! with it, validated into the store's options.
use super::{RedisOptions, conn};
use serde::Deserialize;

/// Where the shared store is and how replicas keep up with it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`; PREFLIGHT_REDIS_URL sets it (the Helm
    /// chart hands it over from a Secret).
    #[serde(default)]
    pub url: String,
    /// Key prefix; replicas with the same prefix share one store.
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
    /// Connect and response timeout; writes fail UNAVAILABLE after it while Redis is down.
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// How often an idle replica checks in with Redis (what keeps its index age low).
    #[serde(default = "default_redis_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Events between snapshots of the change log.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// Stream entries kept behind a snapshot for replicas slightly behind.
    #[serde(default = "default_stream_keep")]
    pub stream_keep: u64,
}

impl RedisConfig {
    pub fn with_url(url: &str) -> RedisConfig {
        RedisConfig {
            url: url.to_string(),
            prefix: default_redis_prefix(),
            timeout_ms: default_redis_timeout_ms(),
            heartbeat_ms: default_redis_heartbeat_ms(),
            snapshot_every: default_snapshot_every(),
            stream_keep: default_stream_keep(),
        }
    }

    /// The store's options, or what is wrong with the settings.
    pub fn options(&self, idempotency_hours: u32) -> Result<RedisOptions, String> {
        if self.url.trim().is_empty() {
            return Err("redis.url is empty: set it, or PREFLIGHT_REDIS_URL".into());
        }
        if !self.url.starts_with("redis://") {
            return Err(format!(
                "redis.url: `{}` must start with redis:// (rediss:// TLS is not built in)",
                conn::masked_url(&self.url)
            ));
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(format!(
                "redis.prefix: `{}` must be non-empty and without braces",
                self.prefix
            ));
        }
        if self.timeout_ms == 0 || self.heartbeat_ms == 0 || self.snapshot_every == 0 {
            return Err("redis.timeout_ms, heartbeat_ms and snapshot_every must be above 0".into());
        }
        let mut o = RedisOptions::new(&self.url);
        o.prefix = self.prefix.clone();
        o.timeout = std::time::Duration::from_millis(self.timeout_ms);
        o.heartbeat = std::time::Duration::from_millis(self.heartbeat_ms);
        o.snapshot_every = self.snapshot_every;
        o.stream_keep = self.stream_keep;
        o.idempotency_ttl_ms = i64::from(idempotency_hours) * 3_600_000;
        Ok(o)
    }
}

fn default_redis_prefix() -> String {
    "preflight".into()
}
fn default_redis_timeout_ms() -> u64 {
    2_000
}
fn default_redis_heartbeat_ms() -> u64 {
    500
}
fn default_snapshot_every() -> u64 {
    100_000
}
fn default_stream_keep() -> u64 {
    10_000
}
