//! A minimal gRPC client for unary calls, straight on the `h2` crate: one HTTP/2 connection,
//! one stream per call, the message framed by hand. The load generator uses it so that what
//! it measures is the service, not the client library's layers (tonic's channel adds a
//! buffer task and a codec stack on the caller's side). It is still a real gRPC call over
//! HTTP/2: HEADERS, DATA, trailers, `grpc-status` checked.
#![allow(dead_code)]
use bytes::{Buf, BufMut, Bytes, BytesMut};
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

/// A tonic codec that sends messages encoded before the clock started and decodes answers
/// as `Resp`: what a stream phase times is then the service and the answer's decoding.
pub struct PreEncoded<Resp>(std::marker::PhantomData<Resp>);

impl<Resp> Default for PreEncoded<Resp> {
    fn default() -> Self {
        PreEncoded(std::marker::PhantomData)
    }
}

pub struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl<Resp: Message + Default + Send + 'static> tonic::codec::Codec for PreEncoded<Resp> {
    type Encode = Bytes;
    type Decode = Resp;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<Resp>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}
