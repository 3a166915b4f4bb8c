//! Registry imports and listing through the engine.
use super::Engine;
use crate::audit::{AuditDraft, Caller};
use crate::error::{Error, Result};
use crate::registry::{ImportMode, ImportOptions, ImportReport, ListInfo};
use std::path::PathBuf;

impl Engine {
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
