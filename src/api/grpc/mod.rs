//! The gRPC transport (tonic): the preflight.v1 services, health and reflection.
mod attempts;
pub mod codec;
mod consent;
pub mod convert;
mod decision;
pub mod dispatch;
mod dnc;
mod events;
pub mod gate;
pub mod lanes;
pub mod services;
mod webhooks;
pub mod wire;

pub use attempts::AttemptApi;
pub use consent::ConsentApi;
pub use decision::{BytesCodec, DecisionApi, MessageLimits};
pub use dnc::DncApi;
pub use events::EventApi;
pub use webhooks::WebhookApi;
mod audit;
mod privacy;

pub use audit::AuditApi;
pub use privacy::PrivacyApi;

/// Who is calling, for the audit trail: the API token's name when tokens are configured
/// (an `x-actor` header is then kept as `on_behalf_of`), else the `x-actor` header or the
/// peer; plus peer address, user agent and any `x-request-id`. Never a credential.
pub fn caller<T>(req: &tonic::Request<T>) -> crate::audit::Caller {
    let md = req.metadata();
    let get = |k: &str| {
        md.get(k)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect::<String>())
            .unwrap_or_default()
    };
    let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
    crate::audit::Caller::from_request(
        req.extensions().get::<crate::auth::Principal>(),
        &get("x-actor"),
        "grpc",
        &peer,
        &get("user-agent"),
        &get("x-request-id"),
    )
}
