//! Assembles a running service: config to engine (store, index, policies), then the gRPC listener.
use crate::api::grpc::dispatch::{Dispatch, Handler, Opaque};
use crate::api::grpc::gate::GateLayer;
use crate::api::grpc::lanes;
use crate::api::grpc::services;
use crate::api::grpc::{
    AttemptApi, AuditApi, ConsentApi, DecisionApi, DncApi, EventApi, MessageLimits, PrivacyApi,
    WebhookApi,
};
use crate::audit::{Caller, Tokenizer};
use crate::auth::Auth;
use crate::clock::SharedClock;
use crate::config::{Config, ConfigError};
use crate::engine::images::Images;
use crate::engine::{Engine, EngineSettings, Policies, Projection};
use crate::model::DAY_MS;
use crate::normalize::Region;
use crate::proto;
use crate::registry::{Registries, RegistryError};
use crate::store::StoreError;
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore, read_events_from};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("registries: {0}")]
    Registry(#[from] RegistryError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(String),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthConfigError),
    #[error("tls: {0}")]
    Tls(String),
}

/// Who may call and how the listeners encrypt: shared by the gRPC and HTTP listeners.
#[derive(Clone, Default)]
pub struct Security {
    pub auth: Auth,
    pub tls: Option<TlsPem>,
    /// Signature checks that stand in for a token on the inbound webhook routes.
    pub signatures: crate::webhooks::InboundSignatures,
}

/// A PEM certificate chain and private key.
#[derive(Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl Security {
    /// Tokens from their environment variables or files, TLS material from its files.
    pub fn from_config(config: &Config) -> Result<Security, StartError> {
        let auth = Auth::load(&config.tokens, |k| std::env::var(k).ok())?;
        let tls = match &config.tls {
            None => None,
            Some(t) => {
                let read = |p: &std::path::Path| {
                    std::fs::read(p).map_err(|e| StartError::Tls(format!("{}: {e}", p.display())))
                };
                Some(TlsPem {
                    cert: read(&t.cert_file)?,
                    key: read(&t.key_file)?,
                })
            }
        };
        let signatures = config.inbound_signatures("config", &|k| std::env::var(k).ok())?;
        let s = Security {
            auth,
            tls,
            signatures,
        };
        // Parse now, so a bad certificate stops the start instead of the first handshake.
        s.rustls()?;
        Ok(s)
    }

    /// The HTTP listener's TLS acceptor (the gRPC listener has tonic build its own).
    pub fn rustls(&self) -> Result<Option<tokio_rustls::TlsAcceptor>, StartError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let Some(pem) = &self.tls else {
            return Ok(None);
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.cert)
            .collect::<Result<_, _>>()
            .map_err(|e| StartError::Tls(format!("cert_file: {e}")))?;
        if certs.is_empty() {
            return Err(StartError::Tls("cert_file holds no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&pem.key)
            .map_err(|e| StartError::Tls(format!("key_file: {e}")))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StartError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| StartError::Tls(format!("certificate and key: {e}")))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))))
    }
}

/// Everything of the engine the config decides, validated: what `check-config` runs.
pub fn engine_parts(
    config: &Config,
    origin: &str,
) -> Result<(Policies, Region, EngineSettings), StartError> {
    let invalid = |message: String| ConfigError::Invalid {
        origin: origin.into(),
        message,
    };
    let policies = Policies::new(&config.default_policy, config.compiled_policies(origin)?)
        .map_err(invalid)?;
    let region = Region::parse(&config.default_region)
        .map_err(|e| invalid(format!("default_region: {e}")))?;
    if let Some(r) = &config.redis {
        r.options(config.idempotency_hours).map_err(invalid)?;
    }
    config.index_images.validate().map_err(invalid)?;
    let settings = EngineSettings {
        archive_retention_ms: i64::from(config.archive_retention_days) * DAY_MS,
        max_reject_fraction: config.registry_max_reject_fraction,
        inbound: config.compiled_inbound(origin)?,
        export_dir: config.export_dir(),
        export_ttl_ms: i64::from(config.privacy.export_ttl_hours) * 3_600_000,
        webhooks: config.compiled_webhooks(origin, &|k| std::env::var(k).ok())?,
    };
    Ok((policies, region, settings))
}

/// The engine on the store the config names: Redis when `redis` is set, else embedded.
pub fn open(config: &Config, origin: &str, clock: SharedClock) -> Result<Arc<Engine>, StartError> {
    match &config.redis {
        Some(_) => open_redis(config, origin, clock),
        None => open_embedded(config, origin, clock),
    }
}

fn privacy_tokenizer(config: &Config) -> Result<Tokenizer, StartError> {
    let key_file = config.key_file();
    Ok(Tokenizer::load_or_create(&key_file)
        .map_err(|e| StoreError::Unavailable(format!("privacy key {}: {e}", key_file.display())))?)
}

