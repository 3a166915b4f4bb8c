//! ConsentService: RecordConsent and GetContact over the engine.
use super::convert::inbound_action_pb;
use super::convert::{channel_arg, consent_record, dnc_entry, purpose_arg, status_arg, ts_to_ms};
use crate::engine::{ConsentRequest, Engine, InboundRequest, LinkRequest};
use crate::proto as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ConsentApi {
    engine: Arc<Engine>,
}

impl ConsentApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        ConsentApi { engine }
    }
}

#[tonic::async_trait]
impl pb::consent_service_server::ConsentService for ConsentApi {
    async fn record_consent(
        &self,
        req: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<pb::RecordConsentResponse>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        let out = self
            .engine
            .record_consent(
                ConsentRequest {
                    status: status_arg(r.status),
                    channels: r.channels.iter().map(|c| channel_arg(*c)).collect(),
                    purposes: r.purposes.iter().map(|p| purpose_arg(*p)).collect(),
                    effective_at: r.effective_at.as_ref().map(ts_to_ms),
                    expires_at: r.expires_at.as_ref().map(ts_to_ms),
                    contact: r.contact,
                    category: r.category,
                    source: r.source,
                    proof: r.proof,
                    campaign_id: r.campaign_id,
                    idempotency_key: r.idempotency_key,
                    default_region: r.default_region,
                },
                &caller,
            )
            .await?;
        Ok(Response::new(pb::RecordConsentResponse {
            consent_id: out.consent_id,
            seq: out.seq,
            duplicate: out.duplicate,
            normalized_contact: out.normalized_contact,
        }))
    }

    async fn get_contact(
        &self,
        req: Request<pb::GetContactRequest>,
    ) -> Result<Response<pb::GetContactResponse>, Status> {
        let r = req.into_inner();
        let view = self.engine.get_contact(&r.contact, &r.default_region)?;
        Ok(Response::new(pb::GetContactResponse {
            normalized_contact: view.normalized_contact,
            consents: view.consents.iter().map(consent_record).collect(),
            dnc_entries: view.dnc.iter().map(dnc_entry).collect(),
            index_seq: view.index_seq,
            person_id: view.person.unwrap_or_default(),
            identifiers: view.identifiers,
        }))
    }

    async fn link_identifiers(
        &self,
        req: Request<pb::LinkIdentifiersRequest>,
    ) -> Result<Response<pb::LinkIdentifiersResponse>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        let out = self
            .engine
            .link_identifiers(
                LinkRequest {
                    external_id: r.external_id,
                    contacts: r.contacts,
                    default_region: r.default_region,
                    idempotency_key: r.idempotency_key,
                },
                &caller,
            )
            .await?;
        Ok(Response::new(pb::LinkIdentifiersResponse {
            external_id: out.external_id,
            contacts: out.contacts,
            seq: out.seq,
            duplicate: out.duplicate,
        }))
    }

    async fn unlink_identifier(
        &self,
        req: Request<pb::UnlinkIdentifierRequest>,
    ) -> Result<Response<pb::UnlinkIdentifierResponse>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        let (external_id, seq) = self
            .engine
            .unlink_identifier(&r.contact, &r.default_region, &caller)
            .await?;
        Ok(Response::new(pb::UnlinkIdentifierResponse {
            external_id,
            seq,
        }))
    }

    async fn process_inbound(
        &self,
        req: Request<pb::ProcessInboundRequest>,
    ) -> Result<Response<pb::ProcessInboundResponse>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        let out = self
            .engine
            .process_inbound(
                InboundRequest {
                    channel: channel_arg(r.channel),
                    received_at: r.received_at.as_ref().map(ts_to_ms),
                    from: r.from,
                    to: r.to,
                    text: r.text,
                    message_id: r.message_id,
                    default_region: r.default_region,
                },
                &caller,
            )
            .await?;
        Ok(Response::new(pb::ProcessInboundResponse {
            action: inbound_action_pb(out.action) as i32,
            reply_text: out.reply_text,
            matched_keyword: out.matched_keyword,
            seq: out.seq,
            duplicate: out.duplicate,
            consent_id: out.consent_id,
            normalized_contact: out.normalized_contact,
        }))
    }
}
