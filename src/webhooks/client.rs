//! The HTTP client deliveries go through: keep-alive connections, rustls with the webpki
//! roots for https, a timeout per attempt, and the answer reduced to what the retry rules
//! read (the status and `Retry-After`). A receiver's body is read and dropped, never logged.
use super::config::Endpoint;
use crate::model::Millis;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

#[derive(Clone)]
pub struct Client {
    inner: Hyper<Connector, Full<Bytes>>,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The receiver answered; `retry_after` when it said when to come back.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: `label` is the metrics code (`timeout`, `connect`), `detail` for the log.
    Failed { label: &'static str, detail: String },
}

impl Answer {
    /// The `code` label of `preflight_webhook_failures_total`.
    pub fn label(&self) -> String {
        match self {
            Answer::Status { code, .. } => code.to_string(),
            Answer::Failed { label, .. } => (*label).to_string(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Answer::Status { code, .. } => format!("HTTP {code}"),
            Answer::Failed { label, detail } => format!("{label}: {detail}"),
        }
    }
}

/// Most of a receiver's answer that is read (to keep the connection); the rest is dropped.
const MAX_ANSWER: usize = 64 * 1024;

impl Client {
    pub fn new() -> Client {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Client {
            inner: Hyper::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(tls),
        }
    }

    /// POSTs `body` as JSON with `headers` to the endpoint; `now` reads `Retry-After` dates.
    pub async fn post(
        &self,
        ep: &Endpoint,
        headers: &[(&'static str, String)],
        body: Bytes,
        now: Millis,
    ) -> Answer {
        let mut req = http::Request::post(ep.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "preflight-webhooks/1");
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => {
                return Answer::Failed {
                    label: "request",
                    detail: e.to_string(),
                };
            }
        };
        let attempt = async {
            let resp = self.inner.request(req).await.map_err(|e| {
                let label = if e.is_connect() { "connect" } else { "io" };
                Answer::Failed {
                    label,
                    detail: error_chain(&e),
                }
            })?;
            let code = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, now));
            // Read (a bounded part of) the answer so the connection can be used again.
            let _ = Limited::new(resp.into_body(), MAX_ANSWER).collect().await;
            Ok::<_, Answer>(Answer::Status { code, retry_after })
        };
        match tokio::time::timeout(ep.timeout, attempt).await {
            Ok(Ok(a)) | Ok(Err(a)) => a,
            Err(_) => Answer::Failed {
                label: "timeout",
                detail: format!("no answer within {} ms", ep.timeout.as_millis()),
            },
        }
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// `Retry-After` as seconds or an HTTP date; a date in the past is no wait.
pub fn retry_after(v: &str, now: Millis) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v)
        .ok()?
        .timestamp()
        .as_millisecond();
    Some(Duration::from_millis(u64::try_from(at - now).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(retry_after("120", 0), Some(Duration::from_secs(120)));
        let now = jiff::Timestamp::from_second(1_445_412_470)
            .unwrap()
            .as_millisecond();
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now + 60_000),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", 0), None);
    }
}
