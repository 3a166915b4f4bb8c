//! Change-log entries as they travel through Redis, and the compressed copy of the whole log
//! every replica keeps: its history for watchers and, on the lease holder, its snapshot.
use crate::model::StoredEvent;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, OnceLock};

/// An erasure's rewrite of log entries: true when it changed the entry. Shared, so that a
/// block not fetched yet keeps it until it arrives.
pub type Rewrite = Arc<dyn Fn(&mut LogEntry) -> bool + Send + Sync>;

/// One committed event; an erasure carries the events it rewrote (under tokens only), so
/// every replica can move its own index entries the way the writer did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub e: StoredEvent,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r: Vec<StoredEvent>,
}

impl LogEntry {
    pub fn seq(&self) -> u64 {
        self.e.seq
    }
}

/// A pub/sub message: the entries of one commit, stamped with the store's epoch.
#[derive(Debug, Serialize, Deserialize)]
pub struct Notice {
    pub epoch: String,
    pub entries: Vec<LogEntry>,
}

/// Entries per compressed block.
const BLOCK: usize = 4096;
const MAGIC: &[u8; 8] = b"PFLOG01\n";

#[derive(Clone)]
struct Block {
    first: u64,
    last: u64,
    body: Body,
    /// The Redis key this version of the block is stored under, once a snapshot holds it.
    archived: Option<Arc<str>>,
    /// Bumped by each rewrite (an erasure).
    version: u32,
}

/// A block is compressed on a background thread, so that the write path that fills it
/// never waits for gzip; until then readers use its entries as they are. Once compressed it
/// moves to the cache's block file when it has one (a replica's data directory), so that a
/// replica's memory holds its index, not its log.
#[derive(Clone)]
enum Body {
    /// Shared, so that copies of the cache (watchers, the snapshot writer) cost no memcpy.
    Gz(Arc<Vec<u8>>),
    Pending {
        entries: Arc<Vec<LogEntry>>,
        gz: Arc<OnceLock<Vec<u8>>>,
    },
    /// On disk; shared by the copies of the cache that hold it.
    Disk(Arc<Region>),
    /// Named by the snapshot, not fetched yet: a replica that started from an index image
    /// (which holds everything before it) fetches such blocks after it serves.
    Remote(Arc<Remote>),
}

/// A block not fetched yet, shared by the copies of the cache; filled once.
pub struct Remote {
    first: u64,
    last: u64,
    /// Where the snapshot it came from stores it.
    key: Arc<str>,
    state: Mutex<RemoteState>,
}

#[derive(Default)]
struct RemoteState {
    got: Option<Body>,
    /// Erasures applied while the block was away, run over it as it arrives: the snapshot
    /// may still hold the version from before them.
    rewrites: Vec<Rewrite>,
}

impl Remote {
    fn lock(&self) -> std::sync::MutexGuard<'_, RemoteState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn got(&self) -> Result<Body, LogError> {
        self.lock()
            .got
            .clone()
            .ok_or(LogError::NotFetched(self.first, self.last))
    }
}

/// A block a snapshot's directory names: first and last seq, key, and its gzip when fetched.
pub type ListedBlock = (u64, u64, Arc<str>, Option<Vec<u8>>);

/// A block of a cache still to be fetched, and where its bytes go (the cache's block file).
#[derive(Clone)]
pub struct Unfetched {
    remote: Arc<Remote>,
    file: Option<Arc<BlockFile>>,
}

impl Unfetched {
    /// Its first and last seq.
    pub fn seqs(&self) -> (u64, u64) {
        (self.remote.first, self.remote.last)
    }

    /// Where the snapshot the cache came from stores it.
    pub fn key(&self) -> &str {
        &self.remote.key
    }

    /// Whether another fetch filled it meanwhile.
    pub fn is_filled(&self) -> bool {
        self.remote.lock().got.is_some()
    }

    /// Fills the block with its stored gzip (rewritten by the erasures applied since the
    /// cache was made, if any), into the block file when the cache has one.
    pub fn fill(&self, gz: Vec<u8>) -> Result<(), LogError> {
        let mut st = self.remote.lock();
        if st.got.is_some() {
            return Ok(());
        }
        let gz = if st.rewrites.is_empty() {
            gz
        } else {
            let mut entries = decode(&gz)?;
            for e in &mut entries {
                for f in &st.rewrites {
                    f(e);
                }
            }
            encode(&entries)
        };
        let mut body = Body::Gz(Arc::new(gz));
        body.settle(self.file.as_ref());
        st.got = Some(body);
        st.rewrites.clear();
        Ok(())
    }

