//! The in-memory index that reads see: per-identifier facts in sharded maps, applied from the change log.
mod facts;

pub use facts::{ConsentFact, ContactFacts, DncFact, Removal};

use crate::model::{ContactKey, ContactRef, Event, Millis, StoredEvent};
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

type FastMap<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

static NO_FACTS: ContactFacts = ContactFacts {
    consents: Vec::new(),
    dnc: Vec::new(),
};

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
    /// DNC entry seq to the identifier it was recorded against, for removals.
    entries: FastMap<u64, ContactKey>,
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
            entries: FastMap::default(),
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

    /// A copy of the facts of `key`, for reports (not the hot path).
    pub fn facts(&self, key: &ContactRef<'_>) -> ContactFacts {
        self.with_facts(key, |f, _| f[0].clone())
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
            Event::ConsentRecorded(c) => self.update(&c.contact, |f| {
                f.consents.push(ConsentFact {
                    seq: ev.seq,
                    recorded_at: ev.recorded_at,
                    record: c.clone(),
                })
            }),
            Event::DncAdded(d) => {
                self.update(&d.contact, |f| {
                    f.dnc.push(DncFact {
                        seq: ev.seq,
                        added_at: ev.recorded_at,
                        entry: d.clone(),
                        removal: None,
                    })
                });
                self.entries.insert(ev.seq, d.contact.clone());
            }
            Event::DncRemoved(r) => {
                // Copy the key out first: never hold one map's guard while locking another.
                let contact = self.entries.get(&r.entry_seq).map(|k| k.clone());
                if let Some(contact) = contact {
                    self.update(&contact, |f| {
                        if let Some(e) = f.dnc.iter_mut().find(|e| e.seq == r.entry_seq) {
                            e.removal = Some(Removal {
                                seq: ev.seq,
                                at: ev.recorded_at,
                                actor: r.actor.clone(),
                                reason: r.reason.clone(),
                                retain_until: r.retain_until,
                            });
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
        let mut purged = Vec::new();
        let mut sweep = |facts: &mut ContactFacts| {
            facts.dnc.retain(|e| {
                let keep = e.removal.as_ref().is_none_or(|r| r.retain_until > now);
                if !keep {
                    purged.push(e.seq);
                }
                keep
            });
        };
        self.phones.iter_mut().for_each(|mut f| sweep(&mut f));
        self.emails.iter_mut().for_each(|mut f| sweep(&mut f));
        self.externals.iter_mut().for_each(|mut f| sweep(&mut f));
        for seq in &purged {
            self.entries.remove(seq);
        }
        purged.len()
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
