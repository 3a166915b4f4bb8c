//! Connections to Redis that fail fast while it is down and reconnect on the next call.
//!
//! The redis crate's connection manager retries inside a call, so a write would hang while
//! Redis is away; here a call fails with `Unavailable` after the timeout and the broken
//! connection is dropped, so the next call dials again. Behind Sentinel each dial asks the
//! sentinels for the current master first, so a failover is followed by reconnecting.
use super::super::StoreError;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, FromRedisValue};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where the master is: a URL, whatever the sentinels say, or a Redis Cluster.
#[derive(Clone, Debug)]
pub enum Target {
    Url(String),
    Sentinel(SentinelSpec),
    Cluster(ClusterSpec),
}

/// A Redis Cluster: the nodes to start from (the slot map is learned from them).
#[derive(Clone)]
pub struct ClusterSpec {
    pub nodes: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: bool,
}

impl std::fmt::Debug for ClusterSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSpec")
            .field("nodes", &self.nodes)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// An async connection: one multiplexed connection, or the cluster client's (which routes
/// by key, follows MOVED and ASK and refreshes its slot map).
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

enum SyncConn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl SyncConn {
    fn query<T: FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            SyncConn::Single(c) => cmd.query(c),
            SyncConn::Cluster(c) => cmd.query(c.as_mut()),
        }
    }
}

/// The Redis Cluster slot of a key (CRC16-XMODEM of its hash tag, mod 16384).
pub fn key_slot(key: &str) -> u16 {
    let k = key.as_bytes();
    let tagged = k
        .iter()
        .position(|b| *b == b'{')
        .and_then(|o| {
            let rest = &k[o + 1..];
            rest.iter()
                .position(|b| *b == b'}')
                .filter(|c| *c > 0)
                .map(|c| &rest[..c])
        })
        .unwrap_or(k);
    let mut crc: u16 = 0;
    for b in tagged {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[derive(Clone)]
pub struct SentinelSpec {
    /// `host:port` of each sentinel, asked in order.
    pub sentinels: Vec<String>,
    pub master: String,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    /// Credentials and database of the master.
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
    /// TLS to the sentinels and the master.
    pub tls: bool,
}

impl std::fmt::Debug for SentinelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelSpec")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// PEM material for TLS connections: a private CA (else the system roots) and a client
/// certificate and key for mutual TLS.
#[derive(Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

pub struct Redis {
    target: Arc<(Target, TlsFiles)>,
    /// The client for the master as last resolved; None until the next dial resolves it.
    client: std::sync::Mutex<Option<Client>>,
    /// The cluster client, with a cluster target.
    cluster: Option<redis::cluster::ClusterClient>,
    conn: tokio::sync::Mutex<Option<Conn>>,
    sync: std::sync::Mutex<Option<SyncConn>>,
    timeout: Duration,
    /// `host:port` of the master the last dial reached (Sentinel), and how often it changed.
    master: std::sync::Mutex<Option<String>>,
    failovers: AtomicU64,
}

pub fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Runs `f` off the async workers (disk or decoding work); `what` names it if it dies.
pub async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| unavailable(format!("{what}: {e}")))?
}

/// The URL without its password, for logs and errors.
pub fn masked_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// A client for `info`, with the CA and client certificate when it is a TLS address.
fn client_for(info: ConnectionInfo, tls: &TlsFiles) -> redis::RedisResult<Client> {
    let is_tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
    if is_tls && (tls.ca.is_some() || tls.client.is_some()) {
        Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: tls.client.clone().map(|(c, k)| redis::ClientTlsConfig {
                    client_cert: c,
                    client_key: k,
                }),
                root_cert: tls.ca.clone(),
            },
        )
    } else {
        Client::open(info)
    }
}

fn addr_info(
    host: &str,
    port: u16,
    tls: bool,
    user: Option<&str>,
    password: Option<&str>,
    db: i64,
) -> redis::RedisResult<ConnectionInfo> {
    use redis::IntoConnectionInfo;
    let addr = if tls {
        ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_string(), port)
    };
    let mut settings = redis::RedisConnectionInfo::default().set_db(db);
    if let Some(u) = user {
        settings = settings.set_username(u);
    }
    if let Some(p) = password {
        settings = settings.set_password(p);
    }
    Ok(addr.into_connection_info()?.set_redis_settings(settings))
}

/// A client for one `host:port` node (a sentinel, a cluster node) with these credentials.
fn node_client(
    node: &str,
    tls: bool,
    user: Option<&str>,
    password: Option<&str>,
    files: &TlsFiles,
) -> redis::RedisResult<Client> {
    let (host, port) = host_port(node).ok_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "not host:port"))
    })?;
    addr_info(&host, port, tls, user, password, 0).and_then(|i| client_for(i, files))
}

