//! ConsentService: RecordConsent and GetContact over the engine.
use super::convert::inbound_action_pb;
use super::convert::{channel_arg, consent_record, dnc_entry, purpose_arg, status_arg, ts_to_ms};
use crate::engine::{
    ConsentImport, ConsentRequest, Engine, ImportChunk, ImportRow, InboundRequest, LinkRequest,
};
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

fn import_row(r: pb::ImportConsentRow) -> ImportRow {
    ImportRow {
        line: r.line,
        external_id: r.external_id,
        consent: ConsentRequest {
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
            idempotency_key: String::new(),
            default_region: String::new(),
        },
    }
}

fn import_response(i: &ConsentImport, index_seq: u64) -> pb::ImportConsentsResponse {
    pb::ImportConsentsResponse {
        import_id: i.import_id.clone(),
        rows: i.rows,
        imported: i.imported,
        resumed: i.resumed,
        rejected: i.rejected,
        rejects: i
            .rejects
            .iter()
            .map(|r| pb::ImportReject {
                line: r.line,
                field: r.field.clone(),
                reason: r.reason.clone(),
            })
            .collect(),
        rejects_omitted: i.rejects_omitted,
        chunks_committed: i.chunks_committed,
        chunks_resumed: i.chunks_resumed,
        first_seq: i.first_seq,
        last_seq: i.last_seq,
        index_seq,
    }
}

#[tonic::async_trait]
impl pb::consent_service_server::ConsentService for ConsentApi {
    async fn import_consents(
        &self,
        req: Request<tonic::Streaming<pb::ImportConsentsChunk>>,
    ) -> Result<Response<pb::ImportConsentsResponse>, Status> {
        use futures::StreamExt;
        let caller = super::caller(&req);
        let mut stream = req.into_inner();
        let mut import = self.engine.consent_import();
        while let Some(chunk) = stream.next().await {
            let c = chunk?;
            let chunk = ImportChunk {
                import_id: c.import_id,
                chunk: c.chunk,
                rows: c.rows.into_iter().map(import_row).collect(),
                default_region: c.default_region,
                max_reject_fraction: c.max_reject_fraction,
                rejected_by_client: c.rejected_by_client,
            };
            if let Err(e) = import.chunk(&self.engine, chunk, &caller).await {
                // What was committed, and every reject so far, go with the refusal.
                let status = Status::from(e);
                let so_far = import_response(&import, self.engine.index().seq());
                return Err(Status::with_details(
                    status.code(),
                    status.message(),
                    prost::Message::encode_to_vec(&so_far).into(),
                ));
            }
        }
        tracing::info!(
            import_id = %import.import_id,
            rows = import.rows,
            imported = import.imported,
            resumed = import.resumed,
            rejected = import.rejected,
            "consent import finished"
        );
        Ok(Response::new(import_response(
            &import,
            self.engine.index().seq(),
        )))
    }

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
