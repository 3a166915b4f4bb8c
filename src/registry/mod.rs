//! National and state Do-Not-Call registries: compact immutable sets per list, swapped in
//! atomically, persisted as binary snapshots, imported from the registry's file formats.
pub mod generate;
mod import;
mod legacy;
pub mod parse;
pub mod set;
mod snapshot;
pub use set::PREFETCH_WINDOW;

pub use import::{ImportMode, ImportOptions, ImportReport};

use crate::model::{DncType, Millis};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use set::NumberSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "list: `{0}` is not a list name (FEDERAL, LITIGATOR, STATE:<code>, or letters, digits, `_` and `-`, up to 64)"
    )]
    BadName(String),
    #[error("{file}: {message}")]
    Io { file: String, message: String },
    #[error(
        "{rejected} of {lines} lines rejected ({pct:.3}%), over the limit of {limit:.3}%: import refused, version {current} keeps serving; rejects in {rejects}"
    )]
    TooManyRejects {
        rejected: u64,
        lines: u64,
        pct: f64,
        limit: f64,
        current: u64,
        rejects: String,
    },
    #[error("a change file needs an existing version of {0}; import a full file first")]
    NoBase(String),
    #[error("snapshot {file}: {message}")]
    Snapshot { file: String, message: String },
}

/// A source file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
    pub lines: u64,
    pub rejected: u64,
}

/// What is known about one version of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListInfo {
    pub name: String,
    pub dnc_type: DncType,
    pub version: u64,
    pub count: u64,
    pub imported_at: Millis,
    /// `FULL` or `CHANGES`.
    pub mode: String,
    pub sources: Vec<SourceFile>,
    pub added: u64,
    pub removed: u64,
}

/// One immutable version of one list.
pub struct RegistrySet {
    pub info: ListInfo,
    /// Interned so hits can name the list and version without allocating.
    pub label: &'static ListVersion,
    set: NumberSet,
}

impl RegistrySet {
    pub fn contains(&self, e164: u64) -> bool {
        self.set.contains(e164)
    }
    /// The set in its binary snapshot form (what `install` reads back on another replica).
    pub fn write_set(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        self.set.write_to(w)
    }
    pub fn heap_bytes(&self) -> usize {
        self.set.heap_bytes()
    }
    /// Membership of many numbers, with their memory loads overlapped.
    pub fn contains_many(&self, e164: &[u64], out: &mut [bool]) {
        self.set.contains_many(e164, out)
    }
}

/// A registry membership found by a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryHit {
    pub dnc_type: DncType,
    pub list: &'static ListVersion,
}

impl RegistryHit {
    /// Filler for unused slots of a fixed-size hit array.
    pub const EMPTY: RegistryHit = RegistryHit {
        dnc_type: DncType::Federal,
        list: &ListVersion {
            list: "",
            version: 0,
        },
    };
}

/// One version of one list, interned for the life of the process, so that a decision names
/// it with one pointer: decisions carry up to a dozen record ids and are moved several times
/// a check, and a name and a version inline made every id twice as large.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ListVersion {
    pub list: &'static str,
    pub version: u64,
}

/// The interned `ListVersion` of (`name`, `version`): one small record a version imported.
pub fn list_version(name: &str, version: u64) -> &'static ListVersion {
    type Seen = std::collections::HashMap<(&'static str, u64), &'static ListVersion>;
    static SEEN: Mutex<Option<Seen>> = Mutex::new(None);
    let list = intern(name);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    seen.get_or_insert_with(Default::default)
        .entry((list, version))
        .or_insert_with(|| Box::leak(Box::new(ListVersion { list, version })))
}

/// Most lists one check reports; more lists are still checked, the rest are not named.
pub const MAX_HITS: usize = 8;

/// Validates and upper-cases a list name, and says which DNC type it is.
pub fn list_type(name: &str) -> Result<(String, DncType), RegistryError> {
    let upper = name.trim().to_ascii_uppercase();
    let ok = !upper.is_empty()
        && upper.len() <= 64
        && upper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'));
    if !ok || upper.starts_with(':') || upper.ends_with(':') {
        return Err(RegistryError::BadName(name.to_string()));
    }
    let t = if upper == "FEDERAL" {
        DncType::Federal
    } else if upper.starts_with("STATE:") {
        DncType::State
    } else if upper.starts_with("LITIGATOR") {
        DncType::Litigator
    } else if upper.contains(':') {
        return Err(RegistryError::BadName(name.to_string()));
    } else {
        DncType::Corporate
    };
    Ok((upper, t))
}

fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

/// A snapshot of every list's current version.
pub struct Lists(arc_swap::Guard<Arc<Vec<Arc<RegistrySet>>>>);

impl Lists {
    /// Starts loading what checking these numbers against every list will read.
    #[inline]
    pub fn prefetch(&self, e164: &[u64]) {
        for l in self.0.iter() {
            l.set.prefetch(e164);
        }
    }

    /// Fills `out` with the lists holding `e164`; returns how many.
    #[inline]
    pub fn hits(&self, e164: u64, out: &mut [RegistryHit; MAX_HITS]) -> usize {
        let mut n = 0;
        for l in self.0.iter() {
            if n < MAX_HITS && l.contains(e164) {
                out[n] = RegistryHit {
                    dnc_type: l.info.dnc_type,
                    list: l.label,
                };
                n += 1;
            }
        }
        n
    }
}

/// Every list's current version. Readers take a snapshot of the table without waiting;
/// an import builds the new version aside and swaps it in whole.
pub struct Registries {
    table: ArcSwap<Vec<Arc<RegistrySet>>>,
    dir: Option<PathBuf>,
    /// One import at a time.
    importing: Mutex<()>,
}

impl Registries {
    /// Lists kept only in memory (tests).
    pub fn in_memory() -> Registries {
        Registries {
            table: ArcSwap::from_pointee(Vec::new()),
            dir: None,
            importing: Mutex::new(()),
        }
    }

    /// Loads every list's current snapshot from `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Registries, RegistryError> {
        let lists = snapshot::load_all(dir)?;
        Ok(Registries {
            table: ArcSwap::from_pointee(lists),
            dir: Some(dir.to_path_buf()),
            importing: Mutex::new(()),
        })
    }

    /// Where uploaded registry files wait while an import reads them.
    pub fn incoming_dir(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(".incoming")
    }

    /// The lists as they are now, for a check that reads them twice (prefetch, then hits):
    /// one snapshot instead of two.
    #[inline]
    pub fn current(&self) -> Lists {
        Lists(self.table.load())
    }

    /// Starts loading what checking these numbers against every list will read.
    #[inline]
    pub fn prefetch(&self, e164: &[u64]) {
        self.current().prefetch(e164)
    }

    pub fn list(&self) -> Vec<ListInfo> {
        self.table.load().iter().map(|l| l.info.clone()).collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<RegistrySet>> {
        self.table
            .load()
            .iter()
            .find(|l| l.info.name == name)
            .cloned()
    }

    /// Puts `set` in place of its list's current version. The old version is dropped on a
    /// background thread once no reader holds it, so no request pays for freeing it.
    fn swap_in(&self, set: RegistrySet) {
        let set = Arc::new(set);
        let mut old = None;
        self.table.rcu(|t| {
            let mut next: Vec<Arc<RegistrySet>> = Vec::with_capacity(t.len() + 1);
            old = None;
            for l in t.iter() {
                if l.info.name == set.info.name {
                    old = Some(l.clone());
                } else {
                    next.push(l.clone());
                }
            }
            next.push(set.clone());
            next.sort_by(|a, b| a.info.name.cmp(&b.info.name));
            next
        });
        if let Some(old) = old {
            std::thread::spawn(move || {
                while Arc::strong_count(&old) > 1 {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                drop(old);
            });
        }
    }

    /// Installs a version built elsewhere (the Redis store's replicas); persists it when
    /// this registry has a directory.
    pub fn install(&self, info: ListInfo, set: NumberSet) -> Result<(), RegistryError> {
        if let Some(dir) = &self.dir {
            snapshot::save(dir, &info, &set)?;
        }
        let label = list_version(&info.name, info.version);
        self.swap_in(RegistrySet { info, label, set });
        Ok(())
    }
}

/// How the engine reports a registry failure to its callers.
impl From<RegistryError> for crate::error::Error {
    fn from(e: RegistryError) -> crate::error::Error {
        use crate::error::Error;
        use RegistryError as R;
        match e {
            R::BadName(_) => Error::invalid("list", e.to_string()),
            R::TooManyRejects { .. } | R::NoBase(_) => Error::FailedPrecondition(e.to_string()),
            R::Io { .. } => Error::invalid("file", e.to_string()),
            R::Snapshot { .. } => Error::Internal(e.to_string()),
        }
    }
}
