//! Routes a gRPC call to its service by the service name in the path: one string match
//! instead of tonic's router (an axum router that parses URL parameters and boxes every
//! call a second time), which was 5% of a unary check's CPU.
use crate::api::grpc::services;
use crate::api::grpc::{
    AttemptApi, AuditApi, ConsentApi, DecisionApi, DncApi, EventApi, PrivacyApi, WebhookApi,
};
use crate::proto::attempt_service_server::AttemptServiceServer;
use crate::proto::audit_service_server::AuditServiceServer;
use crate::proto::consent_service_server::ConsentServiceServer;
use crate::proto::dnc_service_server::DncServiceServer;
use crate::proto::event_service_server::EventServiceServer;
use crate::proto::privacy_service_server::PrivacyServiceServer;
use crate::proto::webhook_service_server::WebhookServiceServer;
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

/// A service of the listener, typed where the type can be named (so a call clones one
/// reference count, not a boxed service).
pub enum Handler {
    Decision(DecisionApi),
    Consent(ConsentServiceServer<ConsentApi>),
    Dnc(DncServiceServer<DncApi>),
    Attempts(AttemptServiceServer<AttemptApi>),
    Events(EventServiceServer<EventApi>),
    Audit(AuditServiceServer<AuditApi>),
    Privacy(PrivacyServiceServer<PrivacyApi>),
    Webhooks(WebhookServiceServer<WebhookApi>),
    /// Health and reflection.
    Opaque(Opaque),
}

impl Handler {
    /// The gRPC name the handler serves under.
    fn name(&self) -> Option<&'static str> {
        match self {
            Handler::Decision(_) => Some(services::DECISION),
            Handler::Consent(_) => Some(ConsentServiceServer::<ConsentApi>::NAME),
            Handler::Dnc(_) => Some(DncServiceServer::<DncApi>::NAME),
            Handler::Attempts(_) => Some(AttemptServiceServer::<AttemptApi>::NAME),
            Handler::Events(_) => Some(EventServiceServer::<EventApi>::NAME),
            Handler::Audit(_) => Some(AuditServiceServer::<AuditApi>::NAME),
            Handler::Privacy(_) => Some(PrivacyServiceServer::<PrivacyApi>::NAME),
            Handler::Webhooks(_) => Some(WebhookServiceServer::<WebhookApi>::NAME),
            Handler::Opaque(_) => None,
        }
    }

    fn call(&self, req: Request<Body>) -> Answer {
        match self {
            Handler::Decision(s) => {
                let served = s.call(req);
                Box::pin(async move { Ok(served.await) })
            }
            Handler::Consent(s) => s.clone().call(req),
            Handler::Dnc(s) => s.clone().call(req),
            Handler::Attempts(s) => s.clone().call(req),
            Handler::Events(s) => s.clone().call(req),
            Handler::Audit(s) => s.clone().call(req),
            Handler::Privacy(s) => s.clone().call(req),
            Handler::Webhooks(s) => s.clone().call(req),
            Handler::Opaque(s) => s.clone().call(req),
        }
    }
}

/// Every service of the listener, by the names of `services::SERVICES`; cloning it is one
/// reference count.
#[derive(Clone)]
pub struct Dispatch(Arc<Vec<(&'static str, Handler)>>);

impl Dispatch {
    /// Checks that the handlers are exactly the services of the table, each under its name.
    pub fn new(handlers: Vec<(&'static str, Handler)>) -> Result<Dispatch, String> {
        for (name, h) in &handlers {
            if services::spec(name).is_none() {
                return Err(format!(
                    "gRPC service {name} has a handler but no row in SERVICES"
                ));
            }
            if let Some(typed) = h.name()
                && typed != *name
            {
                return Err(format!("the handler of {name} serves {typed}"));
            }
        }
        for s in services::SERVICES {
            if !handlers.iter().any(|(n, _)| *n == s.name) {
                return Err(format!(
                    "gRPC service {} is in SERVICES but has no handler",
                    s.name
                ));
            }
        }
        Ok(Dispatch(Arc::new(handlers)))
    }
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
        let name = services::service_name(req.uri().path());
        match self.0.iter().find(|(n, _)| *n == name) {
            Some((_, h)) => h.call(req),
            None => {
                let (parts, ()) = tonic::Status::unimplemented(format!("no service `{name}` here"))
                    .into_http::<()>()
                    .into_parts();
                Box::pin(std::future::ready(Ok(Response::from_parts(
                    parts,
                    Body::empty(),
                ))))
            }
        }
    }
}