/// `host:port`, split.
pub fn host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    (!h.is_empty()).then(|| Some((h.to_string(), p.parse().ok()?)))?
}

/// Asks the sentinels, in order, where the master is.
fn resolve(
    spec: &SentinelSpec,
    tls: &TlsFiles,
    timeout: Duration,
) -> Result<(String, u16), StoreError> {
    let mut faults = Vec::new();
    for s in &spec.sentinels {
        let asked = node_client(
            s,
            spec.tls,
            spec.sentinel_username.as_deref(),
            spec.sentinel_password.as_deref(),
            tls,
        )
        .and_then(|c| c.get_connection_with_timeout(timeout))
        .and_then(|mut c| {
            c.set_read_timeout(Some(timeout))?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&spec.master)
                .query::<Option<(String, u16)>>(&mut c)
        });
        match asked {
            Ok(Some(addr)) => return Ok(addr),
            Ok(None) => faults.push(format!("{s} knows no master named `{}`", spec.master)),
            Err(e) => faults.push(format!("{s}: {e}")),
        }
    }
    Err(unavailable(format!(
        "no sentinel named the master `{}`: {}",
        spec.master,
        faults.join("; ")
    )))
}

/// Response timeouts one call on the shared connection may take in all: the cluster
/// client's first try and its two retries, and their back-off.
const CALL_BOUND: u32 = 4;

/// The cluster client for `spec`: timeouts, credentials and TLS as for a single node.
fn cluster_client(
    spec: &ClusterSpec,
    tls: &TlsFiles,
    timeout: Duration,
) -> Result<redis::cluster::ClusterClient, StoreError> {
    let mut nodes = Vec::new();
    for n in &spec.nodes {
        let (host, port) = host_port(n)
            .ok_or_else(|| unavailable(format!("cluster node `{n}` is not host:port")))?;
        nodes.push(
            addr_info(
                &host,
                port,
                spec.tls,
                spec.username.as_deref(),
                spec.password.as_deref(),
                0,
            )
            .map_err(unavailable)?,
        );
    }
    let mut b = redis::cluster::ClusterClientBuilder::new(nodes)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        // A failover takes the node timeout and an election: retry within the call only
        // briefly; the caller's retry (with its idempotency key) covers the rest.
        .retries(2);
    if let Some(u) = &spec.username {
        b = b.username(u);
    }
    if let Some(p) = &spec.password {
        b = b.password(p);
    }
    if spec.tls {
        b = b.tls(redis::TlsMode::Secure);
        if tls.ca.is_some() || tls.client.is_some() {
            b = b.certs(redis::TlsCertificates {
                client_tls: tls.client.clone().map(|(c, k)| redis::ClientTlsConfig {
                    client_cert: c,
                    client_key: k,
                }),
                root_cert: tls.ca.clone(),
            });
        }
    }
    b.build()
        .map_err(|e| StoreError::Unavailable(format!("redis cluster: {e}")))
}

/// The master's client and address, through the sentinels.
fn resolve_client(
    target: &(Target, TlsFiles),
    timeout: Duration,
) -> Result<(Client, String), StoreError> {
    let (Target::Sentinel(spec), tls) = target else {
        return Err(unavailable("no redis client"));
    };
    let (host, port) = resolve(spec, tls, timeout)?;
    let info = addr_info(
        &host,
        port,
        spec.tls,
        spec.username.as_deref(),
        spec.password.as_deref(),
        spec.db,
    )
    .map_err(unavailable)?;
    Ok((
        client_for(info, tls).map_err(unavailable)?,
        format!("{host}:{port}"),
    ))
}

impl Redis {
    pub fn open(target: Target, tls: TlsFiles, timeout: Duration) -> Result<Redis, StoreError> {
        // A URL is checked now, so a bad one (or bad TLS material) stops the start.
        let client = match &target {
            Target::Url(url) => {
                use redis::IntoConnectionInfo;
                let info = url.as_str().into_connection_info().map_err(|e| {
                    StoreError::Unavailable(format!("redis url `{}`: {e}", masked_url(url)))
                })?;
                Some(client_for(info, &tls).map_err(|e| {
                    StoreError::Unavailable(format!("redis url `{}`: {e}", masked_url(url)))
                })?)
            }
            Target::Sentinel(_) | Target::Cluster(_) => None,
        };
        let cluster = match &target {
            Target::Cluster(spec) => Some(cluster_client(spec, &tls, timeout)?),
            _ => None,
        };
        Ok(Redis {
            target: Arc::new((target, tls)),
            cluster,
            client: std::sync::Mutex::new(client),
            conn: tokio::sync::Mutex::new(None),
            sync: std::sync::Mutex::new(None),
            timeout,
            master: std::sync::Mutex::new(None),
            failovers: AtomicU64::new(0),
        })
    }

