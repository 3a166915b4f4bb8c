//! Index images on disk: loading the newest valid one at start (then only the log after
//! it), the background builder that writes new ones, and removing them all when an erasure
//! makes them hold identifiers that may no longer be kept in clear.
use super::Projection;
use crate::audit::Tokenizer;
use crate::index::{Applied, Index};
use crate::model::{Event, EventKind, StoredEvent};
use crate::store::{ReadLog, Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

const PREFIX: &str = "index-";
const SUFFIX: &str = ".img";
const REPLAY_BATCH: usize = 50_000;

#[derive(Debug, Clone)]
pub struct ImageSettings {
    /// Log growth past the newest image that makes the builder write a new one.
    pub every_events: u64,
    pub check_every: Duration,
    /// Images kept, newest first.
    pub keep: usize,
}

impl From<&crate::config::ImagesConfig> for ImageSettings {
    fn from(c: &crate::config::ImagesConfig) -> ImageSettings {
        ImageSettings {
            every_events: c.every_events,
            check_every: Duration::from_millis(c.check_ms),
            keep: c.keep,
        }
    }
}

/// What /v1/admin/index and the gauges say about images.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ImageStatus {
    /// The newest image on disk: its seq and size.
    pub newest_seq: Option<u64>,
    pub newest_bytes: Option<u64>,
    /// The image this process started from (none: a full replay of the log).
    pub started_from_seq: Option<u64>,
    /// Events applied from the log at start, after the image.
    pub replayed_at_start: u64,
    pub start_ms: u64,
    pub written: u64,
    /// How long the last build took (loading the previous image, the log since, writing).
    pub last_build_ms: Option<u64>,
    /// Images refused for a bad checksum, a torn end or a seq the log does not reach.
    pub rejected: u64,
    pub last_error: Option<String>,
}

/// One image written.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImageWritten {
    pub seq: u64,
    pub bytes: u64,
    /// The whole build: the previous image, the log after it, the write.
    pub build_ms: u64,
    /// The write alone (file, fsync, rename).
    pub write_ms: u64,
}

enum Replay {
    Done {
        applied: u64,
    },
    /// An erasure: the events before it were rewritten, so an image from before it is stale.
    MetErasure,
}

/// Applies the log after the projection's seq, up to `until`; the seqs of privacy events
/// go to `privacy` (an image carries them, to rebuild the privacy state from).
fn replay(
    p: &Projection,
    read: ReadLog,
    until: u64,
    privacy: &mut Vec<u64>,
    stop_at_erasure: bool,
) -> Result<Replay, StoreError> {
    let mut applied = 0;
    while p.index.seq() < until {
        let events = read(p.index.seq(), REPLAY_BATCH)?;
        if events.is_empty() {
            break;
        }
        for ev in &events {
            if ev.seq > until {
                return Ok(Replay::Done { applied });
            }
            if stop_at_erasure && matches!(ev.event, Event::SubjectsErased(_)) {
                return Ok(Replay::MetErasure);
            }
            match p.apply_in_order(ev) {
                Applied::Gap { expected } => {
                    return Err(StoreError::Corrupt(format!(
                        "change log jumps from {expected} to {}",
                        ev.seq
                    )));
                }
                Applied::Applied => {
                    applied += 1;
                    if ev.event.kind() == EventKind::Privacy {
                        privacy.push(ev.seq);
                    }
                }
                Applied::AlreadyApplied => {}
            }
        }
    }
    Ok(Replay::Done { applied })
}

/// The index at `until`: the log after `base` (an image and the seqs of the privacy events
/// it names) replayed onto it, into an index of its own. Without a base, or when an erasure
/// came after it (the events before an erasure were rewritten, so an image from before one
/// is stale), the whole log is replayed. Returns the index and its privacy event seqs.
pub fn build_index(
    tokenizer: &Tokenizer,
    base: Option<(Index, Vec<u64>)>,
    read: ReadLog,
    until: u64,
) -> Result<(Arc<Index>, Vec<u64>), String> {
    let mut base = base;
    let (index, privacy) = loop {
        let from_image = base.is_some();
        let (index, mut privacy) = base.take().unwrap_or_else(|| (Index::new(), Vec::new()));
        let p = Projection::with_index(tokenizer.clone(), index, None);
        match replay(&p, read, until, &mut privacy, from_image).map_err(|e| e.to_string())? {
            Replay::Done { .. } => break (p.index, privacy),
            Replay::MetErasure => continue,
        }
    };
    if index.seq() < until {
        return Err(format!(
            "the change log ends at {} although it reported {until}",
            index.seq()
        ));
    }
    Ok((index, privacy))
}