    /// Fills the block from its entries (read from other blocks over the same seqs).
    pub fn fill_entries(&self, entries: &[LogEntry]) -> Result<(), LogError> {
        let (first, last) = self.seqs();
        let whole = entries.len() as u64 == last + 1 - first
            && entries.first().map(LogEntry::seq) == Some(first)
            && entries.windows(2).all(|w| w[1].seq() == w[0].seq() + 1);
        if !whole {
            return Err(LogError::Bad(format!(
                "the snapshot's blocks do not hold seqs {first}..={last} whole"
            )));
        }
        self.fill(encode(entries))
    }
}

impl Body {
    fn pending(entries: Vec<LogEntry>) -> Body {
        let entries = Arc::new(entries);
        let gz = Arc::new(OnceLock::new());
        compressor().send((entries.clone(), gz.clone())).ok();
        Body::Pending { entries, gz }
    }

    /// Takes the compressed form once the background thread has made it, into `file` when
    /// there is one (a write that fails keeps it in memory).
    fn settle(&mut self, file: Option<&Arc<BlockFile>>) {
        let bytes = match self {
            Body::Pending { gz, .. } => match gz.get() {
                Some(b) => b.as_slice(),
                None => return,
            },
            Body::Gz(gz) if file.is_some() => gz.as_slice(),
            Body::Remote(r) => {
                if let Some(b) = r.lock().got.as_mut() {
                    b.settle(file);
                }
                return;
            }
            _ => return,
        };
        let settled = match file.map(|f| f.put(bytes)) {
            Some(Ok(region)) => Body::Disk(Arc::new(region)),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot write a log block to disk; kept in memory");
                Body::Gz(Arc::new(bytes.to_vec()))
            }
            None => Body::Gz(Arc::new(bytes.to_vec())),
        };
        *self = settled;
    }

    fn entries(&self) -> Result<Vec<LogEntry>, LogError> {
        match self {
            Body::Gz(gz) => decode(gz),
            Body::Pending { entries, .. } => Ok(entries.as_ref().clone()),
            Body::Disk(r) => decode(&r.read()?),
            Body::Remote(r) => r.got()?.entries(),
        }
    }

    fn gz(&self) -> Result<std::borrow::Cow<'_, [u8]>, LogError> {
        Ok(match self {
            Body::Gz(gz) => std::borrow::Cow::Borrowed(gz.as_slice()),
            Body::Pending { entries, gz } => match gz.get() {
                Some(b) => std::borrow::Cow::Borrowed(b.as_slice()),
                None => std::borrow::Cow::Owned(encode(entries)),
            },
            Body::Disk(r) => std::borrow::Cow::Owned(r.read()?),
            Body::Remote(r) => std::borrow::Cow::Owned(r.got()?.gz()?.into_owned()),
        })
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Body::Gz(gz) => gz.len(),
            Body::Pending { entries, .. } => entries.len() * 256,
            Body::Disk(_) => 0,
            Body::Remote(r) => r.lock().got.as_ref().map_or(0, Body::heap_bytes),
        }
    }

    /// This version of the block was rewritten (an erasure): its bytes on disk are zeroed
    /// once no copy of the cache reads them any more.
    fn retire(&self) {
        match self {
            Body::Disk(r) => r.scrub.store(true, std::sync::atomic::Ordering::Relaxed),
            Body::Remote(r) => {
                if let Some(b) = &r.lock().got {
                    b.retire();
                }
            }
            _ => {}
        }
    }
}

/// An unnamed file of compressed blocks, appended to: the name is removed as soon as it is
/// open, so nothing is left behind by a crash and the space goes with the last copy of the
/// cache that uses it.
pub struct BlockFile {
    file: std::fs::File,
    end: std::sync::Mutex<u64>,
}

