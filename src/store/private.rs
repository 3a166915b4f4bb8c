//! Where personal data rests: the data directory is created owner-only (0700) and store
//! files 0600, and looser ones found at start are reported.
use super::StoreError;
use std::path::Path;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Creates `dir` owner-only, or warns when an existing one lets others in.
pub fn data_dir(dir: &Path) -> Result<(), StoreError> {
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(|e| {
            unavailable(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        // The mode given to mkdir is narrowed by the umask, never widened: set it exactly.
        set_mode(dir, 0o700)?;
        return Ok(());
    }
    warn_if_loose(dir, 0o700, "data directory");
    Ok(())
}

/// Creates `path` 0600 when missing, or warns when an existing one is readable by others.
pub fn file(path: &Path) -> Result<(), StoreError> {
    if !path.exists() {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        match o.open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(unavailable(format!(
                    "cannot create {}: {e}",
                    path.display()
                )));
            }
        }
        return Ok(());
    }
    warn_if_loose(path, 0o600, "store file");
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| unavailable(format!("cannot restrict {}: {e}", path.display())))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(unix)]
fn warn_if_loose(path: &Path, wanted: u32, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.permissions().mode() & 0o777;
        if mode & !wanted != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                wanted = format!("{wanted:o}"),
                "{what} holds personal data and is open to other local users; chmod {wanted:o} it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_loose(_: &Path, _: u32, _: &str) {}
