//! A minimal gRPC client for unary calls, straight on the `h2` crate: one HTTP/2 connection,
//! one stream per call, the message framed by hand. The load generator uses it so that what
//! it measures is the service, not the client library's layers (tonic's channel adds a
//! buffer task and a codec stack on the caller's side). It is still a real gRPC call over
//! HTTP/2: HEADERS, DATA, trailers, `grpc-status` checked.
#![allow(dead_code)]
use bytes::{Buf, BufMut, Bytes, BytesMut};
use preflight::proto as pb;
use prost::Message;

#[derive(Clone)]
pub struct H2Grpc {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
}

/// What went wrong with a call, as text.
pub type CallError = String;

fn err(e: impl std::fmt::Display) -> CallError {
    e.to_string()
}

impl H2Grpc {
    /// Connects over plain TCP (Nagle off) and drives the connection on the current runtime.
    pub async fn connect(addr: &str, window: u32) -> Result<H2Grpc, CallError> {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(err)?;
        tcp.set_nodelay(true).map_err(err)?;
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(window)
            .initial_connection_window_size(window)
            .handshake(tcp)
            .await
            .map_err(err)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2Grpc {
            send,
            authority: addr.to_string(),
        })
    }

    /// The address of a method: `path` is `/package.Service/Method`.
    pub fn uri(&self, path: &str) -> http::Uri {
        format!("http://{}{path}", self.authority)
            .parse()
            .expect("a valid authority and path")
    }

    /// One unary call to `uri` (from `uri`).
    pub async fn unary<Req: Message, Resp: Message + Default>(
        &self,
        uri: &http::Uri,
        req: &Req,
    ) -> Result<Resp, CallError> {
        let path = uri.path();
        let len = req.encoded_len();
        let mut body = BytesMut::with_capacity(5 + len);
        body.put_u8(0);
        body.put_u32(len as u32);
        req.encode(&mut body).map_err(err)?;
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri.clone();
        let h = request.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        h.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        let mut send = self.send.clone().ready().await.map_err(err)?;
        let (response, mut stream) = send.send_request(request, false).map_err(err)?;
        stream.send_data(body.freeze(), true).map_err(err)?;
        let response = response.await.map_err(err)?;
        let status = |h: &http::HeaderMap| {
            h.get("grpc-status")
                .map(|v| v.as_bytes() == b"0")
                .unwrap_or(false)
        };
        let trailers_only = status(response.headers());
        let mut recv = response.into_body();
        let mut buf = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(err)?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            buf.extend_from_slice(&chunk);
        }
        let ok = match recv.trailers().await.map_err(err)? {
            Some(t) => status(&t),
            None => trailers_only,
        };
        if !ok {
            return Err(format!("{path}: call failed"));
        }
        if buf.len() < 5 || buf[0] != 0 {
            return Err(format!("{path}: bad message frame"));
        }
        let mut buf = buf.freeze();
        buf.advance(1);
        let len = buf.get_u32() as usize;
        if buf.len() != len {
            return Err(format!("{path}: frame length {len}, got {}", buf.len()));
        }
        Resp::decode(buf).map_err(err)
    }
}

/// What the generator reads of each `CheckBatchResponse`: the number of answers and of
/// BLOCKs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Answers {
    pub results: u64,
    pub blocked: u64,
}

/// How the generator decodes answers: walking every field of every answer in place, every
/// string checked as UTF-8 (`View`, a client that acts on verdicts and keeps nothing), or
/// into prost's structs, a heap string per text field (`Prost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    View,
    Prost,
}

impl Decode {
    /// PREFLIGHT_LOADGEN_DECODE: `view` (the default) or `prost`.
    pub fn from_env() -> Decode {
        match std::env::var("PREFLIGHT_LOADGEN_DECODE").as_deref() {
            Ok("prost") => Decode::Prost,
            _ => Decode::View,
        }
    }
}

fn varint(b: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some((&x, rest)) = b.split_first() else {
            return Err("truncated varint".into());
        };
        *b = rest;
        v |= u64::from(x & 0x7f) << (7 * i);
        if x < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn len_delimited<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let n = varint(b)? as usize;
    if n > b.len() {
        return Err("length past the end".into());
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

/// Walks one `CheckResponse`; true when it is a BLOCK.
fn read_answer(mut b: &[u8]) -> Result<bool, String> {
    let mut blocked = false;
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = varint(&mut b)?;
                if field == 1 {
                    blocked = v == pb::Verdict::Block as u64;
                }
            }
            2 => {
                let body = len_delimited(&mut b)?;
                match field {
                    // Packed reasons, and the next_allowed_at timestamp: varints.
                    2 | 10 => {
                        let mut r = body;
                        while !r.is_empty() {
                            varint(&mut r)?;
                        }
                    }
                    _ => {
                        std::str::from_utf8(body).map_err(|e| format!("field {field}: {e}"))?;
                    }
                }
            }
            w => return Err(format!("field {field}: wire type {w}")),
        }
    }
    Ok(blocked)
}

/// Walks a `CheckBatchResponse`.
pub fn read_answers(mut b: &[u8]) -> Result<Answers, String> {
    let mut a = Answers::default();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match (key >> 3, key & 7) {
            (1, 2) => {
                a.results += 1;
                a.blocked += u64::from(read_answer(len_delimited(&mut b)?)?);
            }
            (2, 0) => {
                varint(&mut b)?;
            }
            (f, w) => return Err(format!("field {f}: wire type {w}")),
        }
    }
    Ok(a)
}

/// A tonic codec that sends messages encoded before the clock started and reads the
/// `CheckBatchResponse` answers as `decode` says.
#[derive(Clone, Copy)]
pub struct PreEncodedChecks(pub Decode);

pub struct AnswersDecoder(Decode);

impl tonic::codec::Decoder for AnswersDecoder {
    type Item = Answers;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Answers>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        let answers = match self.0 {
            Decode::View => read_answers(&bytes).map_err(tonic::Status::internal)?,
            Decode::Prost => {
                let r = pb::CheckBatchResponse::decode(bytes)
                    .map_err(|e| tonic::Status::internal(e.to_string()))?;
                Answers {
                    results: r.results.len() as u64,
                    blocked: r
                        .results
                        .iter()
                        .filter(|c| c.verdict == pb::Verdict::Block as i32)
                        .count() as u64,
                }
            }
        };
        Ok(Some(answers))
    }
}

impl tonic::codec::Codec for PreEncodedChecks {
    type Encode = Bytes;
    type Decode = Answers;
    type Encoder = preflight::api::grpc::BytesCodec;
    type Decoder = AnswersDecoder;
    fn encoder(&mut self) -> preflight::api::grpc::BytesCodec {
        preflight::api::grpc::BytesCodec
    }
    fn decoder(&mut self) -> AnswersDecoder {
        AnswersDecoder(self.0)
    }
}
