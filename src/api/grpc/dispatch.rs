//! Routes a gRPC call to its service by the service name in the path: one string match
//! instead of tonic's router (an axum router that parses URL parameters and boxes every
//! call a second time), which was 5% of a unary check's CPU.
use crate::api::grpc::{AuditApi, ConsentApi, DecisionApi, DncApi, EventApi, PrivacyApi};
use crate::proto::audit_service_server::AuditServiceServer;
use crate::proto::consent_service_server::ConsentServiceServer;
use crate::proto::decision_service_server::DecisionServiceServer;
use crate::proto::dnc_service_server::DncServiceServer;
use crate::proto::event_service_server::EventServiceServer;
use crate::proto::privacy_service_server::PrivacyServiceServer;
use http::{Request, Response};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;
use tower::util::BoxCloneSyncService;

/// A service whose type the caller cannot name (health, reflection).
pub type Opaque = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

type Answer = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

pub struct Services {
    pub decision: DecisionServiceServer<DecisionApi>,
    pub consent: ConsentServiceServer<ConsentApi>,
    pub dnc: DncServiceServer<DncApi>,
    pub events: EventServiceServer<EventApi>,
    pub audit: AuditServiceServer<AuditApi>,
    pub privacy: PrivacyServiceServer<PrivacyApi>,
    /// By service name: health and reflection.
    pub other: Vec<(&'static str, Opaque)>,
}

/// Every service of the listener; cloning it is one reference count.
#[derive(Clone)]
pub struct Dispatch(Arc<Services>);

impl Dispatch {
    pub fn new(services: Services) -> Dispatch {
        Dispatch(Arc::new(services))
    }
}

/// `preflight.v1.DecisionService` of `/preflight.v1.DecisionService/Check`.
fn service_name(path: &str) -> &str {
    let p = path.strip_prefix('/').unwrap_or(path);
    p.split_once('/').map_or(p, |(s, _)| s)
}

impl Service<Request<Body>> for Dispatch {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    /// Ready always: tonic's generated services take every call.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Answer {
        let s = &self.0;
        match service_name(req.uri().path()) {
            DecisionServiceServer::<DecisionApi>::NAME => s.decision.clone().call(req),
            ConsentServiceServer::<ConsentApi>::NAME => s.consent.clone().call(req),
            DncServiceServer::<DncApi>::NAME => s.dnc.clone().call(req),
            EventServiceServer::<EventApi>::NAME => s.events.clone().call(req),
            AuditServiceServer::<AuditApi>::NAME => s.audit.clone().call(req),
            PrivacyServiceServer::<PrivacyApi>::NAME => s.privacy.clone().call(req),
            name => match s.other.iter().find(|(n, _)| *n == name) {
                Some((_, svc)) => svc.clone().call(req),
                None => {
                    let (parts, ()) =
                        tonic::Status::unimplemented(format!("no service `{name}` here"))
                            .into_http::<()>()
                            .into_parts();
                    Box::pin(std::future::ready(Ok(Response::from_parts(
                        parts,
                        Body::empty(),
                    ))))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_come_from_the_path() {
        assert_eq!(
            service_name("/preflight.v1.DecisionService/Check"),
            "preflight.v1.DecisionService"
        );
        assert_eq!(
            service_name("/grpc.health.v1.Health/Watch"),
            "grpc.health.v1.Health"
        );
        assert_eq!(service_name("/nothing"), "nothing");
        assert_eq!(service_name(""), "");
    }
}
