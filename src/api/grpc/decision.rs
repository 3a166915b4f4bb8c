//! DecisionService: Check, CheckBatch and CheckStream over the engine.
use super::convert::{channel_arg, check_response, direction_arg, purpose_arg, ts_to_ms};
use super::status::to_status;
use crate::engine::{CheckRequest, Engine};
use crate::proto as pb;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

pub struct DecisionApi {
    engine: Arc<Engine>,
}

impl DecisionApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        DecisionApi { engine }
    }
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
        at: r.at.as_ref().map(ts_to_ms),
    }
}

fn batch(engine: &Engine, b: &pb::CheckBatchRequest) -> Result<pb::CheckBatchResponse, Status> {
    let reqs: Vec<CheckRequest<'_>> = b.checks.iter().map(request).collect();
    let outcomes = engine.check_batch(&reqs).map_err(to_status)?;
    let results: Vec<pb::CheckResponse> = outcomes
        .iter()
        .zip(&b.checks)
        .map(|(o, r)| check_response(o, &r.correlation_id))
        .collect();
    let index_seq = results
        .iter()
        .map(|r| r.index_seq)
        .max()
        .unwrap_or_else(|| engine.index().seq());
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
        let outcome = self.engine.check(&request(&r)).map_err(to_status)?;
        Ok(Response::new(check_response(&outcome, &r.correlation_id)))
    }

    async fn check_batch(
        &self,
        req: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        batch(&self.engine, req.get_ref()).map(Response::new)
    }

    type CheckStreamStream = CheckStreamOut;

    async fn check_stream(
        &self,
        req: Request<Streaming<pb::CheckBatchRequest>>,
    ) -> Result<Response<Self::CheckStreamStream>, Status> {
        let engine = self.engine.clone();
        let out = req
            .into_inner()
            .map(move |msg| msg.and_then(|b| batch(&engine, &b)));
        Ok(Response::new(Box::pin(out)))
    }
}
