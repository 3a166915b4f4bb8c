//! DncService: AddEntries, RemoveEntries and GetEntries over the engine.
use super::convert::registry_info;
use super::convert::{dnc_entry, dnc_type_arg, entry_results, ts_to_ms};
use super::status::to_status;
use crate::engine::{
    AddEntriesRequest, DncEntryRequest, Engine, RemoveEntriesRequest, RemoveEntryRequest,
};
use crate::proto as pb;
use crate::registry::ImportMode;
use futures::StreamExt;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
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
            .await
            .map_err(to_status)?;
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
            .await
            .map_err(to_status)?;
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
        let (normalized_contact, entries, index_seq) = self
            .engine
            .get_entries(&r.contact, &r.default_region, r.include_archived)
            .map_err(to_status)?;
        let now = self.engine.now();
        Ok(Response::new(pb::GetEntriesResponse {
            normalized_contact,
            entries: entries.iter().map(|e| dnc_entry(e, now)).collect(),
            index_seq,
        }))
    }

    async fn import_registry(
        &self,
        req: Request<tonic::Streaming<pb::ImportRegistryChunk>>,
    ) -> Result<Response<pb::ImportRegistryResponse>, Status> {
        let caller = super::caller(&req);
        let mut stream = req.into_inner();
        let dir = self.engine.registries().incoming_dir().join(format!(
            "{}-{}",
            std::process::id(),
            UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let result = receive(&mut stream, &dir).await;
        let outcome = match result {
            Ok((list, mode, files, fraction)) => self
                .engine
                .import_registry(&list, mode, files, fraction, &caller)
                .await
                .map_err(to_status),
            Err(status) => Err(status),
        };
        let _ = tokio::fs::remove_dir_all(&dir).await;
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

static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

type Upload = (
    String,
    ImportMode,
    Vec<(String, std::path::PathBuf)>,
    Option<f64>,
);

/// Writes the uploaded files to `dir`, one per file_name, and returns what to import.
async fn receive(
    stream: &mut tonic::Streaming<pb::ImportRegistryChunk>,
    dir: &std::path::Path,
) -> Result<Upload, Status> {
    let io = |e: std::io::Error| Status::internal(format!("cannot store the upload: {e}"));
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let mut header: Option<(String, ImportMode, Option<f64>)> = None;
    let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
    let mut current: Option<tokio::io::BufWriter<tokio::fs::File>> = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if header.is_none() {
            let mode = match pb::ImportMode::try_from(chunk.mode) {
                Ok(pb::ImportMode::Full) => ImportMode::Full,
                Ok(pb::ImportMode::Changes) => ImportMode::Changes,
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "mode: must be FULL or CHANGES (got {})",
                        chunk.mode
                    )));
                }
            };
            let fraction = (chunk.max_reject_fraction > 0.0).then_some(chunk.max_reject_fraction);
            header = Some((chunk.list.clone(), mode, fraction));
        }
        let starts_file = files.is_empty()
            || (!chunk.file_name.is_empty() && chunk.file_name != files[files.len() - 1].0);
        if starts_file {
            if let Some(mut w) = current.take() {
                w.flush().await.map_err(io)?;
            }
            let name = if chunk.file_name.is_empty() {
                format!("upload-{}", files.len() + 1)
            } else {
                chunk.file_name.clone()
            };
            let path = dir.join(format!("{}.part", files.len()));
            current = Some(tokio::io::BufWriter::with_capacity(
                1 << 20,
                tokio::fs::File::create(&path).await.map_err(io)?,
            ));
            files.push((name, path));
        }
        if let Some(w) = current.as_mut() {
            w.write_all(&chunk.data).await.map_err(io)?;
        }
    }
    if let Some(mut w) = current.take() {
        w.flush().await.map_err(io)?;
    }
    let (list, mode, fraction) =
        header.ok_or_else(|| Status::invalid_argument("list: the upload was empty"))?;
    Ok((list, mode, files, fraction))
}
