//! DncService: AddEntries, RemoveEntries and GetEntries over the engine.
use super::convert::registry_info;
use super::convert::{dnc_entry, dnc_type_arg, entry_results, import_mode_arg, ts_to_ms};
use crate::engine::{
    AddEntriesRequest, DncEntryRequest, Engine, RemoveEntriesRequest, RemoveEntryRequest,
    UploadChunk,
};
use crate::proto as pb;
use futures::StreamExt;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct DncApi {
    engine: Arc<Engine>,
}

impl DncApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        DncApi { engine }
    }
}

#[tonic::async_trait]
impl pb::dnc_service_server::DncService for DncApi {
    async fn add_entries(
        &self,
        req: Request<pb::AddEntriesRequest>,
    ) -> Result<Response<pb::AddEntriesResponse>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        let out = self
            .engine
            .add_entries(
                AddEntriesRequest {
                    entries: r
                        .entries
                        .into_iter()
                        .map(|e| DncEntryRequest {
                            dnc_type: dnc_type_arg(e.r#type),
                            expires_at: e.expires_at.as_ref().map(ts_to_ms),
                            contact: e.contact,
                            list: e.list,
                            source: e.source,
                            note: e.note,
                        })
                        .collect(),
                    idempotency_key: r.idempotency_key,
                    default_region: r.default_region,
                    actor: r.actor,
                },
                &caller,
            )
            .await?;
        Ok(Response::new(pb::AddEntriesResponse {
            results: entry_results(&out),
            seq: out.seq,
            duplicate: out.duplicate,
        }))
    }

    async fn remove_entries(
        &self,
        req: Request<pb::RemoveEntriesRequest>,
    ) -> Result<Response<pb::RemoveEntriesResponse>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        let out = self
            .engine
            .remove_entries(
                RemoveEntriesRequest {
                    entries: r
                        .entries
                        .into_iter()
                        .map(|e| RemoveEntryRequest {
                            dnc_type: dnc_type_arg(e.r#type),
                            contact: e.contact,
                            list: e.list,
                        })
                        .collect(),
                    actor: r.actor,
                    reason: r.reason,
                    retain_until: r.retain_until.as_ref().map(ts_to_ms),
                    idempotency_key: r.idempotency_key,
                    default_region: r.default_region,
                },
                &caller,
            )
            .await?;
        Ok(Response::new(pb::RemoveEntriesResponse {
            results: entry_results(&out),
            seq: out.seq,
            duplicate: out.duplicate,
        }))
    }

    async fn get_entries(
        &self,
        req: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<pb::GetEntriesResponse>, Status> {
        let r = req.into_inner();
        let (normalized_contact, entries, index_seq) =
            self.engine
                .get_entries(&r.contact, &r.default_region, r.include_archived)?;
        Ok(Response::new(pb::GetEntriesResponse {
            normalized_contact,
            entries: entries.iter().map(dnc_entry).collect(),
            index_seq,
        }))
    }

    async fn import_registry(
        &self,
        req: Request<tonic::Streaming<pb::ImportRegistryChunk>>,
    ) -> Result<Response<pb::ImportRegistryResponse>, Status> {
        let caller = super::caller(&req);
        let mut stream = req.into_inner();
        let mut upload = self.engine.registry_upload();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            upload
                .chunk(UploadChunk {
                    list: &chunk.list,
                    mode: import_mode_arg(chunk.mode),
                    max_reject_fraction: chunk.max_reject_fraction,
                    file_name: &chunk.file_name,
                    data: &chunk.data,
                })
                .await?;
        }
        let outcome = self.engine.import_upload(upload, &caller).await;
        let report = outcome?;
        Ok(Response::new(pb::ImportRegistryResponse {
            registry: Some(registry_info(&report.info)),
            rejected_lines: report.rejected,
            rejects_path: report.rejects_path.unwrap_or_default(),
        }))
    }

    async fn list_registries(
        &self,
        _req: Request<pb::ListRegistriesRequest>,
    ) -> Result<Response<pb::ListRegistriesResponse>, Status> {
        Ok(Response::new(pb::ListRegistriesResponse {
            registries: self
                .engine
                .list_registries()
                .iter()
                .map(registry_info)
                .collect(),
        }))
    }
}
