//! The tower layer every gRPC call passes: token check against the method's role, then a
//! latency observation labelled with the method and the returned code.
use super::services::role as grpc_role;
use crate::auth::Auth;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::Status;

#[derive(Clone)]
pub struct GateLayer {
    auth: Auth,
}

impl GateLayer {
    pub fn new(auth: Auth) -> GateLayer {
        GateLayer { auth }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;
    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    auth: Auth,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    R: Default + Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = method_label(req.uri().path());
        match crate::auth::authorize_headers(
            &self.auth,
            grpc_role(req.uri().path()),
            req.headers(),
            false,
        ) {
            Ok(principal) => {
                if let Some(p) = principal {
                    req.extensions_mut().insert(p);
                }
                let call = self.inner.call(req);
                let span = tracing::info_span!("grpc", method);
                Box::pin(tracing::Instrument::instrument(
                    async move {
                        let out = call.await;
                        if let Ok(resp) = &out {
                            crate::telemetry::request(
                                "grpc",
                                method,
                                code_label(resp),
                                started.elapsed().as_secs_f64(),
                            );
                        }
                        out
                    },
                    span,
                ))
            }
            Err(denied) => {
                crate::telemetry::auth_failure("grpc", denied.kind());
                let peer = req
                    .extensions()
                    .get::<tonic::transport::server::TcpConnectInfo>()
                    .and_then(|i| i.remote_addr());
                crate::telemetry::refusal_log().refused("grpc", peer, |suppressed| {
                    tracing::warn!(method = %method, reason = denied.kind(), suppressed, "call refused: {denied}");
                });
                let status = Status::from(crate::error::Error::from(denied));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// `Service/Method` for methods the API defines; anything else is one label, so a scanner
/// cannot create unbounded metric series.
fn method_label(path: &str) -> &'static str {
    static KNOWN: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        use prost::Message;
        let mut names = std::collections::HashSet::from(["Health/Check".to_string()]);
        if let Ok(set) = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET) {
            for f in set.file {
                for s in f.service {
                    for m in &s.method {
                        names.insert(format!("{}/{}", s.name(), m.name()));
                    }
                }
            }
        }
        names
    });
    let p = path.trim_start_matches('/');
    let short = p.rsplit_once('.').map_or(p, |(_, m)| m);
    known.get(short).map_or("other", |s| s.as_str())
}

/// The grpc-status a unary handler put in the headers; streams and successes report OK.
fn code_label<R>(resp: &http::Response<R>) -> &'static str {
    match resp.headers().get("grpc-status").map(|v| v.as_bytes()) {
        None | Some(b"0") => "OK",
        Some(v) => match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
        {
            Some(n) => crate::api::status::code_name(tonic::Code::from_i32(n)),
            None => "UNKNOWN",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(
            method_label("/preflight.v1.DecisionService/Check"),
            "DecisionService/Check"
        );
        assert_eq!(method_label("/evil.Service/x1234"), "other");
        assert_eq!(method_label("/preflight.v1.DecisionService/x1234"), "other");
        assert_eq!(
            method_label("/preflight.v1.PrivacyService/SubmitRequest"),
            "PrivacyService/SubmitRequest"
        );
    }
}
