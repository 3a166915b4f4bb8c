//! DecisionService: Check, CheckBatch and CheckStream over the engine, framed by tonic and
//! read and written by the hand-written wire path (`wire`).
use super::wire::{self, CheckFields};
use crate::engine::{CheckRequest, Engine};
use crate::error::Error;
use crate::proto as pb;
use crate::registry::PREFETCH_WINDOW;
use bytes::{Buf, BufMut, Bytes};
use futures::{Stream, StreamExt};
use prost::Message;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// The DecisionService's three methods; cloning it is three reference counts.
#[derive(Clone)]
pub struct DecisionApi {
    engine: Arc<Engine>,
    /// Where batches are decided: the process's work-stealing runtime, not the connection's
    /// lane, so one connection's batches use every core and a 10,000-item batch does not
    /// hold up the unary checks of the other connections on its lane.
    pool: tokio::runtime::Handle,
    limits: Arc<MessageLimits>,
}

/// Largest messages read and written, as tonic enforces them.
pub struct MessageLimits {
    pub decoding: usize,
    pub encoding: usize,
}

/// Batches this small are decided on the lane: the hop to the pool would cost more. A
/// check takes at least two bytes on the wire, so this is at most 32 checks.
const INLINE_MAX_BYTES: usize = 64;

type Answer = Pin<Box<dyn Future<Output = http::Response<tonic::body::Body>> + Send>>;

impl DecisionApi {
    pub fn new(engine: Arc<Engine>, pool: tokio::runtime::Handle, limits: MessageLimits) -> Self {
        DecisionApi {
            engine,
            pool,
            limits: Arc::new(limits),
        }
    }

    /// Serves one call to the service.
    pub fn call(&self, req: http::Request<tonic::body::Body>) -> Answer {
        let method = match req.uri().path().rsplit_once('/').map_or("", |(_, m)| m) {
            "Check" => Method::Check,
            "CheckBatch" => Method::Batch,
            "CheckStream" => Method::Stream,
            other => {
                let (parts, ()) = Status::unimplemented(format!(
                    "no method `{other}` in {}",
                    super::services::DECISION
                ))
                .into_http::<()>()
                .into_parts();
                let answer = http::Response::from_parts(parts, tonic::body::Body::empty());
                return Box::pin(std::future::ready(answer));
            }
        };
        let mut grpc = tonic::server::Grpc::new(BytesCodec)
            .apply_max_message_size_config(Some(self.limits.decoding), Some(self.limits.encoding));
        let this = self.clone();
        Box::pin(async move {
            match method {
                Method::Check => grpc.unary(Unary(this), req).await,
                Method::Batch => grpc.unary(this, req).await,
                Method::Stream => grpc.streaming(this, req).await,
            }
        })
    }
}

enum Method {
    Check,
    Batch,
    Stream,
}

/// Decides one encoded `CheckRequest` into an encoded `CheckResponse`.
fn check_bytes(engine: &Engine, msg: &[u8]) -> Result<Bytes, Status> {
    let read;
    let fields = match wire::read_check_request(msg) {
        Ok(f) => f,
        Err(wire::Malformed) => {
            read = prost_verdict::<pb::CheckRequest>(msg)?;
            CheckFields::of(&read)
        }
    };
    let outcome = engine.check(&fields.request())?;
    let mut out = Vec::with_capacity(160);
    wire::write_check_response(&outcome, &mut out);
    Ok(Bytes::from(out))
}

