//! Versions on disk: `<dir>/<LIST>/v<N>.snap` (the number set), `v<N>.json` (its info)
//! and `CURRENT` (the version in force), written and fsynced before they are switched to.
use super::set::NumberSet;
use super::{ListInfo, RegistryError, RegistrySet, list_version};
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

fn io_err(file: &Path, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Snapshot {
        file: file.display().to_string(),
        message: e.to_string(),
    }
}

fn dir_name(list: &str) -> String {
    list.replace(':', "_")
}

/// Keeps this many versions per list on disk.
const KEEP: u64 = 2;

pub(super) fn save(dir: &Path, info: &ListInfo, set: &NumberSet) -> Result<(), RegistryError> {
    let list_dir = dir.join(dir_name(&info.name));
    std::fs::create_dir_all(&list_dir).map_err(|e| io_err(&list_dir, e))?;
    let snap = list_dir.join(format!("v{}.snap", info.version));
    let meta = list_dir.join(format!("v{}.json", info.version));
    let write = |path: &Path, f: &dyn Fn(&mut BufWriter<std::fs::File>) -> std::io::Result<()>| {
        let tmp = path.with_extension("tmp");
        let file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        let mut w = BufWriter::with_capacity(8 << 20, file);
        f(&mut w).map_err(|e| io_err(&tmp, e))?;
        let file = w.into_inner().map_err(|e| io_err(&tmp, e))?;
        file.sync_all().map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
    };
    write(&snap, &|w| set.write_to(w))?;
    write(&meta, &|w| {
        w.write_all(&serde_json::to_vec_pretty(info).unwrap_or_default())
    })?;
    write(&list_dir.join("CURRENT"), &|w| {
        w.write_all(info.version.to_string().as_bytes())
    })?;
    if let Ok(d) = std::fs::File::open(&list_dir) {
        let _ = d.sync_all();
    }
    for v in 1..=info.version.saturating_sub(KEEP) {
        let _ = std::fs::remove_file(list_dir.join(format!("v{v}.snap")));
        let _ = std::fs::remove_file(list_dir.join(format!("v{v}.json")));
    }
    Ok(())
}

pub(super) fn load_all(dir: &Path) -> Result<Vec<Arc<RegistrySet>>, RegistryError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let list_dir = entry.map_err(|e| io_err(dir, e))?.path();
        let current = list_dir.join("CURRENT");
        if !current.is_file() {
            continue;
        }
        let v = std::fs::read_to_string(&current).map_err(|e| io_err(&current, e))?;
        let v: u64 = v.trim().parse().map_err(|e| io_err(&current, e))?;
        let meta = list_dir.join(format!("v{v}.json"));
        let info: ListInfo =
            serde_json::from_slice(&std::fs::read(&meta).map_err(|e| io_err(&meta, e))?)
                .map_err(|e| io_err(&meta, e))?;
        let snap = list_dir.join(format!("v{v}.snap"));
        let file = std::fs::File::open(&snap).map_err(|e| io_err(&snap, e))?;
        let set = NumberSet::read_from(&mut BufReader::with_capacity(8 << 20, file))
            .map_err(|e| io_err(&snap, e))?;
        if set.len() != info.count {
            return Err(io_err(
                &snap,
                format!("holds {} numbers, its info says {}", set.len(), info.count),
            ));
        }
        let label = list_version(&info.name, info.version);
        out.push(Arc::new(RegistrySet { info, label, set }));
    }
    out.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    Ok(out)
}