/// An image of the index at `until`, encoded, built as `build_index` does on `base` (an
/// earlier image, encoded). A base that fails its checks is counted, logged and passed over
/// (the whole log is replayed instead).
pub fn encode_image(
    tokenizer: &Tokenizer,
    base: Option<&[u8]>,
    read: ReadLog,
    until: u64,
) -> Result<Vec<u8>, String> {
    let base = base.and_then(|mut bytes| {
        let len = bytes.len() as u64;
        match Index::read_image(&mut bytes, len) {
            Ok(loaded) if loaded.0.seq() <= until => Some(loaded),
            Ok(loaded) => {
                tracing::warn!(
                    image_seq = loaded.0.seq(),
                    until,
                    "the earlier index image is past the seq asked for; replaying the whole log"
                );
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "the earlier index image failed its checks; replaying the whole log");
                metrics::counter!("preflight_index_image_rejected_total").increment(1);
                None
            }
        }
    });
    let (index, privacy) = build_index(tokenizer, base, read, until)?;
    let mut out = Vec::new();
    index
        .write_image(&mut out, &privacy)
        .map_err(|e| format!("encoding the index image: {e}"))?;
    Ok(out)
}

/// A projection over an encoded image: the index as imaged, and the privacy state rebuilt
/// from the events the image names (`events_at` reads them from the log).
pub fn projection_from_image(
    tokenizer: &Tokenizer,
    mut bytes: &[u8],
    events_at: impl FnOnce(&[u64]) -> Result<Vec<StoredEvent>, StoreError>,
) -> Result<Projection, String> {
    let len = bytes.len() as u64;
    let (index, privacy_seqs) = Index::read_image(&mut bytes, len).map_err(|e| e.to_string())?;
    let seq = index.seq();
    let p = Projection::with_index(tokenizer.clone(), index, None);
    let events = events_at(&privacy_seqs).map_err(|e| e.to_string())?;
    if events.len() != privacy_seqs.len() {
        return Err(format!(
            "the image at seq {seq} names {} privacy events; the log holds {} of them",
            privacy_seqs.len(),
            events.len()
        ));
    }
    for ev in &events {
        p.privacy.apply(ev);
    }
    Ok(p)
}

pub struct Images {
    dir: PathBuf,
    settings: ImageSettings,
    /// Bumped by every erasure, under this lock, as the images go: a build that began
    /// before one is not installed.
    generation: Mutex<u64>,
    /// One build at a time (the builder's and one asked for by an operator).
    building: Mutex<()>,
    status: Mutex<ImageStatus>,
}