/// Decides one encoded `CheckBatchRequest` into an encoded `CheckBatchResponse`, a window of
/// checks at a time as they are read. A message that turns out malformed part way is
/// refused whole (its answers so far are dropped), as prost would refuse it.
fn batch_bytes(engine: &Engine, msg: &[u8]) -> Result<Bytes, Status> {
    let len = wire::count_checks(msg);
    let mut checks = engine.batch_checks(len)?;
    let mut out = wire::BatchWriter::new(Vec::with_capacity(64 + len * 128));
    let mut window: [CheckRequest<'_>; PREFETCH_WINDOW] =
        std::array::from_fn(|_| CheckRequest::default());
    let mut held = 0;
    let read = wire::read_batch(msg, |f| {
        window[held] = f.request();
        held += 1;
        if held == PREFETCH_WINDOW {
            checks.window(&window, &mut |o| out.push(o));
            held = 0;
        }
    });
    if read.is_err() {
        let b = prost_verdict::<pb::CheckBatchRequest>(msg)?;
        let reqs: Vec<_> = b
            .checks
            .iter()
            .map(|c| CheckFields::of(c).request())
            .collect();
        let mut out = wire::BatchWriter::new(Vec::with_capacity(64 + reqs.len() * 128));
        let index_seq = engine.check_batch_each(&reqs, |o| out.push(o))?;
        return Ok(Bytes::from(out.finish(index_seq)));
    }
    checks.window(&window[..held], &mut |o| out.push(o));
    Ok(Bytes::from(out.finish(checks.finish())))
}

/// What prost makes of a message the wire path refused: refused there too, it is
/// INVALID_ARGUMENT in prost's words; read there, it is decided from prost's structs (the
/// two agree in every test; this keeps a disagreement from refusing a check).
fn prost_verdict<M: Message + Default>(msg: &[u8]) -> Result<M, Status> {
    M::decode(msg).map_err(|e| {
        let name = std::any::type_name::<M>()
            .rsplit("::")
            .next()
            .unwrap_or("message");
        Error::invalid(name, e.to_string()).into()
    })
}

/// Decides an encoded batch on the pool (or inline when small).
async fn decide_batch(
    engine: Arc<Engine>,
    pool: tokio::runtime::Handle,
    msg: Bytes,
) -> Result<Bytes, Status> {
    if msg.len() <= INLINE_MAX_BYTES {
        return batch_bytes(&engine, &msg);
    }
    pool.spawn(async move { batch_bytes(&engine, &msg) })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "a check batch did not finish");
            Err(Error::Internal("the batch could not be decided".into()).into())
        })
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Check: decided on the connection's lane, where the call arrived.
struct Unary(DecisionApi);

impl tonic::server::UnaryService<Bytes> for Unary {
    type Response = Bytes;
    type Future = std::future::Ready<Result<Response<Bytes>, Status>>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        std::future::ready(check_bytes(&self.0.engine, &req.into_inner()).map(Response::new))
    }
}

/// CheckBatch.
impl tonic::server::UnaryService<Bytes> for DecisionApi {
    type Response = Bytes;
    type Future = BoxFuture<Result<Response<Bytes>, Status>>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let (engine, pool) = (self.engine.clone(), self.pool.clone());
        Box::pin(async move {
            decide_batch(engine, pool, req.into_inner())
                .await
                .map(Response::new)
        })
    }
}

type BytesStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// CheckStream.
impl tonic::server::StreamingService<Bytes> for DecisionApi {
    type Response = Bytes;
    type ResponseStream = BytesStream;
    type Future = std::future::Ready<Result<Response<BytesStream>, Status>>;
    fn call(&mut self, req: Request<Streaming<Bytes>>) -> Self::Future {
        let (engine, pool) = (self.engine.clone(), self.pool.clone());
        // Two messages of a stream decided at once, answered in order: a single stream
        // (`preflight scrub`) keeps two cores busy.
        let out: BytesStream = Box::pin(
            req.into_inner()
                .map(move |msg| {
                    let (engine, pool) = (engine.clone(), pool.clone());
                    async move { decide_batch(engine, pool, msg?).await }
                })
                .buffered(2),
        );
        std::future::ready(Ok(Response::new(out)))
    }
}

/// Messages as bytes both ways: the wire path reads and writes them itself (and tests and
/// the load generator send bytes they encoded themselves).
#[derive(Clone, Copy, Default)]
pub struct BytesCodec;

impl tonic::codec::Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;
    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl tonic::codec::Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