/// Starts a replica on the shared Redis store. It returns at once; the index loads in the
/// background and the replica reports NOT_SERVING (and blocks checks) until it has.
/// Every replica must use the same privacy key file (a mounted Secret).
pub fn open_redis(
    config: &Config,
    origin: &str,
    clock: SharedClock,
) -> Result<Arc<Engine>, StartError> {
    let (policies, region, settings) = engine_parts(config, origin)?;
    let redis = config.redis.as_ref().ok_or_else(|| ConfigError::Invalid {
        origin: origin.into(),
        message: "redis is not configured".into(),
    })?;
    let mut opts =
        redis
            .options(config.idempotency_hours)
            .map_err(|message| ConfigError::Invalid {
                origin: origin.into(),
                message,
            })?;
    opts.copy_path = Some(config.data_dir.join("redis-copy.redb"));
    opts.log_dir = Some(config.data_dir.clone());
    let tokenizer = privacy_tokenizer(config)?;
    let registries = Arc::new(Registries::open(&config.data_dir.join("registries"))?);
    tracing::info!(target = %opts.describe_target(), prefix = %opts.prefix, "using the redis store");
    let (projection, preloaded) = preload_redis(&opts, &tokenizer);
    let store = crate::store::redis::RedisStore::start(
        opts,
        Arc::new(projection.clone()),
        registries.clone(),
        clock.clone(),
        preloaded,
    )?;
    let parts = (policies, region, settings);
    Ok(engine(
        &projection,
        registries,
        Arc::new(store),
        parts,
        clock,
    ))
}

/// The newest index image in Redis and the snapshot's log after it, loaded before the
/// replica serves. Without an image (a new store, Redis away, an image that fails its
/// checks) the replica starts empty and loads the whole log in the background, as the
/// follower always can.
fn preload_redis(
    opts: &crate::store::redis::RedisOptions,
    tokenizer: &Tokenizer,
) -> (Projection, Option<crate::store::redis::image::Preloaded>) {
    use crate::store::redis::image;
    let fresh = || (Projection::new(tokenizer.clone()), None);
    let started = std::time::Instant::now();
    let mut pre = match image::preload(opts, crate::store::redis::key_id(tokenizer)) {
        Ok(Some(p)) => p,
        Ok(None) => return fresh(),
        Err(e) => {
            tracing::warn!(error = %e, "redis: no index image loaded before serving; loading the log in the background");
            return fresh();
        }
    };
    let Some((seq, bytes)) = pre.take_image() else {
        return fresh();
    };
    let projection = match crate::engine::images::projection_from_image(tokenizer, &bytes, |s| {
        pre.events_at(s)
    }) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(image_seq = seq, error = %e, "redis: the index image failed its checks; loading the whole log in the background");
            metrics::counter!("preflight_index_image_rejected_total").increment(1);
            return fresh();
        }
    };
    drop(bytes);
    match pre.replay_into(&projection, Some(seq)) {
        Ok(replayed) => {
            tracing::info!(
                image_seq = seq,
                replayed,
                identifiers = projection.index.len(),
                ms = started.elapsed().as_millis() as u64,
                "index loaded from the redis index image"
            );
            (projection, Some(pre))
        }
        Err(e) => {
            tracing::error!(image_seq = seq, error = %e, "redis: the snapshot after the index image cannot be applied; loading the whole log in the background");
            fresh()
        }
    }
}

fn engine(
    projection: &Projection,
    registries: Arc<Registries>,
    store: Arc<dyn crate::store::Store>,
    (policies, region, settings): (Policies, Region, EngineSettings),
    clock: SharedClock,
) -> Arc<Engine> {
    Arc::new(Engine::new(
        projection, registries, store, policies, clock, region, settings,
    ))
}

/// Opens the embedded store in `config.data_dir`, rebuilds the index from it, and
/// returns an engine that writes through it.
pub fn open_embedded(
    config: &Config,
    origin: &str,
    clock: SharedClock,
) -> Result<Arc<Engine>, StartError> {
    let (policies, region, settings) = engine_parts(config, origin)?;
    let db = EmbeddedStore::open(&config.data_dir)?;
    let tokenizer = privacy_tokenizer(config)?;
    let images = Images::open(&config.data_dir, (&config.index_images).into())?;
    let last_seq = crate::store::embedded::last_seq_of(&db)?;
    let read = |after, limit| read_events_from(&db, after, limit);
    let projection = images.restore(&tokenizer, &read, last_seq)?;
    let index = projection.index.clone();
    tracing::info!(
        seq = index.seq(),
        identifiers = index.len(),
        "index rebuilt from the embedded store"
    );
    let opts = EmbeddedOptions {
        idempotency_retention_ms: i64::from(config.idempotency_hours) * 3_600_000,
    };
    let store: Arc<dyn crate::store::Store> = Arc::new(EmbeddedStore::start(
        db,
        &config.data_dir,
        Arc::new(projection.clone()),
        clock.clone(),
        opts,
    )?);
    images
        .spawn_builder(Arc::downgrade(&store), tokenizer)
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot start the index image builder: {e}"))
        })?;
    index.set_authoritative(true);
    let registries = Arc::new(Registries::open(&config.data_dir.join("registries"))?);
    for l in registries.list() {
        tracing::info!(list = %l.name, version = l.version, count = l.count, "registry loaded");
    }
    let parts = (policies, region, settings);
    Ok(engine(&projection, registries, store, parts, clock))
}

