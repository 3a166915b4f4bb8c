//! The in-memory index that reads see: per-identifier facts in sharded maps, applied from the change log.
mod facts;

pub use facts::{ConsentFact, ConsentView, ContactFacts, ContactReport, DncFact, DncView, Removal};

use facts::Detail;

use crate::model::{ContactKey, ContactRef, Event, Millis, StoredEvent};
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

type FastMap<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

static NO_FACTS: ContactFacts = ContactFacts::new();

/// What `apply` did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// At or below the index's seq: already applied, ignored (replay is idempotent).
    AlreadyApplied,
    /// Above seq + 1: an event is missing; nothing was changed.
    Gap {
        expected: u64,
    },
}

pub struct Index {
    phones: FastMap<u64, ContactFacts>,
    emails: FastMap<Box<str>, ContactFacts>,
    externals: FastMap<Box<str>, ContactFacts>,
    /// Full records by the seq that created them (reports, removals).
    details: FastMap<u64, Detail>,
    seq: AtomicU64,
    /// When the index last heard from its store (an event or a heartbeat).
    heard_at: AtomicI64,
    /// True when this process is the store's only writer, so the index cannot lag it.
    authoritative: AtomicBool,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            phones: FastMap::default(),
            emails: FastMap::default(),
            externals: FastMap::default(),
            details: FastMap::default(),
            seq: AtomicU64::new(0),
            heard_at: AtomicI64::new(0),
            authoritative: AtomicBool::new(false),
        }
    }
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// The seq of the last event applied.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    pub fn set_authoritative(&self, yes: bool) {
        self.authoritative.store(yes, Ordering::Release);
    }

    pub fn heard_from_store(&self, now: Millis) {
        self.heard_at.fetch_max(now, Ordering::AcqRel);
    }

    /// How long since the index last heard from its store; 0 for the store's own writer.
    pub fn age_ms(&self, now: Millis) -> Millis {
        if self.authoritative.load(Ordering::Acquire) {
            return 0;
        }
        (now - self.heard_at.load(Ordering::Acquire)).max(0)
    }

    /// Runs `f` over the facts of `key` (empty when none) and the seq they were read at.
    /// The shard read lock is held only while `f` runs; `f` must not touch the index.
    pub fn with_facts<R>(
        &self,
        key: &ContactRef<'_>,
        f: impl FnOnce(&[&ContactFacts], u64) -> R,
    ) -> R {
        let seq = self.seq();
        let guard = match key {
            ContactRef::Phone(p) => self.phones.get(p).map(Guard::Phone),
            ContactRef::Email(e) => self.emails.get(e.as_ref()).map(Guard::Name),
            ContactRef::External(x) => self.externals.get(*x).map(Guard::Name),
        };
        match &guard {
            Some(g) => f(&[g.facts()], seq),
            None => f(&[&NO_FACTS], seq),
        }
    }

    /// The full records of `key` and the seq they were read at, for reports (not the hot path).
    pub fn report(&self, key: &ContactRef<'_>) -> (ContactReport, u64) {
        let (consent_seqs, dnc_seqs, seq) = self.with_facts(key, |f, seq| {
            let c: Vec<u64> = f[0].consents.iter().map(|c| c.seq).collect();
            let d: Vec<u64> = f[0].dnc.iter().map(|d| d.seq).collect();
            (c, d, seq)
        });
        let mut report = ContactReport::default();
        for s in consent_seqs {
            if let Some(Detail::Consent(c)) = self.details.get(&s).map(|d| d.clone()) {
                report.consents.push(c);
            }
        }
        for s in dnc_seqs {
            if let Some(Detail::Dnc(d)) = self.details.get(&s).map(|d| d.clone()) {
                report.dnc.push(d);
            }
        }
        (report, seq)
    }

    pub fn len(&self) -> usize {
        self.phones.len() + self.emails.len() + self.externals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies one change-log event. Events must come in seq order; callers detect gaps
    /// from the result and fetch what is missing.
    pub fn apply(&self, ev: &StoredEvent) -> Applied {
        let current = self.seq();
        if ev.seq <= current {
            return Applied::AlreadyApplied;
        }
        if ev.seq != current + 1 {
            return Applied::Gap {
                expected: current + 1,
            };
        }
        match &ev.event {
            Event::ConsentRecorded(c) => {
                self.details.insert(
                    ev.seq,
                    Detail::Consent(ConsentView {
                        seq: ev.seq,
                        recorded_at: ev.recorded_at,
                        record: c.clone(),
                    }),
                );
                self.update(&c.contact, |f| f.consents.push(ConsentFact::of(ev.seq, c)));
            }
            Event::DncAdded(d) => {
                self.details.insert(
                    ev.seq,
                    Detail::Dnc(DncView {
                        seq: ev.seq,
                        added_at: ev.recorded_at,
                        entry: d.clone(),
                        removal: None,
                    }),
                );
                self.update(&d.contact, |f| f.dnc.push(DncFact::of(ev.seq, d)));
            }
            Event::DncRemoved(r) => {
                // Take what is needed out of one map before locking another: never hold
                // two guards at once.
                let contact = match self.details.get_mut(&r.entry_seq).as_deref_mut() {
                    Some(Detail::Dnc(view)) => {
                        view.removal = Some(Removal {
                            seq: ev.seq,
                            at: ev.recorded_at,
                            actor: r.actor.clone(),
                            reason: r.reason.clone(),
                            retain_until: r.retain_until,
                        });
                        Some(view.entry.contact.clone())
                    }
                    _ => None,
                };
                if let Some(contact) = contact {
                    self.update(&contact, |f| {
                        if let Some(e) = f.dnc.iter_mut().find(|e| e.seq == r.entry_seq) {
                            e.removed = true;
                        }
                    });
                }
            }
        }
        self.seq.store(ev.seq, Ordering::Release);
        self.heard_from_store(ev.recorded_at);
        Applied::Applied
    }

    fn update(&self, key: &ContactKey, f: impl FnOnce(&mut ContactFacts)) {
        match key {
            ContactKey::Phone(p) => f(&mut self.phones.entry(*p).or_default()),
            ContactKey::Email(e) => f(&mut self.emails.entry(e.clone()).or_default()),
            ContactKey::External(x) => f(&mut self.externals.entry(x.clone()).or_default()),
        }
    }

    /// Drops archived DNC entries whose retention date has passed.
    pub fn purge_archived(&self, now: Millis) -> usize {
        let expired: Vec<(u64, ContactKey)> = self
            .details
            .iter()
            .filter_map(|d| match d.value() {
                Detail::Dnc(v) if v.removal.as_ref().is_some_and(|r| r.retain_until <= now) => {
                    Some((v.seq, v.entry.contact.clone()))
                }
                _ => None,
            })
            .collect();
        for (seq, contact) in &expired {
            self.details.remove(seq);
            self.update(contact, |f| f.dnc.retain(|e| e.seq != *seq));
        }
        expired.len()
    }
}

enum Guard<'a> {
    Phone(dashmap::mapref::one::Ref<'a, u64, ContactFacts>),
    Name(dashmap::mapref::one::Ref<'a, Box<str>, ContactFacts>),
}

impl Guard<'_> {
    fn facts(&self) -> &ContactFacts {
        match self {
            Guard::Phone(g) => g.value(),
            Guard::Name(g) => g.value(),
        }
    }
}
