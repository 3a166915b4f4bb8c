//! WebhookService: the webhook endpoints' state, resume and replay, over the engine.
use super::convert::ms_to_ts;
use crate::engine::Engine;
use crate::proto as pb;
use crate::webhooks::WebhookView;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct WebhookApi {
    engine: Arc<Engine>,
}

impl WebhookApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        WebhookApi { engine }
    }
}

fn webhook_pb(v: WebhookView) -> pb::Webhook {
    let state = match v.state {
        "ACTIVE" => pb::WebhookState::Active,
        "PAUSED" => pb::WebhookState::Paused,
        "DISABLED" => pb::WebhookState::Disabled,
        _ => pb::WebhookState::Unspecified,
    };
    pb::Webhook {
        name: v.name,
        url: v.url,
        kinds: v.kinds.into_iter().map(str::to_string).collect(),
        state: state as i32,
        reason: v.reason,
        acked_seq: v.acked_seq,
        backlog: v.backlog,
        delivering_here: v.delivering_here,
        retrying_seq: v.retrying_seq.unwrap_or(0),
        failed_attempts: v.failed_attempts,
        next_attempt_at: v.next_attempt_ms.map(ms_to_ts),
        last_error: v.last_error.unwrap_or_default(),
        delivered: v.delivered,
        log_seq: v.log_seq,
    }
}

#[tonic::async_trait]
impl pb::webhook_service_server::WebhookService for WebhookApi {
    async fn list_webhooks(
        &self,
        _req: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let list = self.engine.webhooks().await?;
        let log_seq = list
            .first()
            .map_or_else(|| self.engine.index().seq(), |w| w.log_seq);
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: list.into_iter().map(webhook_pb).collect(),
            log_seq,
        }))
    }

    async fn resume_webhook(
        &self,
        req: Request<pb::ResumeWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        let r = req.into_inner();
        let v = self.engine.resume_webhook(&r.name).await?;
        Ok(Response::new(webhook_pb(v)))
    }

    async fn replay_webhook(
        &self,
        req: Request<pb::ReplayWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        let r = req.into_inner();
        let v = self.engine.replay_webhook(&r.name, r.from_seq).await?;
        Ok(Response::new(webhook_pb(v)))
    }
}
