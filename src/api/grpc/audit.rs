//! AuditService: the audit trail exported as a stream, and chain verification.
use super::convert::{ms_to_ts, ts_to_ms};
use crate::audit::AuditEntry;
use crate::engine::Engine;
use crate::proto as pb;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AuditApi {
    engine: Arc<Engine>,
}

impl AuditApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        AuditApi { engine }
    }
}

pub fn audit_record(e: &AuditEntry) -> pb::AuditRecord {
    let json = |v: &serde_json::Value| {
        if v.is_null() {
            String::new()
        } else {
            v.to_string()
        }
    };
    pb::AuditRecord {
        seq: e.record.seq,
        time: Some(ms_to_ts(e.record.time)),
        actor: e.record.actor.clone(),
        kind: e.record.kind.clone(),
        event_seq: e.record.event_seq.unwrap_or(0),
        subjects: e.record.subjects.clone(),
        summary_json: json(&e.record.summary),
        metadata: e.record.metadata.clone().into_iter().collect(),
        identifiers: e.identifiers.clone().into_iter().collect(),
        before_json: json(&e.before),
        after_json: json(&e.after),
        erased: e.erased,
        personal_sha256: e.record.personal_sha256.clone().unwrap_or_default(),
        prev_hash: e.record.prev_hash.clone(),
        hash: e.record.hash.clone(),
        json: serde_json::to_string(e).unwrap_or_default(),
    }
}

type ExportOut = Pin<Box<dyn Stream<Item = Result<pb::AuditRecord, Status>> + Send>>;

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    type ExportAuditStream = ExportOut;

    async fn export_audit(
        &self,
        req: Request<pb::ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        let r = req.into_inner();
        let range = self.engine.audit_range(
            r.since.as_ref().map(ts_to_ms),
            r.until.as_ref().map(ts_to_ms),
        )?;
        let engine = self.engine.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Pages are read on a blocking thread and sent as the client takes them.
        tokio::task::spawn_blocking(move || {
            let sent = engine.export_audit(&range, r.after_seq, |e| {
                tx.blocking_send(Ok(audit_record(e))).is_ok()
            });
            if let Err(e) = sent {
                let _ = tx.blocking_send(Err(Status::from(e)));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn verify_audit(
        &self,
        _req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let engine = self.engine.clone();
        let v = tokio::task::spawn_blocking(move || engine.audit_verify())
            .await
            .map_err(|e| crate::error::Error::Internal(e.to_string()))??;
        let (first_broken_seq, problem) = v.first_broken.clone().unwrap_or_default();
        Ok(Response::new(pb::VerifyAuditResponse {
            ok: v.ok(),
            records: v.records,
            erased: v.erased,
            last_seq: v.last_seq,
            last_hash: v.last_hash,
            first_broken_seq,
            problem,
        }))
    }
}