/// What a started service does besides answering: records the policies it enforces, picks
/// up unfinished privacy requests, and keeps the overdue-request gauge current.
pub async fn start_background(engine: &Arc<Engine>) -> Result<(), StartError> {
    // The embedded store is ready at once and its faults stop the start; a replica of a
    // shared store waits for its load and for the store (Redis may be away, or its
    // replicas not yet in sync for min_replicas_ack).
    if !engine.store_shared() {
        engine
            .audit_policy_load(&Caller::system("startup"))
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot audit the policy load: {e}")))?;
        engine.resume_requests();
        engine.start_webhooks();
    } else {
        // A replica of a shared store: once loaded, with Redis reachable.
        let e = engine.clone();
        tokio::spawn(async move {
            loop {
                if e.index().ready() {
                    match e.audit_policy_load(&Caller::system("startup")).await {
                        Ok(()) => break,
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot audit the policy load yet; retrying")
                        }
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            e.resume_requests();
            e.start_webhooks();
        });
    }
    let e = engine.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        for minute in 0u64.. {
            tick.tick().await;
            e.privacy_metrics();
            e.expire_bundles();
            // Only memory: checks never count an attempt past its window, and each new
            // attempt prunes its identifier's list. The sweep walks every shard under its
            // write lock, so it runs seldom.
            if minute % 15 == 14 {
                e.prune_attempts();
            }
        }
    });
    Ok(())
}

pub async fn bind(addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.into(),
            source,
        })
}

/// Largest message a service answers with: a full 10,000-item batch of answers.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Largest check message accepted: 10,000 checks each at the limit of every field (contact,
/// category, policy, correlation_id), with room for the enums, time and framing.
const MAX_CHECKS_MESSAGE: usize = crate::engine::MAX_BATCH
    * (crate::model::limits::MAX_CONTACT + 3 * crate::model::limits::MAX_LABEL + 128);

/// Largest DNC message accepted: 10,000 entries each at the limit of every field (contact,
/// list, source, note).
const MAX_ENTRIES_MESSAGE: usize = crate::engine::MAX_BATCH
    * (crate::model::limits::MAX_CONTACT
        + 2 * crate::model::limits::MAX_LABEL
        + crate::model::limits::MAX_TEXT
        + 128);

/// Largest attempts message: 10,000 attempts each at the limit of every field (contact,
/// subject, campaign_id).
const MAX_ATTEMPTS_MESSAGE: usize = crate::engine::MAX_BATCH
    * (crate::model::limits::MAX_CONTACT + 2 * crate::model::limits::MAX_LABEL + 128);

/// Largest consent service message: an import chunk of 10,000 rows each at the limit of
/// every field (it also bounds the single-record calls of that service).
const MAX_IMPORT_MESSAGE: usize = crate::engine::MAX_BATCH
    * (crate::model::limits::MAX_CONTACT
        + 4 * crate::model::limits::MAX_LABEL
        + crate::model::limits::MAX_EXTERNAL_ID
        + crate::model::limits::MAX_TEXT
        + 128);

pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 32 << 20;

/// Accepted connections with Nagle off: tonic's own `tcp_nodelay` applies only to
/// listeners it binds itself, and with Nagle on, responses wait 40 ms for delayed ACKs.
pub fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(60)))
}

