//! The `[redis]` section of the config: where the shared store is and how replicas keep up
//! with it, validated into the store's options.
use super::RedisOptions;
use super::conn::{self, Target, TlsFiles};
use serde::Deserialize;
use std::path::{Path, PathBuf};

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
    /// Events between index images in Redis (written with a snapshot once this many have
    /// come since the last image): what a replica starting cold loads instead of replaying
    /// the whole log.
    #[serde(default = "default_image_every")]
    pub image_every: u64,
    /// PEM CA that signed the server's certificate (a private CA, as Memorystore issues);
    /// the system roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Allows `rediss://...#insecure` (no certificate verification); refused otherwise.
    #[serde(default)]
    pub allow_insecure_tls: bool,
    /// Sentinels (`host:port`) to ask for the master, instead of `url`.
    #[serde(default)]
    pub sentinels: Vec<String>,
    #[serde(default)]
    pub sentinel_master: String,
    #[serde(default)]
    pub sentinel_username: Option<String>,
    #[serde(default)]
    pub sentinel_password: Option<String>,
    /// Redis Cluster nodes (`host:port`) to start from, instead of `url`.
    #[serde(default)]
    pub cluster_nodes: Vec<String>,
    /// The master's credentials, database and TLS with `sentinels` or `cluster_nodes` (a
    /// `url` carries its own).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub db: i64,
    #[serde(default)]
    pub tls: bool,
    /// Redis replicas that must hold each commit before any caller is answered (WAIT).
    #[serde(default)]
    pub min_replicas_ack: u32,
    /// How long a commit waits for them; past it the write fails UNAVAILABLE.
    #[serde(default = "default_replica_ack_timeout_ms")]
    pub replica_ack_timeout_ms: u64,
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
            image_every: default_image_every(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            allow_insecure_tls: false,
            sentinels: Vec::new(),
            cluster_nodes: Vec::new(),
            sentinel_master: String::new(),
            sentinel_username: None,
            sentinel_password: None,
            username: None,
            password: None,
            db: 0,
            tls: false,
            min_replicas_ack: 0,
            replica_ack_timeout_ms: default_replica_ack_timeout_ms(),
        }
    }

    /// The store's options, or what is wrong with the settings (naming the key or file).
    pub fn options(&self, idempotency_hours: u32) -> Result<RedisOptions, String> {
        let mut given = Vec::new();
        if !self.url.trim().is_empty() {
            given.push("redis.url");
        }
        if !self.sentinels.is_empty() {
            given.push("redis.sentinels");
        }
        if !self.cluster_nodes.is_empty() {
            given.push("redis.cluster_nodes");
        }
        let target = match given.as_slice() {
            [] => {
                return Err(
                    "redis.url is empty: set it (or PREFLIGHT_REDIS_URL), redis.sentinels or redis.cluster_nodes".into(),
                );
            }
            ["redis.url"] => self.url_target()?,
            ["redis.sentinels"] => self.sentinel_target()?,
            ["redis.cluster_nodes"] => self.cluster_target()?,
            both => {
                return Err(format!(
                    "{} are all set: give one (with Sentinel or Cluster, credentials go in redis.username and redis.password)",
                    both.join(" and ")
                ));
            }
        };
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(format!(
                "redis.prefix: `{}` must be non-empty and without braces",
                self.prefix
            ));
        }
        if self.timeout_ms == 0
            || self.heartbeat_ms == 0
            || self.snapshot_every == 0
            || self.image_every == 0
        {
            return Err(
                "redis.timeout_ms, heartbeat_ms, snapshot_every and image_every must be above 0"
                    .into(),
            );
        }
        if self.min_replicas_ack > 0
            && (self.replica_ack_timeout_ms == 0 || self.replica_ack_timeout_ms >= self.timeout_ms)
        {
            return Err(format!(
                "redis.replica_ack_timeout_ms: {}; it must be above 0 (WAIT 0 waits forever) and below redis.timeout_ms ({})",
                self.replica_ack_timeout_ms, self.timeout_ms
            ));
        }
        let mut o = RedisOptions::new("");
        o.target = target;
        o.tls = self.tls_files()?;
        o.prefix = self.prefix.clone();
        o.timeout = std::time::Duration::from_millis(self.timeout_ms);
        o.heartbeat = std::time::Duration::from_millis(self.heartbeat_ms);
        o.snapshot_every = self.snapshot_every;
        o.stream_keep = self.stream_keep;
        o.image_every = self.image_every;
        o.idempotency_ttl_ms = i64::from(idempotency_hours) * 3_600_000;
        o.min_replicas_ack = self.min_replicas_ack;
        o.replica_ack_timeout = std::time::Duration::from_millis(self.replica_ack_timeout_ms);
        Ok(o)
    }

    fn url_target(&self) -> Result<Target, String> {
        let shown = conn::masked_url(&self.url);
        if !self.url.starts_with("redis://") && !self.url.starts_with("rediss://") {
            return Err(format!(
                "redis.url: `{shown}` must start with redis:// or rediss:// (TLS)"
            ));
        }
        if self.url.contains("#insecure") && !self.allow_insecure_tls {
            return Err(format!(
                "redis.url: `{shown}` turns certificate verification off (#insecure); set redis.allow_insecure_tls = true to allow it"
            ));
        }
        let tls_keys = self.ca_file.is_some() || self.client_cert_file.is_some();
        if tls_keys && !self.url.starts_with("rediss://") {
            return Err(format!(
                "redis.ca_file and redis.client_cert_file need a rediss:// URL, not `{shown}`"
            ));
        }
        if !self.sentinel_master.is_empty() || self.username.is_some() || self.password.is_some() {
            return Err(
                "redis.sentinel_master, redis.username and redis.password go with redis.sentinels; with redis.url, put credentials in the URL".into(),
            );
        }
        Ok(Target::Url(self.url.clone()))
    }

    fn cluster_target(&self) -> Result<Target, String> {
        for (i, n) in self.cluster_nodes.iter().enumerate() {
            if conn::host_port(n).is_none() {
                return Err(format!("redis.cluster_nodes.{i}: `{n}` is not host:port"));
            }
        }
        if self.db != 0 {
            return Err(format!(
                "redis.db: {}; a Redis Cluster has only database 0",
                self.db
            ));
        }
        if !self.sentinel_master.is_empty() {
            return Err(
                "redis.sentinel_master goes with redis.sentinels, not redis.cluster_nodes".into(),
            );
        }
        if (self.ca_file.is_some() || self.client_cert_file.is_some()) && !self.tls {
            return Err("redis.ca_file and redis.client_cert_file need redis.tls = true".into());
        }
        Ok(Target::Cluster(conn::ClusterSpec {
            nodes: self.cluster_nodes.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            tls: self.tls,
        }))
    }

    fn sentinel_target(&self) -> Result<Target, String> {
        if self.sentinel_master.trim().is_empty() {
            return Err("redis.sentinel_master: empty; name the master the sentinels watch".into());
        }
        for (i, s) in self.sentinels.iter().enumerate() {
            if conn::host_port(s).is_none() {
                return Err(format!("redis.sentinels.{i}: `{s}` is not host:port"));
            }
        }
        if (self.ca_file.is_some() || self.client_cert_file.is_some()) && !self.tls {
            return Err("redis.ca_file and redis.client_cert_file need redis.tls = true".into());
        }
        Ok(Target::Sentinel(conn::SentinelSpec {
            sentinels: self.sentinels.clone(),
            master: self.sentinel_master.clone(),
            sentinel_username: self.sentinel_username.clone(),
            sentinel_password: self.sentinel_password.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            db: self.db,
            tls: self.tls,
        }))
    }

    /// The CA and client certificate, read and parsed now so a bad file stops the start.
    fn tls_files(&self) -> Result<TlsFiles, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let read = |key: &str, p: &Path| {
            std::fs::read(p).map_err(|e| format!("redis.{key}: cannot read {}: {e}", p.display()))
        };
        let certs = |key: &str, p: &Path, pem: &[u8]| {
            let n = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("redis.{key}: {}: {e}", p.display()))?
                .len();
            if n == 0 {
                return Err(format!(
                    "redis.{key}: {} holds no PEM certificate",
                    p.display()
                ));
            }
            Ok(())
        };
        let ca = match &self.ca_file {
            Some(p) => {
                let pem = read("ca_file", p)?;
                certs("ca_file", p, &pem)?;
                Some(pem)
            }
            None => None,
        };
        let client = match (&self.client_cert_file, &self.client_key_file) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "redis.client_cert_file and redis.client_key_file go together (mutual TLS)"
                        .into(),
                );
            }
            (Some(c), Some(k)) => {
                let cert = read("client_cert_file", c)?;
                certs("client_cert_file", c, &cert)?;
                let key = read("client_key_file", k)?;
                PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|e| format!("redis.client_key_file: {}: {e}", k.display()))?;
                Some((cert, key))
            }
        };
        Ok(TlsFiles { ca, client })
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
fn default_image_every() -> u64 {
    1_000_000
}
fn default_stream_keep() -> u64 {
    10_000
}
fn default_replica_ack_timeout_ms() -> u64 {
    1_000
}