impl BlockFile {
    pub fn create_in(dir: &std::path::Path) -> std::io::Result<Arc<BlockFile>> {
        let path = dir.join(format!(
            "redis-log-{}.blocks",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let file = o.open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(Arc::new(BlockFile {
            file,
            end: std::sync::Mutex::new(0),
        }))
    }

    fn put(self: &Arc<Self>, bytes: &[u8]) -> std::io::Result<Region> {
        let mut end = self.end.lock().unwrap_or_else(|e| e.into_inner());
        let at = *end;
        std::os::unix::fs::FileExt::write_all_at(&self.file, bytes, at)?;
        *end += bytes.len() as u64;
        Ok(Region {
            file: self.clone(),
            at,
            len: bytes.len(),
            scrub: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// One block's bytes in a block file.
pub struct Region {
    file: Arc<BlockFile>,
    at: u64,
    len: usize,
    scrub: std::sync::atomic::AtomicBool,
}

impl Region {
    fn read(&self) -> Result<Vec<u8>, LogError> {
        let mut out = vec![0u8; self.len];
        std::os::unix::fs::FileExt::read_exact_at(&self.file.file, &mut out, self.at)
            .map_err(|e| LogError::Bad(format!("reading a log block from disk: {e}")))?;
        Ok(out)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.scrub.load(std::sync::atomic::Ordering::Relaxed) {
            let zeros = vec![0u8; self.len];
            if let Err(e) =
                std::os::unix::fs::FileExt::write_all_at(&self.file.file, &zeros, self.at)
            {
                tracing::error!(error = %e, "cannot zero a rewritten log block on disk");
            }
        }
    }
}

type Job = (Arc<Vec<LogEntry>>, Arc<OnceLock<Vec<u8>>>);

/// The one background thread that compresses filled blocks.
fn compressor() -> &'static std::sync::mpsc::Sender<Job> {
    static TX: OnceLock<std::sync::mpsc::Sender<Job>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("preflight-log-gzip".into())
            .spawn(move || {
                for (entries, out) in rx {
                    let _ = out.set(encode(&entries));
                }
            })
            .expect("spawn the log compressor");
        tx
    })
}

fn events(
    entries: Result<Vec<LogEntry>, LogError>,
) -> Result<Vec<StoredEvent>, crate::store::StoreError> {
    Ok(entries?.into_iter().map(|e| e.e).collect())
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log snapshot: {0}")]
    Bad(String),
    /// A replica that started from an index image reads a block before its fetch.
    #[error("log block {0}..={1} is still being fetched from redis; try again shortly")]
    NotFetched(u64, u64),
}

impl From<LogError> for crate::store::StoreError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Bad(_) => crate::store::StoreError::Corrupt(e.to_string()),
            LogError::NotFetched(..) => crate::store::StoreError::Unavailable(e.to_string()),
        }
    }
}

fn encode(entries: &[LogEntry]) -> Vec<u8> {
    let mut text = Vec::with_capacity(entries.len() * 320);
    for e in entries {
        serde_json::to_writer(&mut text, e).expect("log entries serialize");
        text.push(b'\n');
    }
    let mut w = GzEncoder::new(Vec::with_capacity(text.len() / 4), Compression::fast());
    w.write_all(&text).expect("writing to memory");
    w.finish().expect("writing to memory")
}

/// A stored block's entries.
pub fn decode(gz: &[u8]) -> Result<Vec<LogEntry>, LogError> {
    let mut text = Vec::new();
    GzDecoder::new(gz)
        .read_to_end(&mut text)
        .map_err(|e| LogError::Bad(format!("corrupt block: {e}")))?;
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).map_err(|e| LogError::Bad(format!("bad entry: {e}"))))
        .collect()
}

/// One block of a snapshot: stored under `key` already, or to be uploaded from `gz`.
pub struct SnapBlock {
    pub first: u64,
    pub last: u64,
    pub key: Option<Arc<str>>,
    pub gz: Option<Vec<u8>>,
    /// Where it came from in the cache (index and version); None for the tail.
    at: Option<(usize, u32)>,
}

/// The whole change log, in seq order, compressed in blocks of BLOCK entries: in memory, or
/// with a block file, on disk but for the blocks still being compressed and the tail.
#[derive(Clone, Default)]
pub struct LogCache {
    blocks: Vec<Block>,
    tail: Vec<LogEntry>,
    file: Option<Arc<BlockFile>>,
}

