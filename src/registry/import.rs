//! Building a new version of a list from registry files: parse, reject, sort, merge, swap.
use super::ef::EliasFano;
use super::parse::{self, Line};
use super::{ListInfo, Registries, RegistryError, SourceFile, list_type};
use crate::model::Millis;
use sha2::{Digest, Sha256};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// The files hold the whole list.
    Full,
    /// The files hold additions and deletions against the current version.
    Changes,
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Refuse the import when more than this fraction of lines are malformed.
    pub max_reject_fraction: f64,
    pub now: Millis,
}

#[derive(Debug, Clone)]
pub struct ImportReport {
    pub info: ListInfo,
    pub rejected: u64,
    /// Where malformed lines were written, with file and line number, if any were.
    pub rejects_path: Option<String>,
}

/// Hashes what passes through, so a file is read once for both checksum and content.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

struct Rejects {
    path: PathBuf,
    out: Option<BufWriter<std::fs::File>>,
    count: u64,
}

impl Rejects {
    fn add(
        &mut self,
        file: &str,
        line_no: u64,
        reason: &str,
        line: &[u8],
    ) -> Result<(), RegistryError> {
        self.count += 1;
        if self.out.is_none() {
            if let Some(d) = self.path.parent() {
                let _ = std::fs::create_dir_all(d);
            }
            let f = std::fs::File::create(&self.path).map_err(|e| RegistryError::Io {
                file: self.path.display().to_string(),
                message: e.to_string(),
            })?;
            self.out = Some(BufWriter::new(f));
        }
        let text = String::from_utf8_lossy(&line[..line.len().min(200)]);
        let w = self.out.as_mut().expect("opened above");
        writeln!(w, "{file}:{line_no}: {reason}: {text}").map_err(|e| RegistryError::Io {
            file: self.path.display().to_string(),
            message: e.to_string(),
        })
    }
}

impl Registries {
    /// Imports `files` (display name, path) as the next version of `list`. On any error
    /// the current version keeps serving.
    pub fn import(
        &self,
        list: &str,
        mode: ImportMode,
        files: &[(String, PathBuf)],
        opts: &ImportOptions,
        progress: &dyn Fn(u64),
    ) -> Result<ImportReport, RegistryError> {
        let _one_at_a_time = self.importing.lock().unwrap_or_else(|e| e.into_inner());
        let (name, dnc_type) = list_type(list)?;
        let current = self.get(&name);
        let version = current.as_ref().map_or(1, |c| c.info.version + 1);
        if mode == ImportMode::Changes && current.is_none() {
            return Err(RegistryError::NoBase(name));
        }
        let rejects_dir = self
            .dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(name.replace(':', "_"));
        let mut rejects = Rejects {
            path: rejects_dir.join(format!("rejects-v{version}.txt")),
            out: None,
            count: 0,
        };
        let mut adds: Vec<u64> = Vec::new();
        let mut dels: Vec<u64> = Vec::new();
        let mut sources = Vec::new();
        let mut total_lines = 0u64;
        for (display, path) in files {
            let (source, lines) = read_file(
                display,
                path,
                mode,
                &mut adds,
                &mut dels,
                &mut rejects,
                progress,
            )?;
            total_lines += lines;
            sources.push(source);
        }
        if let Some(w) = rejects.out.as_mut() {
            let _ = w.flush();
        }
        let rejects_path = (rejects.count > 0).then(|| rejects.path.display().to_string());
        let limit = opts.max_reject_fraction;
        if rejects.count as f64 > limit * total_lines.max(1) as f64 {
            return Err(RegistryError::TooManyRejects {
                rejected: rejects.count,
                lines: total_lines,
                pct: 100.0 * rejects.count as f64 / total_lines.max(1) as f64,
                limit: 100.0 * limit,
                current: current.as_ref().map_or(0, |c| c.info.version),
                rejects: rejects_path.unwrap_or_default(),
            });
        }
        adds.sort_unstable();
        adds.dedup();
        dels.sort_unstable();
        dels.dedup();
        let old: Box<dyn Iterator<Item = u64>> = match &current {
            Some(c) => Box::new(c.numbers()),
            None => Box::new(std::iter::empty()),
        };
        let (values, added, removed) = match mode {
            ImportMode::Full => diff_full(old, adds),
            ImportMode::Changes => apply_changes(old, &adds, &dels),
        };
        let set = EliasFano::from_sorted(&values);
        drop(values);
        let info = ListInfo {
            name: name.clone(),
            dnc_type,
            version,
            count: set.len(),
            imported_at: opts.now,
            mode: match mode {
                ImportMode::Full => "FULL".into(),
                ImportMode::Changes => "CHANGES".into(),
            },
            sources,
            added,
            removed,
        };
        self.install(info.clone(), set)?;
        tracing::info!(list = %name, version, count = info.count, added, removed, rejected = rejects.count, "registry version installed");
        Ok(ImportReport {
            info,
            rejected: rejects.count,
            rejects_path,
        })
    }
}

