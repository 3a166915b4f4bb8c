//! The gRPC transport (tonic): the preflight.v1 services, health and reflection.
mod consent;
pub mod convert;
mod decision;
mod dnc;
mod events;
pub mod status;

pub use consent::ConsentApi;
pub use decision::DecisionApi;
pub use dnc::DncApi;
pub use events::EventApi;
mod audit;
mod privacy;

pub use audit::AuditApi;
pub use privacy::PrivacyApi;

/// Who is calling, for the audit trail: the `x-actor` header (until API tokens name the
/// caller), the peer address, user agent and any `x-request-id`. Never a credential.
pub fn caller<T>(req: &tonic::Request<T>) -> crate::audit::Caller {
    let md = req.metadata();
    let get = |k: &str| {
        md.get(k)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect::<String>())
            .unwrap_or_default()
    };
    let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
    let actor = match get("x-actor") {
        a if !a.is_empty() => a,
        _ if !peer.is_empty() => format!("grpc:{peer}"),
        _ => "grpc".to_string(),
    };
    crate::audit::Caller {
        actor,
        metadata: Default::default(),
    }
    .with("transport", "grpc")
    .with("peer", peer)
    .with("user_agent", get("user-agent"))
    .with("request_id", get("x-request-id"))
}