impl LogCache {
    pub fn last_seq(&self) -> u64 {
        self.tail
            .last()
            .map(|e| e.seq())
            .or_else(|| self.blocks.last().map(|b| b.last))
            .unwrap_or(0)
    }

    /// Appends the next entry; the caller keeps seq order.
    pub fn push(&mut self, e: LogEntry) {
        self.tail.push(e);
        if self.tail.len() >= BLOCK {
            let entries = std::mem::take(&mut self.tail);
            self.blocks.push(Block {
                first: entries[0].seq(),
                last: entries[entries.len() - 1].seq(),
                body: Body::pending(entries),
                archived: None,
                version: 0,
            });
            self.settle();
        }
    }

    /// Moves the blocks the compressor has finished with (to the block file, if any).
    fn settle(&mut self) {
        let file = self.file.clone();
        for b in &mut self.blocks {
            b.body.settle(file.as_ref());
        }
    }

    /// Keeps the compressed blocks in `file` from now on, those held so far included.
    pub fn spill_to(&mut self, file: Arc<BlockFile>) {
        self.file = Some(file);
        self.settle();
    }

    /// Entries with seq > `after`, at most `limit`.
    pub fn entries_after(&self, after: u64, limit: usize) -> Result<Vec<LogEntry>, LogError> {
        let mut out = Vec::new();
        for b in self.blocks.iter().filter(|b| b.last > after) {
            out.extend(b.body.entries()?.into_iter().filter(|e| e.seq() > after));
            if out.len() >= limit {
                out.truncate(limit);
                return Ok(out);
            }
        }
        out.extend(self.tail.iter().filter(|e| e.seq() > after).cloned());
        out.truncate(limit);
        Ok(out)
    }

    /// The entries at `seqs` (sorted), each block decoded once; seqs not held are skipped.
    pub fn entries_at(&self, seqs: &[u64]) -> Result<Vec<LogEntry>, LogError> {
        let mut out = Vec::with_capacity(seqs.len());
        let mut rest = seqs;
        for b in &self.blocks {
            let n = rest.iter().take_while(|s| **s <= b.last).count();
            let (here, after) = rest.split_at(n);
            rest = after;
            if here.iter().any(|s| *s >= b.first) {
                out.extend(
                    b.body
                        .entries()?
                        .into_iter()
                        .filter(|e| here.binary_search(&e.seq()).is_ok()),
                );
            }
        }
        out.extend(
            self.tail
                .iter()
                .filter(|e| rest.binary_search(&e.seq()).is_ok())
                .cloned(),
        );
        Ok(out)
    }

    /// The events (without their riders) with seq > `after`, at most `limit`.
    pub fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, crate::store::StoreError> {
        events(self.entries_after(after, limit))
    }

    /// The events (without their riders) at `seqs` (sorted); seqs not held are skipped.
    pub fn events_at(&self, seqs: &[u64]) -> Result<Vec<StoredEvent>, crate::store::StoreError> {
        events(self.entries_at(seqs))
    }

    /// Runs `f` over every entry with seq > `after`, block by block (bounded memory).
    pub fn for_each_after(
        &self,
        after: u64,
        mut f: impl FnMut(LogEntry) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        for b in self.blocks.iter().filter(|b| b.last > after) {
            for e in b.body.entries()? {
                if e.seq() > after {
                    f(e)?;
                }
            }
        }
        for e in self.tail.iter().filter(|e| e.seq() > after) {
            f(e.clone())?;
        }
        Ok(())
    }