fn read_file(
    display: &str,
    path: &Path,
    mode: ImportMode,
    adds: &mut Vec<u64>,
    dels: &mut Vec<u64>,
    rejects: &mut Rejects,
    progress: &dyn Fn(u64),
) -> Result<(SourceFile, u64), RegistryError> {
    let io = |e: std::io::Error| RegistryError::Io {
        file: display.to_string(),
        message: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut magic = [0u8; 2];
    let gz = file.read(&mut magic).map_err(io)? == 2 && magic == [0x1f, 0x8b];
    drop(file);
    let hashing = Hashing {
        inner: std::fs::File::open(path).map_err(io)?,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut hashing = Some(hashing);
    let mut lines = 0u64;
    let mut rejected = 0u64;
    let mut failure: Option<RegistryError> = None;
    {
        let h = hashing.as_mut().expect("set above");
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(
                std::io::BufReader::with_capacity(1 << 20, h),
            ))
        } else {
            Box::new(h)
        };
        parse::for_each_line(
            reader,
            |line_no, line| match parse::parse_line(line, mode == ImportMode::Changes) {
                None => {}
                Some(Ok(Line::Add(n))) => {
                    lines += 1;
                    adds.push(n)
                }
                Some(Ok(Line::Delete(n))) => {
                    lines += 1;
                    dels.push(n)
                }
                Some(Err(reason)) => {
                    lines += 1;
                    rejected += 1;
                    if let Err(e) = rejects.add(display, line_no, reason, line) {
                        failure.get_or_insert(e);
                    }
                }
            },
            progress,
        )
        .map_err(io)?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let h = hashing.take().expect("set above");
    Ok((
        SourceFile {
            name: display.to_string(),
            sha256: hex::encode(h.hasher.finalize()),
            bytes: h.bytes,
            lines,
            rejected,
        },
        lines,
    ))
}

/// The new full list, and how many numbers it adds and removes against the old one.
fn diff_full(old: impl Iterator<Item = u64>, new: Vec<u64>) -> (Vec<u64>, u64, u64) {
    let (mut added, mut removed) = (0u64, 0u64);
    let mut old = old.peekable();
    for v in &new {
        while let Some(o) = old.next_if(|o| o < v) {
            let _ = o;
            removed += 1;
        }
        if old.next_if_eq(v).is_none() {
            added += 1;
        }
    }
    removed += old.count() as u64;
    (new, added, removed)
}

/// The old list with additions merged in and deletions taken out.
fn apply_changes(
    old: impl Iterator<Item = u64>,
    adds: &[u64],
    dels: &[u64],
) -> (Vec<u64>, u64, u64) {
    let mut out = Vec::new();
    let (mut added, mut removed) = (0u64, 0u64);
    let mut old = old.peekable();
    let mut adds = adds.iter().copied().peekable();
    let mut dels = dels.iter().copied().peekable();
    loop {
        let next = match (old.peek().copied(), adds.peek().copied()) {
            (None, None) => break,
            (Some(o), Some(a)) if a < o => {
                adds.next();
                (a, true)
            }
            (Some(o), Some(a)) if a == o => {
                adds.next();
                old.next();
                (o, false)
            }
            (Some(o), _) => {
                old.next();
                (o, false)
            }
            (None, Some(a)) => {
                adds.next();
                (a, true)
            }
        };
        let (v, is_new) = next;
        while dels.next_if(|d| *d < v).is_some() {}
        if dels.next_if_eq(&v).is_some() {
            if !is_new {
                removed += 1;
            }
            continue;
        }
        if is_new {
            added += 1;
        }
        out.push(v);
    }
    (out, added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges() {
        let (v, a, r) = apply_changes([1, 3, 5, 7].into_iter(), &[2, 3, 8], &[5, 8, 9]);
        assert_eq!((v, a, r), (vec![1, 2, 3, 7], 1, 1));
        let (v, a, r) = diff_full([1, 2, 3].into_iter(), vec![2, 3, 4, 5]);
        assert_eq!((v, a, r), (vec![2, 3, 4, 5], 2, 1));
    }
}