/// Keeps gRPC health in step with readiness: NOT_SERVING until a replica's first full
/// load, again if it finds it can no longer trust its state, and while its store cannot
/// make writes durable.
fn follow_readiness(engine: Arc<Engine>, reporter: tonic_health::server::HealthReporter) {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let ready = engine.readiness().is_ok();
            if last != Some(ready) {
                let status = if ready {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                for name in services::health_names() {
                    reporter.set_service_status(name, status).await;
                }
                last = Some(ready);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
}

/// The listener's services, each under its row of `services::SERVICES`.
fn dispatch(
    engine: &Arc<Engine>,
    runtime: &tokio::runtime::Handle,
    health: Opaque,
) -> Result<Dispatch, StartError> {
    use proto::attempt_service_server::AttemptServiceServer;
    use proto::audit_service_server::AuditServiceServer;
    use proto::consent_service_server::ConsentServiceServer;
    use proto::dnc_service_server::DncServiceServer;
    use proto::event_service_server::EventServiceServer;
    use proto::privacy_service_server::PrivacyServiceServer;
    use proto::webhook_service_server::WebhookServiceServer;
    let reflection = || {
        // Each version lists both (a client asks either what the server offers).
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let transport = |e: tonic_reflection::server::Error| StartError::Transport(e.to_string());
    let reflection_v1 = reflection().build_v1().map_err(transport)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(transport)?;

    Dispatch::new(vec![
        (
            services::DECISION,
            Handler::Decision(DecisionApi::new(
                engine.clone(),
                runtime.clone(),
                MessageLimits {
                    decoding: MAX_CHECKS_MESSAGE,
                    encoding: MAX_MESSAGE,
                },
            )),
        ),
        (
            services::CONSENT,
            Handler::Consent(
                ConsentServiceServer::new(ConsentApi::new(engine.clone()))
                    .max_decoding_message_size(MAX_IMPORT_MESSAGE),
            ),
        ),
        (
            services::DNC,
            Handler::Dnc(
                DncServiceServer::new(DncApi::new(engine.clone()))
                    .max_decoding_message_size(MAX_ENTRIES_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            ),
        ),
        (
            services::ATTEMPTS,
            Handler::Attempts(
                AttemptServiceServer::new(AttemptApi::new(engine.clone()))
                    .max_decoding_message_size(MAX_ATTEMPTS_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            ),
        ),
        (
            services::EVENTS,
            Handler::Events(EventServiceServer::new(EventApi::new(engine.clone()))),
        ),
        (
            services::AUDIT,
            Handler::Audit(AuditServiceServer::new(AuditApi::new(engine.clone()))),
        ),
        (
            services::PRIVACY,
            Handler::Privacy(PrivacyServiceServer::new(PrivacyApi::new(engine.clone()))),
        ),
        (
            services::WEBHOOKS,
            Handler::Webhooks(WebhookServiceServer::new(WebhookApi::new(engine.clone()))),
        ),
        (services::HEALTH, Handler::Opaque(health)),
        (
            services::REFLECTION_V1,
            Handler::Opaque(Opaque::new(reflection_v1)),
        ),
        (
            services::REFLECTION_V1ALPHA,
            Handler::Opaque(Opaque::new(reflection_v1alpha)),
        ),
    ])
    .map_err(StartError::Transport)
}

/// Serves gRPC (preflight.v1, health, reflection) until `shutdown` resolves.
pub async fn serve_grpc(
    engine: Arc<Engine>,
    listener: TcpListener,
    security: Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    follow_readiness(engine.clone(), health);
    // The runtime this runs on: batches are decided on it, and it has one lane per worker
    // (PREFLIGHT_WORKER_THREADS, else one per core).
    let runtime = tokio::runtime::Handle::current();
    let dispatch = dispatch(&engine, &runtime, Opaque::new(health_service))?;

    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, seq = engine.index().seq(), tls = security.tls.is_some(), "serving gRPC");
    let mut builder = tonic::transport::Server::builder();
    if let Some(pem) = &security.tls {
        let identity = tonic::transport::Identity::from_pem(&pem.cert, &pem.key);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| StartError::Tls(e.to_string()))?;
    }
    let server = builder
        .layer(GateLayer::new(security.auth.clone()))
        .tcp_nodelay(true)
        // Batches of 10,000 are hundreds of kilobytes: HTTP/2's default 64 KB window would
        // stall each one on flow-control round trips.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW));
    let lanes = runtime.metrics().num_workers();
    let serve = |_lane: usize| -> lanes::Serve {
        let (server, dispatch) = (server.clone(), dispatch.clone());
        Box::new(move |conns, signal| {
            Box::pin(async move {
                server
                    .serve_with_incoming_shutdown(dispatch, conns, signal)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
    };
    lanes::run(lanes, incoming(listener), serve, shutdown)
        .await
        .map_err(StartError::Transport)
}

/// Serves the REST facade, /metrics and the HTTP probes until `shutdown` resolves.
pub async fn serve_http(
    engine: Arc<Engine>,
    listener: TcpListener,
    security: Security,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let router = crate::api::rest::router(crate::api::rest::RestState {
        engine,
        auth: security.auth.clone(),
        signatures: security.signatures.clone(),
        metrics,
    });
    tracing::info!(%addr, tls = security.tls.is_some(), "serving REST, /metrics and probes");
    crate::api::rest::serve(listener, router, security.rustls()?, shutdown)
        .await
        .map_err(|e| StartError::Transport(e.to_string()))
}
