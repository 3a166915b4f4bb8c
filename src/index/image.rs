//! The index as a file: every map at one seq, in a binary form that loads without touching
//! the change log, closed by a SHA-256 of everything before it so that a torn or corrupted
//! image is refused as a whole (never a partial index).
use super::names::{NAMES, NameId};
use super::packed::{ImageError, Slot};
use super::{Archived, FastMap, HeapBytes, Index, Mirror};
use crate::model::{ContactKey, Millis, Token};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Phone entries handed from the decoding thread to the inserting one at a time.
/// Entries decoded before they are handed to the inserting thread.
const BATCH: usize = 16_384;

/// Work for the image loader's inserting thread.
type Job = Box<dyn FnOnce(&mut Index) + Send>;

/// Reads one section: its entry count (at most `most`), for which the inserting thread
/// makes room with `size`, then its entries with `decode`, which that thread puts in with
/// `insert` a batch at a time.
fn section<T: Send + 'static>(
    r: &mut Reader<'_>,
    send: &dyn Fn(Job) -> Result<(), ImageError>,
    most: usize,
    size: fn(&mut Index, usize),
    mut decode: impl FnMut(&mut Reader<'_>) -> Result<T, ImageError>,
    insert: fn(&mut Index, T),
) -> Result<(), ImageError> {
    let n = (r.u64()? as usize).min(most);
    send(Box::new(move |i| size(i, n)))?;
    let mut batch = Vec::with_capacity(BATCH);
    while r.more()? {
        batch.push(decode(r)?);
        if batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            send(Box::new(move |i| {
                full.into_iter().for_each(|x| insert(i, x))
            }))?;
        }
    }
    if !batch.is_empty() {
        send(Box::new(move |i| {
            batch.into_iter().for_each(|x| insert(i, x))
        }))?;
    }
    Ok(())
}

/// A map with room for `n` entries.
fn room<K: std::hash::Hash + Eq, V>(n: usize) -> FastMap<K, V> {
    FastMap::with_capacity_and_hasher(n, Default::default())
}

/// 002: each section starts with its entry count, so a load sizes its maps once.
/// 003: contact attempts, after the mirrors.
const MAGIC: &[u8; 8] = b"PFIDX003";
/// Entries are flushed to the writer in pieces of about this size.
const PIECE: usize = 1 << 20;

pub(crate) fn write_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            write_str(out, s);
        }
        None => out.push(0),
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_key(out: &mut Vec<u8>, k: &ContactKey) {
    match k {
        ContactKey::Phone(p) => {
            out.push(0);
            out.extend_from_slice(&p.to_le_bytes());
        }
        ContactKey::Email(e) => {
            out.push(1);
            write_str(out, e);
        }
        ContactKey::External(x) => {
            out.push(2);
            write_str(out, x);
        }
        ContactKey::Erased(t) => {
            out.push(3);
            out.extend_from_slice(t);
        }
    }
}

/// Writes through a hash, in pieces.
struct Sink<'w, W: Write> {
    w: &'w mut W,
    buf: Vec<u8>,
    hash: Sha256,
    written: u64,
}

impl<W: Write> Sink<'_, W> {
    fn maybe_flush(&mut self) -> std::io::Result<()> {
        if self.buf.len() >= PIECE {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.hash.update(&self.buf);
        self.w.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// The entry count (u64), then each entry as `1` and the entry; a section ends with `0`.
    /// The count only sizes the reader's map: the markers say where the section ends.
    fn section<K, V>(
        &mut self,
        map: &FastMap<K, V>,
        mut entry: impl FnMut(&mut Vec<u8>, &K, &V),
    ) -> std::io::Result<()>
    where
        K: std::hash::Hash + Eq,
    {
        self.buf
            .extend_from_slice(&(map.len() as u64).to_le_bytes());
        for e in map.iter() {
            self.buf.push(1);
            entry(&mut self.buf, e.key(), e.value());
            self.maybe_flush()?;
        }
        self.buf.push(0);
        Ok(())
    }
}

/// Reads through the same hash, from a buffer refilled as it drains.
pub(crate) struct Reader<'r> {
    r: &'r mut dyn Read,
    buf: Vec<u8>,
    at: usize,
    hash: Sha256,
}

