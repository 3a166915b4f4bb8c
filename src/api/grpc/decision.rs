//! DecisionService: Check, CheckBatch and CheckStream over the engine.
use super::convert::{channel_arg, check_response, direction_arg, purpose_arg, ts_to_ms};
use crate::engine::{CheckRequest, Engine};
use crate::proto as pb;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

pub struct DecisionApi {
    engine: Arc<Engine>,
    /// Where batches are decided: the process's work-stealing runtime, not the connection's
    /// lane, so one connection's batches use every core and a 10,000-item batch does not
    /// hold up the unary checks of the other connections on its lane.
    pool: tokio::runtime::Handle,
}

/// Batches this small are decided on the lane: the hop to the pool would cost more.
const INLINE_MAX: usize = 32;

impl DecisionApi {
    pub fn new(engine: Arc<Engine>, pool: tokio::runtime::Handle) -> Self {
        DecisionApi { engine, pool }
    }
}

/// Decides `b` on the pool (or inline when small).
async fn decide(
    engine: Arc<Engine>,
    pool: tokio::runtime::Handle,
    b: pb::CheckBatchRequest,
) -> Result<pb::CheckBatchResponse, Status> {
    if b.checks.len() <= INLINE_MAX {
        return batch(&engine, &b);
    }
    pool.spawn(async move { batch(&engine, &b) })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "a check batch did not finish");
            Err(crate::error::Error::Internal("the batch could not be decided".into()).into())
        })
}

fn request(r: &pb::CheckRequest) -> CheckRequest<'_> {
    CheckRequest {
        contact: &r.contact,
        channel: channel_arg(r.channel),
        purpose: purpose_arg(r.purpose),
        category: &r.category,
        direction: direction_arg(r.direction),
        policy: &r.policy,
        default_region: &r.default_region,
        at: r.at.as_ref().map(ts_to_ms).into(),
        correlation_id: &r.correlation_id,
        postal_code: &r.postal_code,
        subject: &r.subject,
    }
}

fn batch(engine: &Engine, b: &pb::CheckBatchRequest) -> Result<pb::CheckBatchResponse, Status> {
    let reqs: Vec<CheckRequest<'_>> = b.checks.iter().map(request).collect();
    let batch = engine.check_batch(&reqs)?;
    let results: Vec<pb::CheckResponse> = batch.iter().map(check_response).collect();
    let index_seq = batch.index_seq;
    Ok(pb::CheckBatchResponse { results, index_seq })
}

type CheckStreamOut = Pin<Box<dyn Stream<Item = Result<pb::CheckBatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::decision_service_server::DecisionService for DecisionApi {
    async fn check(
        &self,
        req: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let r = req.into_inner();
        let outcome = self.engine.check(&request(&r))?;
        Ok(Response::new(check_response(&outcome)))
    }

    async fn check_batch(
        &self,
        req: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        decide(self.engine.clone(), self.pool.clone(), req.into_inner())
            .await
            .map(Response::new)
    }

    type CheckStreamStream = CheckStreamOut;

    async fn check_stream(
        &self,
        req: Request<Streaming<pb::CheckBatchRequest>>,
    ) -> Result<Response<Self::CheckStreamStream>, Status> {
        let (engine, pool) = (self.engine.clone(), self.pool.clone());
        // Two messages of a stream decided at once, answered in order: a single stream
        // (`preflight scrub`) keeps two cores busy.
        let out = req
            .into_inner()
            .map(move |msg| {
                let (engine, pool) = (engine.clone(), pool.clone());
                async move {
                    match msg {
                        Ok(b) => decide(engine, pool, b).await,
                        Err(e) => Err(e),
                    }
                }
            })
            .buffered(2);
        Ok(Response::new(Box::pin(out)))
    }
}
