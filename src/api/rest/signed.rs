//! The signature checks that authenticate the inbound webhook routes when configured:
//! Twilio's on `/v1/webhooks/sms`, HMAC-SHA256 on `/v1/inbound`. A refusal changes nothing,
//! is counted as an auth failure and logged without the body.
use super::{ApiError, RestState};
use crate::auth::{Principal, Role};
use crate::error::Error;
use crate::webhooks::sign;
use axum::http::{HeaderMap, Uri};

/// The principal a signed request acts as in the audit trail.
fn signed_by(name: &str) -> Principal {
    Principal {
        name: name.into(),
        role: Role::Write,
    }
}

fn refuse(route: &'static str, why: &'static str) -> ApiError {
    crate::telemetry::auth_failure("rest", "bad_signature");
    tracing::warn!(route, reason = why, "signed webhook refused");
    Error::PermissionDenied(format!("{why}; nothing was changed")).into()
}

/// Checks `X-Twilio-Signature` when a Twilio token is configured: Some(principal) when it
/// matches, None when no check is configured (the token gate ran instead).
pub fn twilio(
    s: &RestState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<Principal>, ApiError> {
    let Some((token, public_url)) = &s.signatures.twilio else {
        return Ok(None);
    };
    const ROUTE: &str = "/v1/webhooks/sms";
    let Some(given) = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(refuse(ROUTE, "the X-Twilio-Signature header is missing"));
    };
    // Twilio signs the URL as it called it, query included.
    let url = match uri.query() {
        Some(q) if !public_url.contains('?') => format!("{public_url}?{q}"),
        _ => public_url.clone(),
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    if !sign::twilio_valid(token, &url, &params, given) {
        return Err(refuse(
            ROUTE,
            "the X-Twilio-Signature header does not match this request",
        ));
    }
    Ok(Some(signed_by("twilio-signature")))
}

/// Checks `x-preflight-signature: sha256=<hex>` when an inbound secret is configured.
pub fn hmac(
    s: &RestState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<Principal>, ApiError> {
    let Some(secret) = &s.signatures.hmac else {
        return Ok(None);
    };
    const ROUTE: &str = "/v1/inbound";
    let Some(given) = headers
        .get("x-preflight-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(refuse(ROUTE, "the x-preflight-signature header is missing"));
    };
    if !sign::hmac_sha256_valid(secret, body, given) {
        return Err(refuse(
            ROUTE,
            "the x-preflight-signature header does not match this body",
        ));
    }
    Ok(Some(signed_by("inbound-signature")))
}