    /// A plain URL's Redis, for tools and tests.
    pub fn open_url(url: &str, timeout: Duration) -> Result<Redis, StoreError> {
        Self::open(Target::Url(url.to_string()), TlsFiles::default(), timeout)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The master's address as last resolved through Sentinel, and the failovers seen.
    pub fn master(&self) -> (Option<String>, u64) {
        (
            self.master
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            self.failovers.load(Ordering::Relaxed),
        )
    }

    /// The client for the current master, resolving it through the sentinels when there is
    /// none (blocking: on a runtime, call `client_async`).
    fn client_blocking(&self) -> Result<Client, StoreError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let (client, addr) = resolve_client(&self.target, self.timeout)?;
        Ok(self.install(client, addr))
    }

    async fn client_async(&self) -> Result<Client, StoreError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let (target, timeout) = (self.target.clone(), self.timeout);
        let (client, addr) = tokio::task::spawn_blocking(move || resolve_client(&target, timeout))
            .await
            .map_err(|e| unavailable(format!("sentinel lookup: {e}")))??;
        Ok(self.install(client, addr))
    }

    fn cached(&self) -> Option<Client> {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Remembers the master just resolved, counting a change of address as a failover.
    fn install(&self, client: Client, addr: String) -> Client {
        let mut m = self.master.lock().unwrap_or_else(|e| e.into_inner());
        if m.as_ref().is_some_and(|old| *old != addr) {
            self.failovers.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(master = %addr, previous = %m.as_deref().unwrap_or_default(), "redis master changed (sentinel failover)");
        }
        *m = Some(addr);
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
        client
    }

    /// After a failed call: behind Sentinel the master is asked for again on the next dial.
    fn forget_master(&self) {
        if matches!(self.target.0, Target::Sentinel(_)) {
            *self.client.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// A pub/sub connection to the current master; in a cluster, to the first node that
    /// answers (PUBLISH reaches every node's subscribers).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, StoreError> {
        if let (Target::Cluster(spec), tls) = &*self.target {
            let mut faults = Vec::new();
            for n in &spec.nodes {
                let client = node_client(
                    n,
                    spec.tls,
                    spec.username.as_deref(),
                    spec.password.as_deref(),
                    tls,
                )
                .map_err(|e| unavailable(format!("{n}: {e}")))?;
                match tokio::time::timeout(self.timeout, client.get_async_pubsub()).await {
                    Ok(Ok(p)) => return Ok(p),
                    Ok(Err(e)) => faults.push(format!("{n}: {e}")),
                    Err(_) => faults.push(format!("{n}: timed out")),
                }
            }
            return Err(unavailable(format!(
                "no cluster node took a pub/sub connection: {}",
                faults.join("; ")
            )));
        }
        let client = self.client_async().await?;
        match tokio::time::timeout(self.timeout, client.get_async_pubsub()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => {
                self.forget_master();
                Err(unavailable(e))
            }
            Err(_) => {
                self.forget_master();
                Err(unavailable("pub/sub connect timed out"))
            }
        }
    }

    /// The shared connection, dialled if there is none.
    async fn conn(&self) -> Result<Conn, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = match &self.cluster {
            Some(cluster) => {
                match tokio::time::timeout(self.timeout, cluster.get_async_connection()).await {
                    Ok(Ok(c)) => Conn::Cluster(c),
                    Ok(Err(e)) => return Err(unavailable(e)),
                    Err(_) => return Err(unavailable("cluster connect timed out")),
                }
            }
            None => {
                let cfg = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                let client = tokio::time::timeout(self.timeout * CALL_BOUND, self.client_async())
                    .await
                    .map_err(|_| unavailable("finding the Redis master timed out"))??;
                // Bounded here too: the dial runs under the connection's lock, so a dial that
                // never finished (its handshake unanswered) would hold every later call.
                let dial = client.get_multiplexed_async_connection_with_config(&cfg);
                match tokio::time::timeout(self.timeout * CALL_BOUND, dial).await {
                    Ok(Ok(c)) => Conn::Single(c),
                    Ok(Err(e)) => {
                        self.forget_master();
                        return Err(unavailable(e));
                    }
                    Err(_) => {
                        self.forget_master();
                        return Err(unavailable("connecting to Redis timed out"));
                    }
                }
            }
        };
        *slot = Some(c.clone());
        Ok(c)
    }

    /// `WAIT n ms` on the connection that wrote `key` (in a cluster, its slot's master's).
    pub async fn wait(&self, n: u32, ms: u64, key: &str) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(n).arg(ms);
        self.query_at(cmd, key).await
    }

    /// A command that names no key (SCAN, WAIT) sent where `key` lives: in a cluster, to
    /// the master of its slot rather than to any node.
    pub async fn query_at<T: FromRedisValue>(
        &self,
        cmd: redis::Cmd,
        key: &str,
    ) -> Result<T, StoreError> {
        let answer = match self.conn().await? {
            Conn::Single(mut c) => self.bounded(cmd.query_async(&mut c)).await,
            Conn::Cluster(mut c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(key_slot(key), SlotAddr::Master),
                ));
                self.bounded(c.route_command(cmd, route))
                    .await
                    .and_then(|v| redis::from_redis_value(v).map_err(redis::RedisError::from))
            }
        };
        self.checked(answer).await
    }

    /// A call's answer; a connection that failed is forgotten, so the next call dials anew.
    async fn checked<T>(&self, answer: redis::RedisResult<T>) -> Result<T, StoreError> {
        let e = match answer {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let demoted = matches!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        );
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_unrecoverable_error()
            || demoted
        {
            *self.conn.lock().await = None;
            *self.sync.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.forget_master();
        }
        Err(unavailable(e))
    }

    /// Drops the shared connections (the next call dials anew), unless a call holds the
    /// connection's lock right now.
    pub fn reset(&self) {
        if let Ok(mut slot) = self.conn.try_lock() {
            *slot = None;
        }
        *self.sync.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.forget_master();
    }

    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let answer = match self.conn().await? {
            Conn::Single(mut c) => self.bounded(cmd.query_async(&mut c)).await,
            Conn::Cluster(mut c) => self.bounded(cmd.query_async(&mut c)).await,
        };
        self.checked(answer).await
    }

    pub async fn pipe<T: FromRedisValue>(&self, p: &redis::Pipeline) -> Result<T, StoreError> {
        let answer = match self.conn().await? {
            Conn::Single(mut c) => self.bounded(p.query_async(&mut c)).await,
            Conn::Cluster(mut c) => self.bounded(p.query_async(&mut c)).await,
        };
        self.checked(answer).await
    }

    pub async fn invoke<T: FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let answer = match self.conn().await? {
            Conn::Single(mut c) => self.bounded(inv.invoke_async(&mut c)).await,
            Conn::Cluster(mut c) => self.bounded(inv.invoke_async(&mut c)).await,
        };
        self.checked(answer).await
    }

    /// A call on the shared connection, given up after `CALL_BOUND` response timeouts as a
    /// timed-out I/O error (so `checked` drops the connection and the next call dials anew).
    /// The client's own timeout covers each try on a node; this covers the rest: a cluster
    /// connection whose slot's master was killed mid-call was seen to leave the call (a
    /// commit round, the follower's heartbeat) pending for good, and with it every write
    /// and the replica's index.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        let bound = self.timeout * CALL_BOUND;
        match tokio::time::timeout(bound, call).await {
            Ok(answer) => answer,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from Redis within {} ms", bound.as_millis()),
            ))),
        }
    }

    fn dial_sync(&self) -> Result<SyncConn, StoreError> {
        if let Some(cluster) = &self.cluster {
            let c = cluster.get_connection().map_err(unavailable)?;
            c.set_read_timeout(Some(self.timeout))
                .map_err(unavailable)?;
            c.set_write_timeout(Some(self.timeout))
                .map_err(unavailable)?;
            return Ok(SyncConn::Cluster(Box::new(c)));
        }
        let c = self
            .client_blocking()?
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| {
                self.forget_master();
                unavailable(e)
            })?;
        c.set_read_timeout(Some(self.timeout))
            .map_err(unavailable)?;
        c.set_write_timeout(Some(self.timeout))
            .map_err(unavailable)?;
        Ok(SyncConn::Single(c))
    }

    /// A blocking query for the store's synchronous readers (audit and history reads);
    /// on a multi-threaded runtime the worker is handed back while it waits.
    pub fn query_sync<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let run = || {
            let mut slot = self.sync.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(self.dial_sync()?);
            }
            let c = slot.as_mut().expect("dialled above");
            match c.query(cmd) {
                Ok(v) => Ok(v),
                Err(e) => {
                    *slot = None;
                    Err(unavailable(e))
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        }
    }
}
