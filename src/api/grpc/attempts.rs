//! AttemptService: RecordAttempts over the engine.
use super::convert::{channel_arg, entry_status_pb, outcome_arg, purpose_arg, ts_to_ms};
use crate::engine::{AttemptRequest, Engine, RecordAttemptsRequest};
use crate::proto as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AttemptApi {
    engine: Arc<Engine>,
}

impl AttemptApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        AttemptApi { engine }
    }
}

#[tonic::async_trait]
impl pb::attempt_service_server::AttemptService for AttemptApi {
    async fn record_attempts(
        &self,
        req: Request<pb::RecordAttemptsRequest>,
    ) -> Result<Response<pb::RecordAttemptsResponse>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        let out = self
            .engine
            .record_attempts(
                RecordAttemptsRequest {
                    attempts: r
                        .attempts
                        .into_iter()
                        .map(|a| AttemptRequest {
                            channel: channel_arg(a.channel),
                            purpose: purpose_arg(a.purpose),
                            outcome: outcome_arg(a.outcome),
                            at: a.at.as_ref().map(ts_to_ms),
                            at_text: None,
                            contact: a.contact,
                            subject: a.subject,
                            campaign_id: a.campaign_id,
                        })
                        .collect(),
                    idempotency_key: r.idempotency_key,
                    default_region: r.default_region,
                },
                &caller,
            )
            .await?;
        Ok(Response::new(pb::RecordAttemptsResponse {
            results: out
                .results
                .into_iter()
                .map(|r| pb::AttemptResult {
                    index: r.index,
                    status: entry_status_pb(r.status) as i32,
                    attempt_id: r.attempt_id,
                    normalized_contact: r.normalized_contact,
                    error: r.error,
                })
                .collect(),
            seq: out.seq,
            duplicate: out.duplicate,
        }))
    }
}