impl<'r> Reader<'r> {
    fn new(r: &'r mut dyn Read) -> Reader<'r> {
        Reader {
            r,
            buf: Vec::new(),
            at: 0,
            hash: Sha256::new(),
        }
    }

    /// Makes `n` bytes available at `at`; the trailer is read around this (see `finish`).
    fn fill(&mut self, n: usize) -> Result<(), ImageError> {
        if self.buf.len() - self.at >= n {
            return Ok(());
        }
        self.hash.update(&self.buf[..self.at]);
        self.buf.drain(..self.at);
        self.at = 0;
        let want = n.max(PIECE);
        let mut chunk = vec![0u8; want];
        while self.buf.len() < n {
            let got = self.r.read(&mut chunk)?;
            if got == 0 {
                return Err(ImageError::Format(
                    "the image ends early (torn write)".into(),
                ));
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&[u8], ImageError> {
        self.fill(n)?;
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ImageError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ImageError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ImageError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ImageError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn token(&mut self) -> Result<Token, ImageError> {
        Ok(self.take(16)?.try_into().expect("16 bytes"))
    }

    fn str(&mut self) -> Result<Box<str>, ImageError> {
        let n = self.u32()? as usize;
        if n > 1 << 20 {
            return Err(ImageError::Format(format!("a {n}-byte string")));
        }
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(Into::into)
            .map_err(|_| ImageError::Format("a string that is not UTF-8".into()))
    }

    pub(crate) fn opt_str(&mut self) -> Result<Option<Box<str>>, ImageError> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.str().map(Some),
        }
    }

    fn key(&mut self) -> Result<ContactKey, ImageError> {
        Ok(match self.u8()? {
            0 => ContactKey::Phone(self.u64()?),
            1 => ContactKey::Email(self.str()?),
            2 => ContactKey::External(self.str()?),
            3 => ContactKey::Erased(self.token()?),
            t => return Err(ImageError::Format(format!("unknown identifier tag {t}"))),
        })
    }

    /// A count of items that each take at least one byte; bounded so that a corrupted
    /// count fails here rather than in an allocation.
    fn count(&mut self) -> Result<usize, ImageError> {
        let n = self.u32()? as usize;
        if n > 1 << 24 {
            return Err(ImageError::Format(format!("a list of {n} items")));
        }
        Ok(n)
    }

    /// Whether another entry of the current section follows.
    fn more(&mut self) -> Result<bool, ImageError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(ImageError::Format(format!("bad entry marker {t}"))),
        }
    }

    /// Checks the trailer against the hash of everything read; nothing may follow it.
    fn finish(mut self) -> Result<(), ImageError> {
        self.hash.update(&self.buf[..self.at]);
        let mut rest = self.buf[self.at..].to_vec();
        self.r.read_to_end(&mut rest)?;
        if rest.len() != 32 {
            return Err(ImageError::Format(format!(
                "{} bytes where the 32-byte checksum belongs",
                rest.len()
            )));
        }
        if self.hash.finalize().as_slice() != rest.as_slice() {
            return Err(ImageError::Format("checksum mismatch".into()));
        }
        Ok(())
    }
}

impl Index {
    /// Writes this index as an image; `privacy_seqs` (the privacy events applied up to its
    /// seq) go with it, so that a start from the image can rebuild the privacy state from a
    /// few reads. The caller makes sure no event is applied meanwhile (an image is written
    /// from an index of its own). Returns the bytes written.
    pub fn write_image(&self, w: &mut impl Write, privacy_seqs: &[u64]) -> std::io::Result<u64> {
        let mut s = Sink {
            w,
            buf: Vec::with_capacity(PIECE + 4096),
            hash: Sha256::new(),
            written: 0,
        };
        s.buf.extend_from_slice(MAGIC);
        s.buf.extend_from_slice(&self.seq().to_le_bytes());
        s.buf.push(self.any_erased.load(Ordering::Acquire) as u8);
        for (id, name) in NAMES.all() {
            s.buf.push(1);
            s.buf.extend_from_slice(&id.to_le_bytes());
            write_str(&mut s.buf, name);
        }
        s.buf.push(0);
        s.section(&self.phones, |b, k, v| {
            b.extend_from_slice(&k.to_le_bytes());
            v.write(b);
        })?;
        for map in [&self.emails, &self.externals] {
            s.section(map, |b, k, v| {
                write_str(b, k);
                v.write(b);
            })?;
        }
        s.section(&self.erased, |b, k, v| {
            b.extend_from_slice(k);
            v.write(b);
        })?;
        s.section(&self.erased_groups, |b, k, v| {
            b.extend_from_slice(k);
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            for t in v.iter() {
                b.extend_from_slice(t);
            }
        })?;
        s.section(&self.members, |b, k, v| {
            write_str(b, k);
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            for m in v {
                write_key(b, m);
            }
        })?;
        s.section(&self.archived, |b, k, v| {
            b.extend_from_slice(&k.to_le_bytes());
            b.extend_from_slice(&v.removal_seq.to_le_bytes());
            b.extend_from_slice(&v.retain_until.to_le_bytes());
            write_key(b, &v.owner);
        })?;
        s.section(&self.mirrors, |b, k, v| {
            b.extend_from_slice(&k.to_le_bytes());
            write_str(b, &v.person);
            write_key(b, &v.owner);
        })?;
        s.section(self.attempts.map(), |b, k, v| {
            b.extend_from_slice(&k.to_le_bytes());
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            for a in v {
                b.extend_from_slice(&a.to_bytes());
            }
        })?;
        s.buf
            .extend_from_slice(&(privacy_seqs.len() as u32).to_le_bytes());
        for q in privacy_seqs {
            s.buf.extend_from_slice(&q.to_le_bytes());
        }
        s.flush()?;
        let digest = s.hash.clone().finalize();
        s.w.write_all(&digest)?;
        Ok(s.written + 32)
    }

