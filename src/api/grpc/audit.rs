//! AuditService: the audit trail exported as a stream, and chain verification.
use super::convert::{ms_to_ts, ts_to_ms};
use super::status::to_status;
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
        let since = r.since.as_ref().map(ts_to_ms);
        let until = r.until.as_ref().map(ts_to_ms);
        if let (Some(s), Some(u)) = (since, until)
            && u <= s
        {
            return Err(to_status(crate::error::Error::invalid(
                "until",
                format!("{u} is not after since ({s})"),
            )));
        }
        let engine = self.engine.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Pages are read on a blocking thread and sent as the client takes them.
        tokio::task::spawn_blocking(move || {
            let mut after = r.after_seq;
            loop {
                match engine.audit_page(after, since, until, crate::engine::AUDIT_PAGE) {
                    Ok((entries, last)) => {
                        for e in &entries {
                            if tx.blocking_send(Ok(audit_record(e))).is_err() {
                                return;
                            }
                        }
                        match last {
                            Some(l) => after = l,
                            None => return,
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(to_status(e)));
                        return;
                    }
                }
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
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(to_status)?;
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
