//! PrivacyService: consumers, CCPA/GDPR requests and legal holds over the engine.
use super::convert::{ms_to_ts, ts_to_ms};
use crate::engine::RequestView;
use crate::engine::{Engine, SubmitRequest};
use crate::model::event::{consumer_id, request_id};
use crate::model::privacy::{Jurisdiction, RequestStatus, RequestType};
use crate::privacy::Consumer;
use crate::proto as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct PrivacyApi {
    engine: Arc<Engine>,
}

impl PrivacyApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        PrivacyApi { engine }
    }
}

fn consumer_pb(c: &Consumer) -> pb::Consumer {
    pb::Consumer {
        consumer_id: consumer_id(c.seq),
        identifiers: c.identifiers.iter().map(|k| k.to_string()).collect(),
        registered_at: Some(ms_to_ts(c.registered_at)),
        erased: c.erased_at.is_some(),
    }
}

pub fn request_pb(r: &RequestView) -> pb::PrivacyRequest {
    let d = r.deadlines();
    let result = r.result.clone().unwrap_or_default();
    pb::PrivacyRequest {
        request_id: request_id(r.seq),
        consumer_id: consumer_id(r.consumer_seq),
        r#type: match r.request_type {
            RequestType::Access => pb::PrivacyRequestType::Access,
            RequestType::Delete => pb::PrivacyRequestType::Delete,
        } as i32,
        jurisdiction: match r.jurisdiction {
            Jurisdiction::Ccpa => pb::Jurisdiction::Ccpa,
            Jurisdiction::Gdpr => pb::Jurisdiction::Gdpr,
        } as i32,
        status: match r.status {
            RequestStatus::Pending => pb::PrivacyRequestStatus::Pending,
            RequestStatus::InProgress => pb::PrivacyRequestStatus::InProgress,
            RequestStatus::Completed => pb::PrivacyRequestStatus::Completed,
            RequestStatus::Partial => pb::PrivacyRequestStatus::Partial,
            RequestStatus::Error => pb::PrivacyRequestStatus::Error,
        } as i32,
        received_at: Some(ms_to_ts(r.received_at)),
        submitted_at: Some(ms_to_ts(r.submitted_at)),
        updated_at: Some(ms_to_ts(r.updated_at)),
        completed_at: r.completed_at.map(ms_to_ts),
        acknowledge_by: Some(ms_to_ts(d.acknowledge_by)),
        respond_by: Some(ms_to_ts(r.respond_by())),
        extended: r.extension_notice.is_some(),
        extension_notice: r.extension_notice.clone().unwrap_or_default(),
        overdue: r.overdue,
        bundle_path: result.bundle_path,
        bundle_size: result.bundle_size,
        bundle_sha256: result.bundle_sha256,
        erased_identifiers: result.erased_identifiers,
        retained: result
            .retained
            .into_iter()
            .map(|x| pb::RetainedRecord {
                record_id: x.record_id,
                reason: x.reason,
            })
            .collect(),
        error: result.error,
    }
}

#[tonic::async_trait]
impl pb::privacy_service_server::PrivacyService for PrivacyApi {
    async fn register_consumer(
        &self,
        req: Request<pb::RegisterConsumerRequest>,
    ) -> Result<Response<pb::RegisterConsumerResponse>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        let out = self
            .engine
            .register_consumer(&r.identifiers, &r.default_region, &caller)
            .await?;
        Ok(Response::new(pb::RegisterConsumerResponse {
            consumer: Some(consumer_pb(&out.consumer)),
            created: out.created,
            added_identifiers: out.added.iter().map(|k| k.to_string()).collect(),
            index_seq: out.seq,
        }))
    }

    async fn submit_request(
        &self,
        req: Request<pb::SubmitRequestRequest>,
    ) -> Result<Response<pb::PrivacyRequest>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        let submit = SubmitRequest {
            consumer_id: r.consumer_id,
            request_type: super::convert::request_type_arg(r.r#type),
            jurisdiction: super::convert::jurisdiction_arg(r.jurisdiction),
            received_at: r.received_at.as_ref().map(ts_to_ms),
        };
        let out = self.engine.submit_request(submit, &caller).await?;
        Ok(Response::new(request_pb(&out)))
    }

    async fn get_request(
        &self,
        req: Request<pb::GetRequestRequest>,
    ) -> Result<Response<pb::PrivacyRequest>, Status> {
        let r = req.into_inner();
        let out = self.engine.get_request(&r.request_id)?;
        Ok(Response::new(request_pb(&out)))
    }

    async fn list_requests(
        &self,
        req: Request<pb::ListRequestsRequest>,
    ) -> Result<Response<pb::ListRequestsResponse>, Status> {
        let r = req.into_inner();
        let out = self.engine.list_requests(r.overdue_only, &r.consumer_id)?;
        Ok(Response::new(pb::ListRequestsResponse {
            requests: out.iter().map(request_pb).collect(),
        }))
    }

    async fn extend_request(
        &self,
        req: Request<pb::ExtendRequestRequest>,
    ) -> Result<Response<pb::PrivacyRequest>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        let out = self
            .engine
            .extend_request(&r.request_id, &r.notice, &caller)
            .await?;
        Ok(Response::new(request_pb(&out)))
    }

    async fn place_legal_hold(
        &self,
        req: Request<pb::LegalHoldRequest>,
    ) -> Result<Response<pb::LegalHoldResponse>, Status> {
        self.hold(req, true).await
    }

    async fn release_legal_hold(
        &self,
        req: Request<pb::LegalHoldRequest>,
    ) -> Result<Response<pb::LegalHoldResponse>, Status> {
        self.hold(req, false).await
    }
}

impl PrivacyApi {
    async fn hold(
        &self,
        req: Request<pb::LegalHoldRequest>,
        place: bool,
    ) -> Result<Response<pb::LegalHoldResponse>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        let (normalized, seq) = self
            .engine
            .set_legal_hold(&r.contact, &r.reason, place, &r.default_region, &caller)
            .await?;
        Ok(Response::new(pb::LegalHoldResponse {
            normalized_contact: normalized,
            seq,
        }))
    }
}
