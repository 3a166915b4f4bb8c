//! The REST routes: read the body, call the engine, convert the answer.
use super::body::{
    AttemptsBody, AttemptsResult, CheckBatchBody, CheckBatchResult, CheckBody, CheckResult,
    ConsentBody, ConsentResult, InboundBody, InboundResult, SmsWebhookForm, twiml,
};
use super::{ApiError, OPENAPI, RestState};
use crate::audit::Caller;
use crate::auth::Principal;
use crate::error::Error;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{Extensions, HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;

/// Every path the facade serves; docs/openapi.json must describe exactly these.
pub const PATHS: &[&str] = &[
    "/v1/check",
    "/v1/check/batch",
    "/v1/consent",
    "/v1/attempts",
    "/v1/inbound",
    "/v1/webhooks/sms",
    "/metrics",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/v1/admin/index",
    "/v1/admin/index/image",
    "/v1/admin/webhooks",
    "/v1/admin/webhooks/{name}/resume",
    "/v1/admin/webhooks/{name}/replay",
];

pub fn routes() -> Router<RestState> {
    Router::new()
        .route("/v1/check", get(check))
        .route("/v1/check/batch", post(check_batch))
        .route("/v1/consent", post(consent))
        .route("/v1/attempts", post(attempts))
        .route("/v1/inbound", post(inbound))
        .route("/v1/webhooks/sms", post(sms_webhook))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/v1/admin/index", get(index_state))
        .route("/v1/admin/index/image", post(write_image))
        .route("/v1/admin/webhooks", get(webhooks))
        .route("/v1/admin/webhooks/{name}/resume", post(resume_webhook))
        .route("/v1/admin/webhooks/{name}/replay", post(replay_webhook))
}

async fn webhooks(State(s): State<RestState>) -> Result<Response, ApiError> {
    let list = s.engine.webhooks().await?;
    Ok(Json(serde_json::json!({ "webhooks": list })).into_response())
}

async fn resume_webhook(
    State(s): State<RestState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(s.engine.resume_webhook(&name).await?).into_response())
}

async fn replay_webhook(
    State(s): State<RestState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        from_seq: u64,
    }
    let body: Body = json(&headers, &bytes)?;
    Ok(Json(s.engine.replay_webhook(&name, body.from_seq).await?).into_response())
}

/// Writes an index image now (before a planned restart), off the async workers.
async fn write_image(State(s): State<RestState>) -> Result<Response, ApiError> {
    let engine = s.engine.clone();
    let written = tokio::task::spawn_blocking(move || engine.write_image())
        .await
        .map_err(|e| Error::Internal(format!("image task: {e}")))??;
    Ok(Json(serde_json::json!({
        "written": written,
        "images": s.engine.image_status(),
    }))
    .into_response())
}

/// A JSON body read with the failing field's path in the error (`checks[2].channel: ...`).
fn json<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.is_empty() && !ct.starts_with("application/json") {
        return Err(Error::invalid(
            "content-type",
            format!("`{ct}` is not supported, send application/json"),
        )
        .into());
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| field_error(e, "body"))
}

/// A deserialization error as INVALID_ARGUMENT naming the field's path (`whole` when the
/// input as a whole is wrong).
fn field_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>, whole: &str) -> ApiError {
    let path = e.path().to_string();
    let field = if path == "." { whole.to_string() } else { path };
    Error::invalid(field, e.into_inner().to_string()).into()
}

fn query<T: DeserializeOwned>(raw: Option<String>) -> Result<T, ApiError> {
    let raw = raw.unwrap_or_default();
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| field_error(e, "query"))
}

fn caller(ext: &Extensions, headers: &HeaderMap) -> Caller {
    let get = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect::<String>())
            .unwrap_or_default()
    };
    let peer = ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.to_string())
        .unwrap_or_default();
    Caller::from_request(
        ext.get::<Principal>(),
        &get("x-actor"),
        "rest",
        &peer,
        &get("user-agent"),
        &get("x-request-id"),
    )
}