    /// An index from an image `write_image` wrote, with its privacy seqs; an image that is
    /// torn, corrupted or of another format is an error and nothing of it is kept.
    /// `bytes` is the image's length: no section can hold more entries than that allows,
    /// whatever its count says before the checksum has been read.
    pub fn read_image(r: &mut dyn Read, bytes: u64) -> Result<(Index, Vec<u64>), ImageError> {
        let mut r = Reader::new(r);
        if r.take(8)? != MAGIC {
            return Err(ImageError::Format(
                "not a preflight index image of this build's format".into(),
            ));
        }
        let mut idx = Index::new();
        // Smallest entry: its marker and an 8-byte key.
        let most = (bytes / 9) as usize;
        let seq = r.u64()?;
        let any_erased = r.u8()? != 0;
        // The writer's name ids to this process's.
        let mut names: Vec<NameId> = vec![0];
        while r.more()? {
            let id = r.u32()? as usize;
            let name = r.str()?;
            if names.len() <= id {
                names.resize(id + 1, 0);
            }
            names[id] = NAMES.intern(&name);
        }
        let mut heap: usize = 0;
        // One thread decodes while another inserts into the maps, section after section,
        // so a start takes the longer of the two rather than their sum.
        std::thread::scope(|scope| -> Result<(), ImageError> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(4);
            let target = &mut idx;
            let inserter = scope.spawn(move || {
                for job in rx {
                    job(target);
                }
            });
            let send = |job: Job| {
                tx.send(job).map_err(|_| {
                    ImageError::Format("the image loader's insert thread stopped".into())
                })
            };
            let decoded = (|| -> Result<(), ImageError> {
                section(
                    &mut r,
                    &send,
                    most,
                    |i, n| i.phones = room(n),
                    |r| {
                        let k = r.u64()?;
                        let v = Slot::read(r, &names)?;
                        heap += v.heap_bytes();
                        Ok((k, v))
                    },
                    |i, (k, v)| {
                        i.phones.insert(k, v);
                    },
                )?;
                let mut named = |r: &mut Reader<'_>| {
                    let k = r.str()?;
                    let v = Slot::read(r, &names)?;
                    heap += v.heap_bytes() + k.heap_bytes();
                    Ok((k, v))
                };
                section(
                    &mut r,
                    &send,
                    most,
                    |i, n| i.emails = room(n),
                    &mut named,
                    |i, (k, v)| {
                        i.emails.insert(k, v);
                    },
                )?;
                section(
                    &mut r,
                    &send,
                    most,
                    |i, n| i.externals = room(n),
                    &mut named,
                    |i, (k, v)| {
                        i.externals.insert(k, v);
                    },
                )?;
                section(
                    &mut r,
                    &send,
                    most,
                    |i, n| i.erased = room(n),
                    |r| {
                        let k = r.token()?;
                        let v = Slot::read(r, &names)?;
                        heap += v.heap_bytes();
                        Ok((k, v))
                    },
                    |i, (k, v)| {
                        i.erased.insert(k, v);
                    },
                )?;
                section(
                    &mut r,
                    &send,
                    most,
                    |i, n| i.erased_groups = room(n),
                    |r| {
                        let k = r.token()?;
                        let n = r.count()?;
                        let g = (0..n).map(|_| r.token()).collect::<Result<Vec<_>, _>>()?;
                        Ok((k, Arc::<[Token]>::from(g)))
                    },
                    |i, (k, g)| {
                        i.erased_groups.insert(k, g);
                    },
                )?;
                section(
                    &mut r,
                    &send,
                    most,
                    |i, n| i.members = room(n),
                    |r| {
                        let k = r.str()?;
                        let n = r.count()?;
                        let m = (0..n).map(|_| r.key()).collect::<Result<Vec<_>, _>>()?;
                        heap += k.heap_bytes() + m.iter().map(super::member_bytes).sum::<usize>();
                        Ok((k, m))
                    },
                    |i, (k, m)| {
                        i.members.insert(k, m);
                    },
                )?;
                section(
                    &mut r,
                    &send,
                    most,
                    |i, n| i.archived = room(n),
                    |r| {
                        let k = r.u64()?;
                        let removal_seq = r.u64()?;
                        let retain_until = r.u64()? as Millis;
                        let owner = r.key()?;
                        Ok((
                            k,
                            Archived {
                                removal_seq,
                                retain_until,
                                owner,
                            },
                        ))
                    },
                    |i, (k, a)| {
                        i.archived.insert(k, a);
                    },
                )?;
                section(
                    &mut r,
                    &send,
                    most,
                    |i, n| i.mirrors = room(n),
                    |r| {
                        let k = r.u64()?;
                        let person = r.str()?;
                        let owner = r.key()?;
                        Ok((k, Mirror { person, owner }))
                    },
                    |i, (k, m)| {
                        i.mirrors.insert(k, m);
                    },
                )?;
                section(
                    &mut r,
                    &send,
                    most,
                    |i, n| i.attempts.reserve(n),
                    |r| {
                        let k = r.u64()?;
                        let n = r.count()?;
                        let mut list = super::attempts::AttemptList::with_capacity(n.min(most));
                        for _ in 0..n {
                            let b: &[u8; 16] = r.take(16)?.try_into().expect("16 bytes");
                            list.push(super::Attempt::from_bytes(b).ok_or_else(|| {
                                ImageError::Format("an attempt of an unknown kind".into())
                            })?);
                        }
                        Ok((k, list))
                    },
                    |i, (k, list)| i.attempts.load(k, list),
                )
            })();
            drop(tx);
            if inserter.join().is_err() {
                return Err(ImageError::Format(
                    "the image loader's insert thread failed".into(),
                ));
            }
            decoded
        })?;
        let n = r.count()?;
        let privacy = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
        r.finish()?;
        idx.seq.store(seq, Ordering::Release);
        idx.any_erased.store(any_erased, Ordering::Release);
        idx.heap.store(heap as i64, Ordering::Relaxed);
        Ok((idx, privacy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ChannelSet, ConsentEvent, ConsentStatus, DncAddEvent, DncRemoveEvent, DncType, Event,
        InboundAction, InboundEvent, LinkEvent, PurposeSet, StoredEvent,
    };

    fn sample() -> Index {
        let idx = Index::new();
        let phone = ContactKey::Phone(12025550100);
        let events = vec![
            Event::IdentityLinked(LinkEvent {
                contact: phone.clone(),
                person: "crm-1".into(),
            }),
            Event::ConsentRecorded(ConsentEvent {
                contact: phone.clone(),
                status: ConsentStatus::Withdrawn,
                channels: ChannelSet::all(),
                purposes: PurposeSet::all(),
                category: Some("newsletter".into()),
                source: "s".into(),
                proof: "p".into(),
                effective_at: 5,
                expires_at: Some(9_000),
                campaign_id: String::new(),
            }),
            Event::DncAdded(DncAddEvent {
                contact: ContactKey::Email("a@example.com".into()),
                dnc_type: DncType::Corporate,
                list: Some("vip".into()),
                expires_at: None,
                source: String::new(),
                note: String::new(),
                actor: String::new(),
            }),
            Event::DncRemoved(DncRemoveEvent {
                entry_seq: 3,
                contact: Some(ContactKey::Email("a@example.com".into())),
                actor: "ops".into(),
                reason: "x".into(),
                retain_until: 50_000,
            }),
            Event::InboundReceived(InboundEvent {
                contact: ContactKey::Phone(12025550199),
                channel: crate::model::Channel::Whatsapp,
                received_at: 77,
                action: InboundAction::None,
                keyword: String::new(),
                message_id: String::new(),
                to: String::new(),
            }),
        ];
        for (i, event) in events.into_iter().enumerate() {
            let ev = StoredEvent {
                seq: i as u64 + 1,
                recorded_at: 1_000,
                event,
            };
            assert_eq!(idx.apply(&ev), super::super::Applied::Applied);
        }
        idx
    }

    #[test]
    fn an_image_loads_as_the_index_it_was() {
        let idx = sample();
        let mut bytes = Vec::new();
        let n = idx.write_image(&mut bytes, &[4, 9]).unwrap();
        assert_eq!(n, bytes.len() as u64);
        let (back, privacy) = Index::read_image(&mut bytes.as_slice(), bytes.len() as u64).unwrap();
        assert_eq!(privacy, vec![4, 9]);
        assert_eq!(back.seq(), 5);
        assert_eq!(back.digest(), idx.digest());
        // Table capacities depend on how the maps grew; what the entries point to does not.
        assert_eq!(
            back.heap.load(Ordering::Relaxed),
            idx.heap.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn torn_or_corrupted_images_are_refused() {
        let idx = sample();
        let mut bytes = Vec::new();
        idx.write_image(&mut bytes, &[]).unwrap();
        for cut in [0, 8, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                Index::read_image(&mut &bytes[..cut], cut as u64).is_err(),
                "cut at {cut}"
            );
        }
        for at in [9, bytes.len() / 2, bytes.len() - 40, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(
                Index::read_image(&mut bad.as_slice(), bad.len() as u64).is_err(),
                "flip at {at}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Index::read_image(&mut longer.as_slice(), longer.len() as u64).is_err());
    }
}
