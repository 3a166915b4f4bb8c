//! A webhook receiver for tests: a real HTTP/1.1 server on a loopback port that answers as
//! scripted (statuses, Retry-After, hanging past the sender's timeout) and records every
//! delivery it was sent.
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    /// 429 or 503 with `Retry-After: <secs>`.
    RetryAfter(u16, u64),
    /// Answers 200 only after this long (past the sender's timeout).
    Hang(Duration),
}

#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub raw: Vec<u8>,
    pub body: serde_json::Value,
    pub at: Instant,
    /// What the receiver answered.
    pub answered: u16,
}

impl Delivery {
    pub fn seq(&self) -> u64 {
        self.body["data"]["seq"].as_u64().unwrap()
    }
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap()
    }
}

struct State {
    script: VecDeque<Reply>,
    default: Reply,
    got: Vec<Delivery>,
}

#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// Listens on a free loopback port, answering `default` once the script is used up.
    pub async fn start(default: Reply) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            script: VecDeque::new(),
            default,
            got: Vec::new(),
        }));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    pub fn script(&self, replies: &[Reply]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(replies.iter().cloned());
    }

    pub fn set_default(&self, r: Reply) {
        self.state.lock().unwrap().default = r;
    }

    pub fn got(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().got.clone()
    }

    /// Deliveries it acknowledged with a 2xx.
    pub fn acked(&self) -> Vec<Delivery> {
        self.got()
            .into_iter()
            .filter(|d| (200..300).contains(&d.answered))
            .collect()
    }

    /// Waits until `f` holds of the deliveries, or panics after `secs`.
    pub async fn wait_for(&self, secs: u64, what: &str, f: impl Fn(&[Delivery]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if f(&self.got()) {
                return;
            }
            if Instant::now() > deadline {
                let seen: Vec<(u64, String, u16)> = self
                    .got()
                    .iter()
                    .map(|d| (d.seq(), d.kind().to_string(), d.answered))
                    .collect();
                panic!("{what}: not within {secs} s; got {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn answer(
    st: Arc<Mutex<State>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let header = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let raw = req.into_body().collect().await.unwrap().to_bytes().to_vec();
    let reply = {
        let mut s = st.lock().unwrap();
        s.script.pop_front().unwrap_or_else(|| s.default.clone())
    };
    let (code, retry_after) = match &reply {
        Reply::Status(c) => (*c, None),
        Reply::RetryAfter(c, secs) => (*c, Some(*secs)),
        Reply::Hang(_) => (200, None),
    };
    // A hung answer arrives after the sender gave up: it does not count as acknowledged.
    let answered = if matches!(reply, Reply::Hang(_)) {
        0
    } else {
        code
    };
    st.lock().unwrap().got.push(Delivery {
        id,
        timestamp,
        signature,
        body: serde_json::from_slice(&raw).unwrap_or_default(),
        raw,
        at: Instant::now(),
        answered,
    });
    if let Reply::Hang(d) = reply {
        tokio::time::sleep(d).await;
    }
    let mut resp = hyper::Response::builder().status(code);
    if let Some(s) = retry_after {
        resp = resp.header("retry-after", s.to_string());
    }
    Ok(resp
        .body(Full::new(Bytes::from_static(
            b"a body the sender must not log",
        )))
        .unwrap())
}

/// Verifies a Standard Webhooks signature header independently of the service's code:
/// any `v1,` entry matching HMAC-SHA256(secret, "id.timestamp.body"), compared in constant
/// time with the length checked.
pub fn signature_valid(secret: &[u8], d: &Delivery) -> bool {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    d.signature.split(' ').any(|part| {
        let Some(b64) = part.strip_prefix("v1,") else {
            return false;
        };
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return false;
        };
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{}.{}.", d.id, d.timestamp).as_bytes());
        mac.update(&d.raw);
        mac.verify_slice(&given).is_ok()
    })
}