    /// Rewrites every entry in place (an erasure); blocks nothing touches are kept as they
    /// are, and a block not fetched yet keeps `f` to run when it arrives.
    pub fn rewrite(&mut self, f: Rewrite) -> Result<usize, LogError> {
        let mut n = 0;
        for b in &mut self.blocks {
            if let Body::Remote(r) = &b.body {
                let mut st = r.lock();
                if st.got.is_none() {
                    st.rewrites.push(f.clone());
                    drop(st);
                    b.archived = None;
                    b.version += 1;
                    continue;
                }
            }
            let mut entries = b.body.entries()?;
            let mut changed = false;
            for e in &mut entries {
                if f(e) {
                    changed = true;
                    n += 1;
                }
            }
            if changed {
                b.body.retire();
                b.body = Body::pending(entries);
                b.archived = None;
                b.version += 1;
            }
        }
        for e in &mut self.tail {
            if f(e) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The blocks still to be fetched, oldest first.
    pub fn unfetched(&self) -> Vec<Unfetched> {
        self.unfetched_where(|_| true)
    }

    /// The blocks still to be fetched that `entries_after(after, limit)` reads.
    pub fn unfetched_after(&self, after: u64, limit: usize) -> Vec<Unfetched> {
        let mut held = 0usize;
        self.unfetched_where(|b| {
            if b.last <= after || held >= limit {
                return false;
            }
            held += (b.last - b.first.max(after + 1) + 1) as usize;
            true
        })
    }

    /// The blocks still to be fetched that hold any of `seqs` (sorted).
    pub fn unfetched_for(&self, seqs: &[u64]) -> Vec<Unfetched> {
        self.unfetched_where(|b| {
            let i = seqs.partition_point(|s| *s < b.first);
            seqs.get(i).is_some_and(|s| *s <= b.last)
        })
    }

    fn unfetched_where(&self, mut keep: impl FnMut(&Block) -> bool) -> Vec<Unfetched> {
        self.blocks
            .iter()
            .filter(|b| keep(b))
            .filter_map(|b| match &b.body {
                Body::Remote(r) if r.lock().got.is_none() => Some(Unfetched {
                    remote: r.clone(),
                    file: self.file.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The blocks a snapshot at `last_seq()` is made of, in order: those stored under a
    /// key the store still holds (`stored`) by that key, the others and the tail with their
    /// bytes.
    pub fn snapshot_blocks(
        &self,
        stored: impl Fn(&str) -> bool,
    ) -> Result<Vec<SnapBlock>, LogError> {
        let mut out = Vec::with_capacity(self.blocks.len() + 1);
        for (i, b) in self.blocks.iter().enumerate() {
            let (key, gz) = match &b.archived {
                Some(k) if stored(k) => (Some(k.clone()), None),
                _ => (None, Some(b.body.gz()?.into_owned())),
            };
            out.push(SnapBlock {
                first: b.first,
                last: b.last,
                key,
                gz,
                at: Some((i, b.version)),
            });
        }
        if !self.tail.is_empty() {
            out.push(SnapBlock {
                first: self.tail[0].seq(),
                last: self.tail[self.tail.len() - 1].seq(),
                key: None,
                gz: Some(encode(&self.tail)),
                at: None,
            });
        }
        Ok(out)
    }

    /// After a snapshot holding `blocks` was switched in: the blocks of this cache it
    /// uploaded carry their keys from now on (those rewritten meanwhile do not).
    pub fn mark_archived(&mut self, blocks: &[SnapBlock]) {
        for s in blocks {
            if let (Some((i, version)), Some(key)) = (&s.at, &s.key)
                && let Some(b) = self.blocks.get_mut(*i)
                && (b.first, b.last) == (s.first, s.last)
                && b.version == *version
            {
                b.archived = Some(key.clone());
            }
        }
    }

    /// A cache of the blocks a snapshot holds: (first, last, key, gzip), in order; a block
    /// without its gzip is to be fetched later (`unfetched`).
    pub fn from_blocks(blocks: Vec<ListedBlock>) -> Result<LogCache, LogError> {
        let mut prev = 0u64;
        let mut out = Vec::with_capacity(blocks.len());
        for (first, last, key, gz) in blocks {
            if first != prev + 1 || last < first {
                return Err(LogError::Bad(format!(
                    "block {first}..={last} does not follow seq {prev}"
                )));
            }
            prev = last;
            let body = match gz {
                Some(gz) => Body::Gz(Arc::new(gz)),
                None => Body::Remote(Arc::new(Remote {
                    first,
                    last,
                    key: key.clone(),
                    state: Mutex::new(RemoteState::default()),
                })),
            };
            out.push(Block {
                first,
                last,
                body,
                archived: Some(key),
                version: 0,
            });
        }
        Ok(LogCache {
            blocks: out,
            tail: Vec::new(),
            file: None,
        })
    }

    /// The snapshot bytes: a header, then each block as first, last, length and its gzip.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let mut out = MAGIC.to_vec();
        let tail = (!self.tail.is_empty()).then(|| Block {
            first: self.tail[0].seq(),
            last: self.tail[self.tail.len() - 1].seq(),
            body: Body::Gz(Arc::new(encode(&self.tail))),
            archived: None,
            version: 0,
        });
        for b in self.blocks.iter().chain(tail.as_ref()) {
            let gz = b.body.gz().map_err(|e| e.to_string())?;
            out.extend_from_slice(&b.first.to_le_bytes());
            out.extend_from_slice(&b.last.to_le_bytes());
            out.extend_from_slice(&(gz.len() as u64).to_le_bytes());
            out.extend_from_slice(&gz);
        }
        Ok(out)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<LogCache, LogError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(LogError::Bad("not a preflight log snapshot".into()));
        }
        let mut at = MAGIC.len();
        let mut blocks = Vec::new();
        let mut prev = 0u64;
        let word = |at: usize| -> Result<u64, LogError> {
            bytes
                .get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| LogError::Bad(format!("truncated at byte {at}")))
        };
        while at < bytes.len() {
            let (first, last, len) = (word(at)?, word(at + 8)?, word(at + 16)? as usize);
            at += 24;
            let gz = bytes
                .get(at..at + len)
                .ok_or_else(|| LogError::Bad(format!("block {first}..={last} truncated")))?;
            if first != prev + 1 || last < first {
                return Err(LogError::Bad(format!(
                    "block {first}..={last} does not follow seq {prev}"
                )));
            }
            blocks.push(Block {
                first,
                last,
                body: Body::Gz(Arc::new(gz.to_vec())),
                archived: None,
                version: 0,
            });
            prev = last;
            at += len;
        }
        Ok(LogCache {
            blocks,
            tail: Vec::new(),
            file: None,
        })
    }

    /// Bytes held, for the memory gauge.
    pub fn heap_bytes(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| b.body.heap_bytes())
            .sum::<usize>()
            + self.tail.len() * 256
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContactKey, Event, UnlinkEvent};

    fn entry(seq: u64) -> LogEntry {
        LogEntry {
            e: StoredEvent {
                seq,
                recorded_at: 1,
                event: Event::IdentityUnlinked(UnlinkEvent {
                    contact: ContactKey::Phone(12025550000 + seq),
                }),
            },
            r: Vec::new(),
        }
    }

    #[test]
    fn round_trips_through_snapshot_bytes_across_blocks() {
        let mut c = LogCache::default();
        for s in 1..=(BLOCK as u64 * 2 + 7) {
            c.push(entry(s));
        }
        let back = LogCache::from_bytes(&c.to_bytes().unwrap()).unwrap();
        assert_eq!(back.last_seq(), c.last_seq());
        let all = back.entries_after(0, usize::MAX).unwrap();
        assert_eq!(all.len(), BLOCK * 2 + 7);
        assert!(all.windows(2).all(|w| w[1].seq() == w[0].seq() + 1));
        assert_eq!(
            back.entries_after(BLOCK as u64 + 3, 2).unwrap()[0].seq(),
            BLOCK as u64 + 4
        );
    }

    /// Settles every block the compressor has finished, until none is pending.
    fn settled(c: &mut LogCache) {
        for _ in 0..500 {
            c.settle();
            if c.blocks
                .iter()
                .all(|b| !matches!(b.body, Body::Pending { .. }))
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("blocks never compressed");
    }

    fn region(c: &LogCache, i: usize) -> Arc<Region> {
        match &c.blocks[i].body {
            Body::Disk(r) => r.clone(),
            _ => panic!("block {i} is not on disk"),
        }
    }

    #[test]
    fn a_log_on_disk_reads_back_whole_and_holds_no_block_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LogCache::default();
        for s in 1..=(BLOCK as u64 + 5) {
            c.push(entry(s));
        }
        // Blocks made before the file was attached move to it, and later ones follow.
        c.spill_to(BlockFile::create_in(dir.path()).unwrap());
        for s in (BLOCK as u64 + 6)..=(BLOCK as u64 * 3 + 7) {
            c.push(entry(s));
        }
        settled(&mut c);
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "the file has no name"
        );
        assert_eq!(c.blocks.len(), 3);
        assert!(c.heap_bytes() <= 7 * 256, "{}", c.heap_bytes());
        let all = c.entries_after(0, usize::MAX).unwrap();
        assert_eq!(
            all,
            (1..=(BLOCK as u64 * 3 + 7)).map(entry).collect::<Vec<_>>()
        );
        assert_eq!(
            c.entries_at(&[3, BLOCK as u64 * 2 + 1]).unwrap()[1].seq(),
            BLOCK as u64 * 2 + 1
        );
        let back = LogCache::from_bytes(&c.to_bytes().unwrap()).unwrap();
        assert_eq!(back.entries_after(0, usize::MAX).unwrap(), all);
    }

    #[test]
    fn a_rewritten_block_is_zeroed_on_disk_once_no_copy_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LogCache::default();
        c.spill_to(BlockFile::create_in(dir.path()).unwrap());
        for s in 1..=(BLOCK as u64 * 2) {
            c.push(entry(s));
        }
        settled(&mut c);
        let (file, at, len) = {
            let r = region(&c, 0);
            (r.file.clone(), r.at, r.len)
        };
        let raw = || {
            let mut b = vec![0u8; len];
            std::os::unix::fs::FileExt::read_exact_at(&file.file, &mut b, at).unwrap();
            b
        };
        let on_disk = raw();
        assert!(on_disk.iter().any(|b| *b != 0));
        let reader = c.clone();
        let n = c
            .rewrite(Arc::new(|e: &mut LogEntry| {
                let hit = e.seq() == 5;
                if hit {
                    e.e.event = Event::IdentityUnlinked(UnlinkEvent {
                        contact: ContactKey::Phone(1),
                    });
                }
                hit
            }))
            .unwrap();
        assert_eq!(n, 1);
        // A copy taken before the erasure still reads the old version...
        assert_eq!(reader.entries_at(&[5]).unwrap()[0], entry(5));
        assert_eq!(raw(), on_disk);
        // ...and once it is gone, the old bytes are zeros; the new version is elsewhere.
        drop(reader);
        assert!(raw().iter().all(|b| *b == 0));
        settled(&mut c);
        assert!(region(&c, 0).at >= at + len as u64);
        let e5 = c.entries_at(&[5]).unwrap();
        assert_eq!(
            e5[0].e.event,
            Event::IdentityUnlinked(UnlinkEvent {
                contact: ContactKey::Phone(1)
            })
        );
        // Block 1 was not touched: the same bytes, still live.
        assert!(region(&c, 1).read().unwrap().iter().any(|b| *b != 0));
    }

    #[test]
    fn a_snapshot_uploads_a_sealed_block_once_and_a_rewritten_one_again() {
        let mut c = LogCache::default();
        let n = BLOCK as u64 * 2 + 3;
        for s in 1..=n {
            c.push(entry(s));
        }
        let mut first = c.snapshot_blocks(|_| true).unwrap();
        assert_eq!(first.len(), 3, "two sealed blocks and the tail");
        assert!(first.iter().all(|b| b.key.is_none() && b.gz.is_some()));
        let stored: Vec<_> = first
            .iter()
            .map(|b| (b.first, b.last, b.gz.clone().unwrap()))
            .collect();
        for (i, b) in first.iter_mut().enumerate() {
            b.key = Some(format!("k{i}").into());
        }
        c.mark_archived(&first);
        // A cache whose blocks are cut elsewhere (another replica's) keeps its own keys.
        let ten: Vec<_> = (1..=10).map(entry).collect();
        let mut other =
            LogCache::from_blocks(vec![(1, 10, Arc::from("x"), Some(encode(&ten)))]).unwrap();
        other.mark_archived(&first);
        assert_eq!(
            other.snapshot_blocks(|_| true).unwrap()[0].key.as_deref(),
            Some("x")
        );
        c.push(entry(n + 1));
        // Stored blocks are named, not uploaded; one the store no longer holds is, and the
        // tail always is.
        let second = c.snapshot_blocks(|k| k != "k1").unwrap();
        assert_eq!(second.len(), 3);
        assert_eq!(second[0].key.as_deref(), Some("k0"));
        assert!(second[0].gz.is_none());
        assert!(second[1].key.is_none() && second[1].gz.is_some());
        assert!(second[2].key.is_none() && second[2].last == n + 1);
        // A rewritten block is uploaded again, whatever key it had.
        c.rewrite(Arc::new(|e: &mut LogEntry| {
            let hit = e.seq() == 5;
            if hit {
                e.e.recorded_at = 2;
            }
            hit
        }))
        .unwrap();
        let third = c.snapshot_blocks(|_| true).unwrap();
        assert!(third[0].key.is_none());
        assert_eq!(third[1].key.as_deref(), Some("k1"));
        // What was stored reads back as the log, and a directory with a hole is refused.
        let dir: Vec<_> = stored
            .iter()
            .enumerate()
            .map(|(i, (f, l, gz))| (*f, *l, Arc::<str>::from(format!("k{i}")), Some(gz.clone())))
            .collect();
        let back = LogCache::from_blocks(dir.clone()).unwrap();
        assert_eq!(
            back.entries_after(0, usize::MAX).unwrap(),
            (1..=n).map(entry).collect::<Vec<_>>()
        );
        let holed: Vec<_> = dir.into_iter().skip(1).collect();
        assert!(LogCache::from_blocks(holed).is_err());
    }

    #[test]
    fn a_block_left_in_redis_reads_as_not_fetched_until_filled_and_keeps_erasures_made_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let (older, newer): (Vec<_>, Vec<_>) = (
            (1..=10).map(entry).collect(),
            (11..=20).map(entry).collect(),
        );
        let mut c = LogCache::from_blocks(vec![
            (1, 10, Arc::from("k0"), None),
            (11, 20, Arc::from("k1"), Some(encode(&newer))),
        ])
        .unwrap();
        c.spill_to(BlockFile::create_in(dir.path()).unwrap());
        // What comes after the image reads; what is before it is not there yet, and says so
        // as a store that is unavailable for now, not as a corrupt one.
        assert_eq!(c.entries_after(10, usize::MAX).unwrap(), newer);
        let err = c.entries_after(0, usize::MAX).unwrap_err();
        assert!(matches!(err, LogError::NotFetched(1, 10)), "{err}");
        assert!(matches!(
            crate::store::StoreError::from(err),
            crate::store::StoreError::Unavailable(_)
        ));
        assert!(c.events_at(&[5]).is_err());
        let keys = |u: Vec<Unfetched>| u.iter().map(|u| u.key().to_string()).collect::<Vec<_>>();
        assert_eq!(keys(c.unfetched()), ["k0"]);
        assert_eq!(keys(c.unfetched_for(&[5, 15])), ["k0"]);
        assert!(c.unfetched_for(&[15]).is_empty());
        assert!(c.unfetched_after(10, 100).is_empty());
        assert_eq!(keys(c.unfetched_after(0, 3)), ["k0"]);
        // An erasure applied before the block arrives: kept, run over it when it does.
        let erase: Rewrite = Arc::new(|e: &mut LogEntry| {
            let hit = e.seq() == 5 || e.seq() == 15;
            if hit {
                e.e.recorded_at = 99;
            }
            hit
        });
        assert_eq!(c.rewrite(erase).unwrap(), 1);
        assert!(
            c.snapshot_blocks(|_| true).is_err(),
            "a snapshot needs the block's bytes"
        );
        let reader = c.clone();
        let holed: Vec<LogEntry> = older.iter().filter(|e| e.seq() != 7).cloned().collect();
        assert!(c.unfetched()[0].fill_entries(&holed).is_err());
        c.unfetched()[0].fill(encode(&older)).unwrap();
        assert!(c.unfetched().is_empty());
        for copy in [&c, &reader] {
            let got = copy.entries_at(&[4, 5, 15]).unwrap();
            assert_eq!(
                got.iter().map(|e| e.e.recorded_at).collect::<Vec<_>>(),
                [entry(4).e.recorded_at, 99, 99]
            );
        }
        // Filled into the block file, and uploaded again by the next snapshot (it changed).
        settled(&mut c);
        assert_eq!(c.heap_bytes(), 0);
        let snap = c.snapshot_blocks(|_| true).unwrap();
        assert!(snap[0].key.is_none() && snap[0].gz.is_some());
    }

    #[test]
    fn refuses_a_snapshot_with_a_hole() {
        let mut c = LogCache::default();
        for s in 1..=(BLOCK as u64) {
            c.push(entry(s));
        }
        let mut bytes = c.to_bytes().unwrap();
        bytes[MAGIC.len()] = 2; // first seq of the first block
        assert!(LogCache::from_bytes(&bytes).is_err());
    }
}
