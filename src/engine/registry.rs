//! Registry imports and listing through the engine.
use super::{Arg, Engine};
use crate::audit::{AuditDraft, Caller};
use crate::error::{Error, Result};
use crate::registry::{ImportMode, ImportOptions, ImportReport, ListInfo};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A registry upload as it arrives, chunk by chunk: its files staged in the registries'
/// incoming directory, which goes when the upload is imported or dropped.
pub struct RegistryUpload {
    dir: PathBuf,
    header: Option<(String, ImportMode, Option<f64>)>,
    files: Vec<(String, PathBuf)>,
    current: Option<tokio::io::BufWriter<tokio::fs::File>>,
}

/// One piece of an upload: the first names the list and mode; a new `file_name` starts the
/// next file (empty: the same file, or `upload-<n>` for the first).
pub struct UploadChunk<'a> {
    pub list: &'a str,
    pub mode: Arg<ImportMode>,
    /// 0: the configured default.
    pub max_reject_fraction: f64,
    pub file_name: &'a str,
    pub data: &'a [u8],
}

fn staging(e: std::io::Error) -> Error {
    Error::Internal(format!("cannot store the upload: {e}"))
}

impl RegistryUpload {
    pub async fn chunk(&mut self, c: UploadChunk<'_>) -> Result<()> {
        if self.header.is_none() {
            let mode = c.mode.require("mode")?;
            let fraction = (c.max_reject_fraction > 0.0).then_some(c.max_reject_fraction);
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(staging)?;
            self.header = Some((c.list.to_string(), mode, fraction));
        }
        let starts_file = self.files.is_empty()
            || (!c.file_name.is_empty() && c.file_name != self.files[self.files.len() - 1].0);
        if starts_file {
            if let Some(mut w) = self.current.take() {
                w.flush().await.map_err(staging)?;
            }
            let name = if c.file_name.is_empty() {
                format!("upload-{}", self.files.len() + 1)
            } else {
                c.file_name.to_string()
            };
            let path = self.dir.join(format!("{}.part", self.files.len()));
            self.current = Some(tokio::io::BufWriter::with_capacity(
                1 << 20,
                tokio::fs::File::create(&path).await.map_err(staging)?,
            ));
            self.files.push((name, path));
        }
        if let Some(w) = self.current.as_mut() {
            w.write_all(c.data).await.map_err(staging)?;
        }
        Ok(())
    }
}

impl Drop for RegistryUpload {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Engine {
    /// Starts receiving an upload for `import_upload`.
    pub fn registry_upload(&self) -> RegistryUpload {
        let dir = self.registries.incoming_dir().join(format!(
            "{}-{}",
            std::process::id(),
            UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        RegistryUpload {
            dir,
            header: None,
            files: Vec::new(),
            current: None,
        }
    }

    /// Imports a received upload as the next version of its list; its staged files go.
    pub async fn import_upload(
        &self,
        mut upload: RegistryUpload,
        caller: &Caller,
    ) -> Result<ImportReport> {
        if let Some(mut w) = upload.current.take() {
            w.flush().await.map_err(staging)?;
        }
        let (list, mode, fraction) = upload
            .header
            .clone()
            .ok_or_else(|| Error::invalid("list", "the upload was empty"))?;
        let files = upload.files.clone();
        self.import_registry(&list, mode, files, fraction, caller)
            .await
    }

    /// Imports files already on this machine as the next version of `list`; runs on a
    /// blocking thread, checks keep answering from the current version meanwhile.
    pub async fn import_registry(
        &self,
        list: &str,
        mode: ImportMode,
        files: Vec<(String, PathBuf)>,
        max_reject_fraction: Option<f64>,
        caller: &Caller,
    ) -> Result<ImportReport> {
        if files.is_empty() {
            return Err(Error::invalid("file_name", "no file was sent"));
        }
        let fraction = max_reject_fraction.unwrap_or(self.settings.max_reject_fraction);
        if !(0.0..=1.0).contains(&fraction) {
            return Err(Error::invalid(
                "max_reject_fraction",
                format!("{fraction} is not between 0 and 1"),
            ));
        }
        let registries = self.registries.clone();
        let opts = ImportOptions {
            max_reject_fraction: fraction,
            now: self.clock.now_ms(),
        };
        let list = list.to_string();
        let report = tokio::task::spawn_blocking(move || {
            registries.import(&list, mode, &files, &opts, &|_| {})
        })
        .await
        .map_err(|e| Error::Internal(format!("import task: {e}")))?
        .map_err(Error::from)?;
        // Other replicas of a shared store take the version from there.
        if let Some(set) = self.registries.get(&report.info.name) {
            self.store.publish_registry(set).await?;
        }
        // The version is already on disk and serving; the audit record says so, and a
        // failure to write it is reported, not hidden.
        self.audit_only(vec![AuditDraft {
            kind: "registry_imported".into(),
            actor: caller.actor.clone(),
            subjects: Vec::new(),
            event: None,
            summary: serde_json::to_value(&report.info).unwrap_or_default(),
            metadata: caller.metadata.clone(),
            personal: None,
        }])
        .await?;
        Ok(report)
    }

    pub fn list_registries(&self) -> Vec<ListInfo> {
        self.registries.list()
    }
}