fn io(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

impl Images {
    /// `data_dir/images`, created owner-only.
    pub fn open(data_dir: &Path, settings: ImageSettings) -> Result<Arc<Images>, StoreError> {
        let dir = data_dir.join("images");
        crate::store::private::data_dir(&dir)?;
        let images = Images {
            dir,
            settings,
            generation: Mutex::new(0),
            building: Mutex::new(()),
            status: Mutex::new(ImageStatus::default()),
        };
        // What a build killed part-way left.
        for p in images.files(".tmp") {
            let _ = std::fs::remove_file(p);
        }
        images.refresh_newest();
        Ok(Arc::new(images))
    }

    pub fn status(&self) -> ImageStatus {
        self.lock_status().clone()
    }

    fn lock_status(&self) -> MutexGuard<'_, ImageStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_building(&self) -> MutexGuard<'_, ()> {
        self.building.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_generation(&self) -> MutexGuard<'_, u64> {
        self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{seq:020}{SUFFIX}"))
    }

    fn files(&self, ending: &str) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(ending))
            })
            .collect()
    }

    /// Images on disk, newest first.
    fn list(&self) -> Vec<(u64, PathBuf)> {
        let mut v: Vec<(u64, PathBuf)> = self
            .files(SUFFIX)
            .into_iter()
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?;
                let seq = name
                    .strip_prefix(PREFIX)?
                    .strip_suffix(SUFFIX)?
                    .parse()
                    .ok()?;
                Some((seq, p))
            })
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.0));
        v
    }

    fn refresh_newest(&self) {
        let newest = self.list().into_iter().next();
        let bytes = newest
            .as_ref()
            .and_then(|(_, p)| std::fs::metadata(p).ok())
            .map(|m| m.len());
        let mut s = self.lock_status();
        s.newest_seq = newest.map(|(q, _)| q);
        s.newest_bytes = bytes;
    }

    /// Moves a refused image aside (kept for inspection, never loaded again) and counts it.
    fn reject(&self, path: &Path, why: &str) {
        tracing::error!(image = %path.display(), error = %why, "index image refused; using an older one or the full log");
        metrics::counter!("preflight_index_image_rejected_total").increment(1);
        let aside = path.with_extension("rejected");
        if let Err(e) = std::fs::rename(path, &aside) {
            tracing::error!(image = %path.display(), error = %e, "cannot move the refused image aside");
        }
        let mut s = self.lock_status();
        s.rejected += 1;
        s.last_error = Some(format!("{}: {why}", path.display()));
        drop(s);
        self.refresh_newest();
    }

    /// The image at `path`, whole and checked, if it is one the log at `last_seq` can follow.
    fn load(&self, seq: u64, path: &Path, last_seq: u64) -> Option<(Index, Vec<u64>)> {
        let read = std::fs::File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|mut f| {
                let bytes = f.metadata().map_err(|e| e.to_string())?.len();
                Index::read_image(&mut f, bytes).map_err(|e| e.to_string())
            });
        match read {
            Err(e) => {
                self.reject(path, &e);
                None
            }
            Ok((index, _)) if index.seq() != seq => {
                let why = format!("its name says seq {seq}, its content seq {}", index.seq());
                self.reject(path, &why);
                None
            }
            Ok(_) if seq > last_seq => {
                let why = format!(
                    "it is at seq {seq}, past the change log's last seq {last_seq} (was the store restored from an older copy?)"
                );
                self.reject(path, &why);
                None
            }
            Ok(loaded) => Some(loaded),
        }
    }

    /// The projection at the log's end: from the newest valid image and the log after it,
    /// or from the whole log when no image can be used.
    pub fn restore(
        self: &Arc<Self>,
        tokenizer: &Tokenizer,
        read: ReadLog,
        last_seq: u64,
    ) -> Result<Projection, StoreError> {
        let t0 = Instant::now();
        for (seq, path) in self.list() {
            let Some((index, privacy_seqs)) = self.load(seq, &path, last_seq) else {
                continue;
            };
            let p = Projection::with_index(tokenizer.clone(), index, Some(self.clone()));
            for q in privacy_seqs {
                match read(q - 1, 1)?.into_iter().find(|e| e.seq == q) {
                    Some(ev) => p.privacy.apply(&ev),
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "event {q}, named by the index image at seq {seq}, is not in the change log"
                        )));
                    }
                }
            }
            match replay(&p, read, u64::MAX, &mut Vec::new(), true)? {
                Replay::Done { applied } => {
                    self.started(Some(seq), applied, t0);
                    return Ok(p);
                }
                Replay::MetErasure => {
                    tracing::warn!(
                        image_seq = seq,
                        "an erasure was committed after the newest index image; the images are removed and the whole log replayed"
                    );
                    self.invalidate();
                    break;
                }
            }
        }
        let p = Projection::with_index(tokenizer.clone(), Index::new(), Some(self.clone()));
        let Replay::Done { applied } = replay(&p, read, u64::MAX, &mut Vec::new(), false)? else {
            unreachable!("a replay that does not stop at erasures runs to the end");
        };
        self.started(None, applied, t0);
        Ok(p)
    }

    fn started(&self, from: Option<u64>, applied: u64, t0: Instant) {
        let ms = t0.elapsed().as_millis() as u64;
        tracing::info!(image_seq = from, replayed = applied, ms, "index restored");
        let mut s = self.lock_status();
        s.started_from_seq = from;
        s.replayed_at_start = applied;
        s.start_ms = ms;
    }

    /// Every image goes: they were written before an erasure and may name its subjects in
    /// clear. Builds under way are not installed.
    pub fn invalidate(&self) {
        let mut g = self.lock_generation();
        *g += 1;
        for (_, p) in self.list() {
            if let Err(e) = std::fs::remove_file(&p) {
                // The next start finds the erasure after this image and replays in full.
                tracing::error!(image = %p.display(), error = %e, "cannot remove an index image after an erasure");
            }
        }
        drop(g);
        self.refresh_newest();
    }

    /// Writes `index` as the newest image, unless an erasure came since `generation`:
    /// to a temporary file, flushed, then renamed into place, so a crash leaves either the
    /// old set or the new image whole. Returns the bytes written, or None when discarded.
    fn install(
        &self,
        index: &Index,
        privacy: &[u64],
        generation: u64,
    ) -> Result<Option<u64>, String> {
        let seq = index.seq();
        let path = self.path_of(seq);
        let tmp = path.with_extension("img.tmp");
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&tmp).map_err(|e| io(&tmp, e))?;
        let written = index
            .write_image(&mut f, privacy)
            .and_then(|n| f.sync_all().map(|()| n));
        drop(f);
        let bytes = match written {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(io(&tmp, e));
            }
        };
        let g = self.lock_generation();
        if *g != generation {
            drop(g);
            let _ = std::fs::remove_file(&tmp);
            return Ok(None);
        }
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        // The rename is durable only once the directory is.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&self.dir, e))?;
        for (_, old) in self.list().into_iter().skip(self.settings.keep) {
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!(image = %old.display(), error = %e, "cannot remove an old index image");
            }
        }
        drop(g);
        self.refresh_newest();
        Ok(Some(bytes))
    }

    /// A new image at `until`: the newest valid image plus the log after it, replayed into
    /// an index of the builder's own (the live one keeps changing, so cannot be written
    /// at one seq without stopping its writer). None when an erasure came meanwhile.
    pub fn build(
        &self,
        store: &dyn Store,
        tokenizer: &Tokenizer,
        until: u64,
    ) -> Result<Option<ImageWritten>, String> {
        self.build_from(
            &|after, limit| store.read_events(after, limit),
            tokenizer,
            until,
        )
    }

    /// `build`, reading the log through `read`: for a tool on a data directory no service
    /// has open (the scale bench writes its image before it opens one, so the builder's
    /// index and the service's are never in memory together).
    pub fn build_from(
        &self,
        read: ReadLog,
        tokenizer: &Tokenizer,
        until: u64,
    ) -> Result<Option<ImageWritten>, String> {
        let _one = self.lock_building();
        let generation = *self.lock_generation();
        let t0 = Instant::now();
        let base = self
            .list()
            .into_iter()
            .find_map(|(seq, path)| self.load(seq, &path, until));
        let (index, privacy) = build_index(tokenizer, base, read, until)?;
        let tw = Instant::now();
        let Some(bytes) = self.install(&index, &privacy, generation)? else {
            tracing::info!(
                seq = until,
                "an erasure came during the index image build; discarded"
            );
            return Ok(None);
        };
        let written = ImageWritten {
            seq: until,
            bytes,
            build_ms: t0.elapsed().as_millis() as u64,
            write_ms: tw.elapsed().as_millis() as u64,
        };
        tracing::info!(
            seq = until,
            bytes,
            build_ms = written.build_ms,
            write_ms = written.write_ms,
            identifiers = index.len(),
            "index image written"
        );
        metrics::gauge!("preflight_index_image_build_seconds").set(written.build_ms as f64 / 1e3);
        let mut s = self.lock_status();
        s.written += 1;
        s.last_build_ms = Some(written.build_ms);
        Ok(Some(written))
    }

    /// Whether the log has grown enough past the newest image to write another.
    fn due(&self, last_seq: u64) -> bool {
        let newest = self.lock_status().newest_seq.unwrap_or(0);
        last_seq >= newest.saturating_add(self.settings.every_events)
    }

    /// Starts the builder thread. It holds the store only while it builds, and ends once
    /// the store is gone.
    pub fn spawn_builder(
        self: &Arc<Self>,
        store: Weak<dyn Store>,
        tokenizer: Tokenizer,
    ) -> std::io::Result<()> {
        let images = self.clone();
        std::thread::Builder::new()
            .name("preflight-images".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(images.settings.check_every);
                    let Some(store) = store.upgrade() else {
                        return;
                    };
                    let last = match store.last_seq() {
                        Ok(q) => q,
                        Err(_) => continue,
                    };
                    if !images.due(last) {
                        continue;
                    }
                    if let Err(e) = images.build(&*store, &tokenizer, last) {
                        images.failed(e);
                    }
                }
            })
            .map(|_| ())
    }

    pub fn failed(&self, e: String) {
        tracing::error!(error = %e, "index image build failed; the next one retries");
        metrics::counter!("preflight_index_image_failures_total").increment(1);
        self.lock_status().last_error = Some(e);
    }
}