async fn check(
    State(s): State<RestState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<CheckResult>, ApiError> {
    let body: CheckBody = query(raw)?;
    let outcome = s.engine.check(&body.request())?;
    Ok(Json(CheckResult::from_outcome(&outcome)))
}

async fn check_batch(
    State(s): State<RestState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<CheckBatchResult>, ApiError> {
    let batch: CheckBatchBody = json(&headers, &bytes)?;
    let reqs: Vec<_> = batch.checks.iter().map(CheckBody::request).collect();
    let answered = s.engine.check_batch(&reqs)?;
    let results: Vec<CheckResult> = answered.iter().map(CheckResult::from_outcome).collect();
    let index_seq = answered.index_seq;
    Ok(Json(CheckBatchResult { results, index_seq }))
}

async fn consent(
    State(s): State<RestState>,
    ext: Extensions,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<ConsentResult>, ApiError> {
    let body: ConsentBody = json(&headers, &bytes)?;
    let who = caller(&ext, &headers);
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let out = s.engine.record_consent(body.request(key)?, &who).await?;
    Ok(Json(ConsentResult {
        consent_id: out.consent_id,
        seq: out.seq,
        duplicate: out.duplicate,
        normalized_contact: out.normalized_contact,
    }))
}

/// Contact attempts, a result per attempt (an HTTP 207 in spirit: the call succeeds and
/// each attempt says whether it was recorded).
async fn attempts(
    State(s): State<RestState>,
    ext: Extensions,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<AttemptsResult>, ApiError> {
    let body: AttemptsBody = json(&headers, &bytes)?;
    let who = caller(&ext, &headers);
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let out = s.engine.record_attempts(body.request(key)?, &who).await?;
    Ok(Json(AttemptsResult::of(out)))
}

async fn inbound(
    State(s): State<RestState>,
    mut ext: Extensions,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<InboundResult>, ApiError> {
    if let Some(p) = super::signed::hmac(&s, &headers, &bytes)? {
        ext.insert(p);
    }
    let body: InboundBody = json(&headers, &bytes)?;
    let who = caller(&ext, &headers);
    let out = s.engine.process_inbound(body.request()?, &who).await?;
    Ok(Json(InboundResult {
        action: out.action.as_str().to_string(),
        reply_text: out.reply_text,
        matched_keyword: out.matched_keyword,
        seq: out.seq,
        duplicate: out.duplicate,
        consent_id: out.consent_id,
        normalized_contact: out.normalized_contact,
    }))
}

/// Twilio-style inbound SMS: answers TwiML carrying the reply (plain text when the
/// caller accepts only text/plain). A failure is an HTTP error, so the provider retries.
async fn sms_webhook(
    State(s): State<RestState>,
    mut ext: Extensions,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    if let Some(p) = super::signed::twilio(&s, &uri, &headers, &bytes)? {
        ext.insert(p);
    }
    let form: SmsWebhookForm = serde_urlencoded::from_bytes(&bytes)
        .map_err(|e| Error::invalid("body", format!("not a form-encoded webhook: {e}")))?;
    let who = caller(&ext, &headers);
    let out = s.engine.process_inbound(form.request(), &who).await?;
    let plain = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.starts_with("text/plain"));
    Ok(if plain {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            out.reply_text,
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
            twiml(&out.reply_text),
        )
            .into_response()
    })
}

async fn metrics(State(s): State<RestState>) -> Response {
    match &s.metrics {
        Some(h) => {
            s.engine.refresh_gauges();
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                h.render(),
            )
                .into_response()
        }
        None => crate::api::status::response(Error::Unavailable(
            "metrics are not recorded in this process".into(),
        )),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready once the index holds a full load; the body says how fresh it is.
async fn readyz(State(s): State<RestState>) -> Response {
    let index = s.engine.index();
    let readiness = s.engine.readiness();
    let ready = readiness.is_ok();
    let body = serde_json::json!({
        "status": if ready { "SERVING" } else { "NOT_SERVING" },
        "reason": readiness.err(),
        "index_seq": index.seq(),
        "index_age_ms": index.age_ms(s.engine.now()),
        "store": s.engine.store_description(),
    });
    (crate::api::status::ready(ready), Json(body)).into_response()
}

/// The index's seq, size and images; with `?digest=true` also its digest (replicas at one
/// seq with one digest decide alike), which walks and sorts the whole index: seconds at
/// 10^8 contacts, so only when asked for.
async fn index_state(State(s): State<RestState>, RawQuery(raw): RawQuery) -> Response {
    #[derive(serde::Deserialize, Default)]
    struct Q {
        #[serde(default)]
        digest: bool,
    }
    let q: Q = match query(raw) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let engine = s.engine.clone();
    let body = tokio::task::spawn_blocking(move || {
        let index = engine.index();
        serde_json::json!({
            "index_seq": index.seq(),
            "identifiers": index.len(),
            "size": engine.index_size(),
            "images": engine.image_status(),
            "digest": q.digest.then(|| index.digest()),
            "ready": index.ready(),
            "index_age_ms": index.age_ms(engine.now()),
            "store": engine.store_description(),
        })
    })
    .await
    .unwrap_or_default();
    Json(body).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
