//! Full consent records and DNC entries for reports, read from the store by the seqs the
//! index holds (the index keeps only what decisions read).
use super::Engine;
use crate::error::{Error, Result};
use crate::index::{Archived, ConsentView, ContactReport, DncView, Removal};
use crate::model::{ContactRef, Event, StoredEvent};

impl Engine {
    /// `key`'s own records and the index seq they were read at.
    pub(super) fn report(&self, key: &ContactRef<'_>) -> Result<(ContactReport, u64)> {
        let (seqs, at) = self.index.records(key);
        let mut report = ContactReport::default();
        for seq in seqs.consents {
            match self.stored(seq)? {
                Some(StoredEvent {
                    recorded_at,
                    event: Event::ConsentRecorded(record),
                    ..
                }) => report.consents.push(ConsentView {
                    seq,
                    recorded_at,
                    record,
                }),
                Some(other) => return Err(mismatch(seq, "a consent record", &other)),
                None => {}
            }
        }
        for (seq, archived) in seqs.dnc {
            if let Some(v) = self.dnc_record(seq, archived)? {
                report.dnc.push(v);
            }
        }
        Ok((report, at))
    }

    /// The DNC entry added at `seq` with its archive state, when the store holds it.
    pub(super) fn dnc_view(&self, seq: u64) -> Result<Option<DncView>> {
        self.dnc_record(seq, self.index.archived(seq))
    }

    fn dnc_record(&self, seq: u64, archived: Option<Archived>) -> Result<Option<DncView>> {
        let (added_at, entry) = match self.stored(seq)? {
            Some(StoredEvent {
                recorded_at,
                event: Event::DncAdded(entry),
                ..
            }) => (recorded_at, entry),
            Some(other) => return Err(mismatch(seq, "a DNC entry", &other)),
            None => return Ok(None),
        };
        let removal = match archived {
            Some(a) => match self.stored(a.removal_seq)? {
                Some(StoredEvent {
                    recorded_at,
                    event: Event::DncRemoved(r),
                    ..
                }) => Some(Removal {
                    seq: a.removal_seq,
                    at: recorded_at,
                    actor: r.actor,
                    reason: r.reason,
                    retain_until: r.retain_until,
                }),
                Some(other) => return Err(mismatch(a.removal_seq, "a DNC removal", &other)),
                None => return Err(missing(a.removal_seq)),
            },
            None => None,
        };
        Ok(Some(DncView {
            seq,
            added_at,
            entry,
            removal,
        }))
    }

    /// The event at `seq`; None when an erasure has just turned it into a tombstone (the
    /// index drops the fact a moment later). The index only holds seqs the store has.
    fn stored(&self, seq: u64) -> Result<Option<StoredEvent>> {
        match self.store.read_event(seq)? {
            Some(StoredEvent {
                event: Event::Redacted(_),
                ..
            }) => Ok(None),
            Some(ev) => Ok(Some(ev)),
            None => Err(missing(seq)),
        }
    }
}

fn missing(seq: u64) -> Error {
    Error::Internal(format!(
        "the index holds a record at seq {seq} that the store does not"
    ))
}

fn mismatch(seq: u64, wanted: &str, got: &StoredEvent) -> Error {
    Error::Internal(format!(
        "the index holds {wanted} at seq {seq}, the store a {} event",
        got.event.audit_kind()
    ))
}
