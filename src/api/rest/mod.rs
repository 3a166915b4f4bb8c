//! The REST/JSON facade (axum) on its own port: checks, consent, inbound messages, an SMS
//! webhook, /metrics, health probes and the OpenAPI document. Calls the engine in-process.
pub mod body;
pub mod routes;
mod signed;

use crate::auth::{Auth, Role};
use crate::engine::Engine;
use crate::error::Error;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The OpenAPI 3.1 description of this facade, served at /openapi.json.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Largest request body: a 10,000-item batch with generous fields.
const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct RestState {
    pub engine: Arc<Engine>,
    pub auth: Auth,
    pub signatures: crate::webhooks::InboundSignatures,
    pub metrics: Option<PrometheusHandle>,
}

/// The role each route needs: that of the gRPC method it stands for (one table,
/// `api::grpc::services`); None for probes, metrics and the API description.
pub fn route_role(path: &str) -> Option<Role> {
    use crate::api::grpc::services::role;
    match path {
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" => None,
        "/v1/check" | "/v1/check/batch" => role("/preflight.v1.DecisionService/CheckBatch"),
        "/v1/consent" => role("/preflight.v1.ConsentService/RecordConsent"),
        "/v1/attempts" => role("/preflight.v1.AttemptService/RecordAttempts"),
        "/v1/inbound" | "/v1/webhooks/sms" => role("/preflight.v1.ConsentService/ProcessInbound"),
        _ => Some(Role::Admin),
    }
}

pub fn router(state: RestState) -> Router {
    routes::routes()
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// An engine error as JSON, with the HTTP status derived from the gRPC mapping.
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::api::status::response(self.0)
    }
}

/// Every request: credentials against the route's role, then a latency observation.
async fn gate(State(state): State<RestState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    // SMS providers can only put credentials in the webhook URL, so only the two provider
    // webhook routes take Basic.
    let allow_basic = matches!(route.as_str(), "/v1/webhooks/sms" | "/v1/inbound");
    // A route with a signature check configured is authenticated by it, in its handler
    // (the signature covers the body).
    let signed = match route.as_str() {
        "/v1/webhooks/sms" => state.signatures.twilio.is_some(),
        "/v1/inbound" => state.signatures.hmac.is_some(),
        _ => false,
    };
    let authorized = if signed {
        Ok(None)
    } else {
        crate::auth::authorize_headers(&state.auth, route_role(&route), req.headers(), allow_basic)
    };
    match authorized {
        Ok(Some(p)) => {
            req.extensions_mut().insert(p);
        }
        Ok(None) => {}
        Err(denied) => {
            crate::telemetry::auth_failure("rest", denied.kind());
            let peer = req
                .extensions()
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0);
            crate::telemetry::refusal_log().refused("rest", peer, |suppressed| {
                tracing::warn!(route = %route, reason = denied.kind(), suppressed, "request refused: {denied}");
            });
            return crate::api::status::response(Error::from(denied));
        }
    }
    let span = tracing::info_span!("rest", route = %route);
    let mut resp = tracing::Instrument::instrument(next.run(req), span).await;
    if crate::api::status::is_body_too_large(&resp) {
        resp = crate::api::status::body_too_large(MAX_BODY);
    }
    let status = resp.status();
    crate::telemetry::request(
        "rest",
        &route,
        status_label(status),
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// Exact codes for the ones the facade answers on purpose; classes for the rest, so the
/// label set stays bounded.
fn status_label(s: StatusCode) -> &'static str {
    const EXACT: &[(u16, &str)] = &[
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (409, "409"),
        (429, "429"),
        (503, "503"),
    ];
    let code = s.as_u16();
    if let Some((_, l)) = EXACT.iter().find(|(c, _)| *c == code) {
        return l;
    }
    match code {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Serves `router` on `listener` until `shutdown`, over TLS when an acceptor is given.
/// Each connection carries its peer address for the audit trail.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use tower::ServiceExt;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = router
            .clone()
            .map_request(move |mut r: Request<hyper::body::Incoming>| {
                r.extensions_mut()
                    .insert(axum::extract::ConnectInfo::<SocketAddr>(peer));
                r.map(axum::body::Body::new)
            });
        let hyper_svc = hyper_util::service::TowerToHyperService::new(svc);
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => {
                        let conn = builder.serve_connection(TokioIo::new(s), hyper_svc);
                        watcher.watch(conn.into_owned()).await
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), hyper_svc);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in routes::PATHS {
            assert!(paths.contains_key(*p), "{p} missing from docs/openapi.json");
        }
        assert_eq!(
            paths.len(),
            routes::PATHS.len(),
            "openapi.json has extra paths"
        );
    }
}
