//! Building a new version of a list from registry files: parse, reject, sort, merge, swap.
use super::parse::{self, Line};
use super::set::NumberSet;
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
        let empty = NumberSet::default();
        let old = current.as_ref().map_or(&empty, |c| &c.set);
        let (set, added, removed) = match mode {
            // A full file goes to the build as read: the build drops repeats (no sort of
            // hundreds of millions of numbers first), and reports them so the count of
            // additions stays exact.
            ImportMode::Full => {
                let mut added = count_new(old, &adds);
                let set = NumberSet::build_with(adds, |repeat| {
                    if !old.contains(repeat) {
                        added -= 1;
                    }
                });
                let removed = old.len() - (set.len() - added);
                (set, added, removed)
            }
            ImportMode::Changes => {
                adds.sort_unstable();
                adds.dedup();
                dels.sort_unstable();
                dels.dedup();
                let (values, added, removed) = apply_changes(old, adds, &dels);
                (NumberSet::build(values), added, removed)
            }
        };
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

/// How many of `new` (repeats counted each time) `old` lacks. Lookups in batches with
/// their loads overlapped, on both cores: a national list re-imported in full asks the old
/// version about every number.
fn count_new(old: &NumberSet, new: &[u64]) -> u64 {
    if old.is_empty() {
        return new.len() as u64;
    }
    let count = |part: &[u64]| -> u64 {
        let mut found = [false; 4096];
        part.chunks(found.len())
            .map(|c| {
                old.contains_many(c, &mut found[..c.len()]);
                found[..c.len()].iter().filter(|f| !**f).count() as u64
            })
            .sum()
    };
    let (a, b) = new.split_at(new.len() / 2);
    std::thread::scope(|s| {
        let other = s.spawn(|| count(b));
        count(a) + other.join().expect("a lookup thread panicked")
    })
}

/// The old list with additions merged in and deletions taken out (a number both added and
/// deleted in one import ends up deleted). `dels` is sorted.
fn apply_changes(old: &NumberSet, adds: Vec<u64>, dels: &[u64]) -> (Vec<u64>, u64, u64) {
    let deleted = |v: &u64| dels.binary_search(v).is_ok();
    let mut out = Vec::with_capacity(old.len() as usize + adds.len());
    let mut removed = 0u64;
    old.for_each(|v| {
        if deleted(&v) {
            removed += 1;
        } else {
            out.push(v);
        }
    });
    let before = out.len();
    out.extend(
        adds.into_iter()
            .filter(|a| !old.contains(*a) && !deleted(a)),
    );
    let added = (out.len() - before) as u64;
    (out, added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges() {
        let old = NumberSet::build(vec![1, 3, 5, 7]);
        let (mut v, a, r) = apply_changes(&old, vec![2, 3, 8], &[5, 8, 9]);
        v.sort_unstable();
        assert_eq!((v, a, r), (vec![1, 2, 3, 7], 1, 1));
        let old = NumberSet::build(vec![1, 2, 3]);
        assert_eq!(count_new(&old, &[2, 3, 4, 5, 5, 9]), 4);
        assert_eq!(count_new(&NumberSet::default(), &[2, 3]), 2);
    }
}
