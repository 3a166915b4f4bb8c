//! The in-memory index that reads see: per-identifier facts in sharded maps, the identity
//! graph, applied in seq order from the change log and fanned out to watchers.
pub mod attempts;
mod facts;
mod image;
mod names;
mod packed;

pub use attempts::{Attempt, keep_attempts_for, subject_hash};
pub use facts::{ConsentFact, ConsentView, ContactFacts, ContactReport, DncFact, DncView, Removal};
pub use packed::ImageError;

use crate::audit::Tokenizer;
use crate::model::{
    ConsentStatus, ContactKey, ContactRef, DncType, Event, Millis, StoredEvent, Token,
};
use dashmap::DashMap;
use packed::Slot;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

type FastMap<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

/// Events a slow watcher may fall behind by before it is told to resume.
pub const WATCH_BUFFER: usize = 65_536;

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
    phones: FastMap<u64, Slot>,
    emails: FastMap<Box<str>, Slot>,
    /// External ids; a person's own facts live under their external id.
    externals: FastMap<Box<str>, Slot>,
    /// Erased identifiers by token: what keeps an erased person's opt-outs enforced.
    erased: FastMap<Token, Slot>,
    /// Each token of an erased person to every token of that person: the identity links
    /// are gone, so this is what carries one identifier's opt-out to the others.
    erased_groups: FastMap<Token, Arc<[Token]>>,
    /// Set once anything is kept under a token: checks hash their identifier only then.
    /// (`DashMap::is_empty` would read-lock every shard on every check.)
    any_erased: AtomicBool,
    /// Turns a checked identifier into its token; set when there is anything erased to find.
    tokenizer: OnceLock<Tokenizer>,
    /// Person (external id) to the identifiers linked to them.
    members: FastMap<Box<str>, Vec<ContactKey>>,
    /// Removed DNC entries still within retention: entry seq to its removal. Full records
    /// stay in the store; reports read them from there by seq.
    archived: FastMap<u64, Archived>,
    /// Withdrawal, refusal or company DNC entry seq to the person its fact was mirrored to
    /// (and the identifier it was recorded for).
    mirrors: FastMap<u64, Mirror>,
    /// Contact attempts inside the longest frequency-limit window.
    attempts: attempts::Attempts,
    /// Heap bytes behind the identifier maps' entries (spilled facts, string keys), kept
    /// as they change so that sizing the index never walks it.
    heap: AtomicI64,
    seq: AtomicU64,
    /// When the index last heard from its store (an event or a heartbeat).
    heard_at: AtomicI64,
    /// True when this process is the store's only writer, so the index cannot lag it.
    authoritative: AtomicBool,
    /// Set once a replica has finished its first full load from a shared store.
    loaded: AtomicBool,
    changes: broadcast::Sender<Arc<StoredEvent>>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            phones: FastMap::default(),
            emails: FastMap::default(),
            externals: FastMap::default(),
            erased: FastMap::default(),
            erased_groups: FastMap::default(),
            any_erased: AtomicBool::new(false),
            tokenizer: OnceLock::new(),
            members: FastMap::default(),
            archived: FastMap::default(),
            mirrors: FastMap::default(),
            attempts: attempts::Attempts::default(),
            heap: AtomicI64::new(0),
            seq: AtomicU64::new(0),
            heard_at: AtomicI64::new(0),
            authoritative: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
            changes: broadcast::channel(WATCH_BUFFER).0,
        }
    }
}

/// A removed DNC entry kept until its retention date.
#[derive(Clone, Debug, PartialEq)]
pub struct Archived {
    pub removal_seq: u64,
    pub retain_until: Millis,
    /// Where the entry's fact is held.
    pub owner: ContactKey,
}

/// Where a fact of one identifier was copied to: the person it was linked to.
#[derive(Clone, Debug, PartialEq)]
struct Mirror {
    person: Box<str>,
    owner: ContactKey,
}

/// The seqs of the records held for one identifier, for reports to read from the store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordSeqs {
    pub consents: Vec<u64>,
    /// Each DNC entry with its removal, when archived.
    pub dnc: Vec<(u64, Option<Archived>)>,
}

fn key_ref(k: &ContactKey) -> ContactRef<'_> {
    k.as_ref()
}

/// Withdrawals, refusals and company DNC entries of an identifier are the person's too.
fn follows_the_person(ev: &Event) -> bool {
    match ev {
        Event::ConsentRecorded(c) => c.status != ConsentStatus::Granted,
        Event::DncAdded(d) => matches!(d.dnc_type, DncType::Corporate | DncType::Personal),
        _ => false,
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

    /// The key that erased identifiers were hashed with; without it, erased entries could
    /// not be matched and checks of erased people would pass.
    pub fn set_tokenizer(&self, t: Tokenizer) {
        let _ = self.tokenizer.set(t);
    }

    /// The token `key` would be kept under if it was erased; None while nothing is erased.
    fn erased_key(&self, key: &ContactRef<'_>) -> Option<Token> {
        if !self.any_erased.load(Ordering::Acquire) || matches!(key, ContactRef::Erased(_)) {
            return None;
        }
        match self.tokenizer.get() {
            Some(t) => Some(t.token(key)),
            None => {
                tracing::error!("erased entries present but no tokenizer configured");
                None
            }
        }
    }

    /// Whether the index holds a full load: it is the store's own (embedded) or it has
    /// finished loading from a shared store.
    pub fn ready(&self) -> bool {
        self.authoritative.load(Ordering::Acquire) || self.loaded.load(Ordering::Acquire)
    }

    /// A replica's first full load is done (or, with `false`, its state can no longer be
    /// trusted until it reloads).
    pub fn set_loaded(&self, yes: bool) {
        self.loaded.store(yes, Ordering::Release);
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

    /// Every event applied from now on, in seq order. A receiver that falls more than
    /// WATCH_BUFFER events behind gets `Lagged` instead of slowing writers down.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.changes.subscribe()
    }

    /// Whether anything is kept under `token`: its own facts or a place in an erased person.
    fn token_known(&self, token: &Token) -> bool {
        self.erased.contains_key(token) || self.erased_groups.contains_key(token)
    }

    /// The tokens of the erased person `token` belongs to (itself included), in order.
    fn group_of(&self, token: &Token) -> Arc<[Token]> {
        self.erased_groups
            .get(token)
            .map(|g| g.clone())
            .unwrap_or_else(|| Arc::from([*token]))
    }

    /// The tokens whose kept facts speak for `key`: its own (`token`), those of the erased
    /// person it belonged to, and those of an erased person whose external id `person` is
    /// (an identifier linked to that id after the erasure is that person's too). Each once,
    /// `key`'s own first.
    fn kept_tokens(
        &self,
        key: &ContactRef<'_>,
        token: Option<Token>,
        person: Option<&str>,
    ) -> Vec<Token> {
        let mut roots: Vec<Token> = token.into_iter().collect();
        if let ContactRef::Erased(t) = key {
            roots.push(*t);
        }
        if let Some(p) = person
            && let Some(pt) = self
                .erased_key(&ContactRef::External(p))
                .filter(|t| self.token_known(t))
        {
            roots.push(pt);
        }
        let mut out: Vec<Token> = Vec::new();
        for r in roots {
            for t in self.group_of(&r).iter() {
                if !out.contains(t) && !matches!(key, ContactRef::Erased(k) if k == t) {
                    out.push(*t);
                }
            }
        }
        if let Some(t) = token {
            out.retain(|x| *x != t);
            out.insert(0, t);
        }
        out
    }

    /// What erasures kept that speaks for `key` (see `kept_tokens`): the tokens to report on.
    pub fn erased_tokens(&self, key: &ContactRef<'_>) -> Vec<Token> {
        let token = self.erased_key(key).filter(|t| self.token_known(t));
        let person = self.person_of(key).map(|(p, _)| p);
        self.kept_tokens(key, token, person.as_deref())
    }

    fn token_facts(&self, token: &Token) -> Option<ContactFacts> {
        self.erased.get(token).map(|g| g.decode())
    }

    /// The person `key` is linked to, read from its slot without decoding its facts.
    fn linked_person(&self, key: &ContactRef<'_>) -> Option<Box<str>> {
        self.get(key)
            .and_then(|g| g.slot().person().map(Into::into))
    }

    /// `key`'s own facts, decoded (person link included).
    fn facts_of(&self, key: &ContactRef<'_>) -> ContactFacts {
        self.get(key).map(|g| g.slot().decode()).unwrap_or_default()
    }

    /// Runs `f` over the facts that decide for `key` and the seq they were read at.
    ///
    /// `facts[0]` is the identifier's own (with what is kept under its token once erased);
    /// the facts of every other identifier of the same person follow: those linked in
    /// clear, and those of an erased person whose tokens include this identifier's or its
    /// person's. The common case (not linked, nothing erased under its token) runs under
    /// one shard read lock and allocates nothing; the other cases copy each identifier's
    /// facts out one lock at a time, since holding two dashmap guards at once can deadlock
    /// against writers.
    pub fn with_facts<R>(
        &self,
        key: &ContactRef<'_>,
        f: impl FnOnce(&[&ContactFacts], u64) -> R,
    ) -> R {
        let seq = self.seq();
        let mut f = Some(f);
        let token = self.erased_key(key).filter(|t| self.token_known(t));
        let person: Option<Box<str>> = {
            let guard = self.get(key);
            let slot = guard.as_ref().map(|g| g.slot());
            let person = match key {
                ContactRef::External(x) if self.members.contains_key(*x) => Some((*x).into()),
                _ => slot.and_then(|s| s.person()).map(Into::into),
            };
            if person.is_none() && token.is_none() {
                let mut own = ContactFacts::new();
                if let Some(s) = slot {
                    s.decode_facts(&mut own);
                }
                drop(guard);
                let f = f.take().expect("called once");
                return f(&[&own], seq);
            }
            person
        };
        let mut own: ContactFacts = self.facts_of(key);
        let mut owned: Vec<ContactFacts> = Vec::new();
        if let Some(person) = &person {
            if !matches!(key, ContactRef::External(x) if **x == **person) {
                owned.push(self.facts_of(&ContactRef::External(person)));
            }
            let members: Vec<ContactKey> = self
                .members
                .get(&**person)
                .map(|m| m.clone())
                .unwrap_or_default();
            for m in members {
                if key_ref(&m) != *key {
                    owned.push(self.facts_of(&key_ref(&m)));
                }
            }
        }
        for t in self.kept_tokens(key, token, person.as_deref()) {
            let Some(kept) = self.token_facts(&t) else {
                continue;
            };
            if Some(t) == token {
                own.absorb(kept);
            } else {
                owned.push(kept);
            }
        }
        let mut refs: Vec<&ContactFacts> = Vec::with_capacity(owned.len() + 1);
        refs.push(&own);
        refs.extend(owned.iter());
        let f = f.take().expect("called once");
        f(&refs, seq)
    }

    fn get(&self, key: &ContactRef<'_>) -> Option<Guard<'_>> {
        match key {
            ContactRef::Phone(p) => self.phones.get(p).map(Guard::Phone),
            ContactRef::Email(e) => self.emails.get(e.as_ref()).map(Guard::Name),
            ContactRef::External(x) => self.externals.get(*x).map(Guard::Name),
            ContactRef::Erased(t) => self.erased.get(t).map(Guard::Erased),
        }
    }

    /// The person an identifier is linked to, and that person's identifiers.
    pub fn person_of(&self, key: &ContactRef<'_>) -> Option<(String, Vec<ContactKey>)> {
        let person: Box<str> = match key {
            ContactRef::External(x) if self.members.contains_key(*x) => (*x).into(),
            _ => self.linked_person(key)?,
        };
        let members = self
            .members
            .get(&*person)
            .map(|m| m.clone())
            .unwrap_or_default();
        Some((person.into(), members))
    }

    /// The seqs of `key`'s own records and the index seq they were read at, for reports
    /// (not the hot path): the records themselves are read from the store.
    pub fn records(&self, key: &ContactRef<'_>) -> (RecordSeqs, u64) {
        let seq = self.seq();
        let f = self.facts_of(key);
        let consents = f.consents.iter().map(|c| c.seq).collect();
        let dnc = f
            .dnc
            .iter()
            .map(|d| (d.seq, self.archived(d.seq)))
            .collect();
        (RecordSeqs { consents, dnc }, seq)
    }

    /// The removal of the DNC entry added at `seq`, while it is archived.
    pub fn archived(&self, seq: u64) -> Option<Archived> {
        self.archived.get(&seq).map(|a| a.clone())
    }

    pub fn len(&self) -> usize {
        self.phones.len() + self.emails.len() + self.externals.len() + self.erased.len()
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
        self.apply_body(ev);
        self.seq.store(ev.seq, Ordering::Release);
        // No receivers is normal; a send never blocks.
        let _ = self.changes.send(Arc::new(ev.clone()));
        Applied::Applied
    }

    /// The effect of one event on the maps, without the seq bookkeeping.
    fn apply_body(&self, ev: &StoredEvent) {
        // Where a withdrawal or company entry is mirrored: the person of its identifier now.
        let mirror_to = match &ev.event {
            Event::ConsentRecorded(c) if follows_the_person(&ev.event) => {
                self.person_for_mirror(&c.contact)
            }
            Event::DncAdded(d) if follows_the_person(&ev.event) => {
                self.person_for_mirror(&d.contact)
            }
            _ => None,
        };
        match &ev.event {
            Event::ConsentRecorded(c) => self.consent_recorded(ev, c, mirror_to),
            Event::DncAdded(d) => self.dnc_added(ev, d, mirror_to),
            Event::DncRemoved(r) => self.dnc_removed(ev, r),
            Event::IdentityLinked(l) => self.linked(l),
            Event::IdentityUnlinked(u) => self.unlinked(u),
            Event::InboundReceived(i) => {
                self.update(&i.contact, |f| f.record_inbound(i.channel, i.received_at))
            }
            // Privacy bookkeeping is kept by the privacy state, not the decision index.
            Event::Redacted(_)
            | Event::ConsumerRegistered(_)
            | Event::ConsumerIdentifiersAdded(_)
            | Event::PrivacyRequestSubmitted(_)
            | Event::PrivacyRequestUpdated(_)
            | Event::LegalHoldPlaced(_)
            | Event::LegalHoldReleased(_) => {}
            Event::SubjectsErased(e) => self.group_erased(e),
            Event::AttemptRecorded(a) => self.attempts.record(ev.seq, a, ev.recorded_at),
        }
    }

    /// Calls `f` with every attempt held for `key` (and `true`) and, with `person_wide`,
    /// those of every other identifier of the person it is linked to, the person's external
    /// id included (and `false`). Allocates only for a linked identifier.
    pub fn each_attempt(
        &self,
        key: &ContactRef<'_>,
        person_wide: bool,
        f: &mut dyn FnMut(&Attempt, bool),
    ) {
        if self.attempts.is_empty() {
            return;
        }
        self.attempts.each(key, &mut |a| f(a, true));
        if !person_wide {
            return;
        }
        let Some((person, members)) = self.person_of(key) else {
            return;
        };
        let person_key = ContactRef::External(&person);
        if person_key != *key {
            self.attempts.each(&person_key, &mut |a| f(a, false));
        }
        for m in &members {
            if key_ref(m) != *key {
                self.attempts.each(&key_ref(m), &mut |a| f(a, false));
            }
        }
    }

    /// Drops attempts that have left every policy's window by `now`.
    pub fn prune_attempts(&self, now: Millis) -> usize {
        self.attempts.prune(now)
    }

    /// Attempts held.
    pub fn attempts_held(&self) -> u64 {
        self.attempts.held()
    }

    fn consent_recorded(
        &self,
        ev: &StoredEvent,
        c: &crate::model::ConsentEvent,
        mirror_to: Option<Box<str>>,
    ) {
        let fact = ConsentFact::of(ev.seq, c);
        // A fact already held for this seq (an erasure's history re-applied over a
        // snapshot that was rewritten already) is not added twice.
        let add = |f: &mut ContactFacts, fact: ConsentFact| {
            if !f.consents.iter().any(|x| x.seq == fact.seq) {
                f.consents.push(fact);
            }
        };
        if let Some(p) = mirror_to {
            self.update_person(&p, |f| add(f, fact.clone()));
            self.mirrors.insert(
                ev.seq,
                Mirror {
                    person: p,
                    owner: c.contact.clone(),
                },
            );
        }
        self.update(&c.contact, |f| add(f, fact));
    }

    fn dnc_added(
        &self,
        ev: &StoredEvent,
        d: &crate::model::DncAddEvent,
        mirror_to: Option<Box<str>>,
    ) {
        let fact = DncFact::of(ev.seq, d);
        let add = |f: &mut ContactFacts, fact: DncFact| {
            if !f.dnc.iter().any(|x| x.seq == fact.seq) {
                f.dnc.push(fact);
            }
        };
        if let Some(p) = mirror_to {
            self.update_person(&p, |f| add(f, fact.clone()));
            self.mirrors.insert(
                ev.seq,
                Mirror {
                    person: p,
                    owner: d.contact.clone(),
                },
            );
        }
        self.update(&d.contact, |f| add(f, fact));
    }

    fn dnc_removed(&self, ev: &StoredEvent, r: &crate::model::DncRemoveEvent) {
        // Take what is needed out of one map before locking another: never hold
        // two guards at once.
        let mirror = self.mirrors.get(&r.entry_seq).map(|m| m.clone());
        let owner = match &mirror {
            Some(m) => Some(m.owner.clone()),
            None => self.owner_of(r.entry_seq, r.contact.as_ref()),
        };
        let Some(owner) = owner else {
            return;
        };
        let mark = |f: &mut ContactFacts| {
            if let Some(e) = f.dnc.iter_mut().find(|e| e.seq == r.entry_seq) {
                e.removed = true;
            }
        };
        self.update(&owner, mark);
        if let Some(m) = mirror {
            self.update_person(&m.person, mark);
        }
        self.archived.insert(
            r.entry_seq,
            Archived {
                removal_seq: ev.seq,
                retain_until: r.retain_until,
                owner,
            },
        );
    }

    /// The identifier the DNC entry added at `seq` was recorded for, found through `via`
    /// (the identifier a removal was asked for, which may hold only a copy of it).
    pub fn entry_owner(&self, seq: u64, via: &ContactKey) -> Option<ContactKey> {
        match self.mirrors.get(&seq).map(|m| m.owner.clone()) {
            Some(owner) => Some(owner),
            None => self.owner_of(seq, Some(via)),
        }
    }

    /// The identifier holding the DNC entry added at `seq`: the one the removal names, its
    /// token once erased, or (for removals recorded before they named one) a search.
    fn owner_of(&self, seq: u64, named: Option<&ContactKey>) -> Option<ContactKey> {
        let holds = |k: &ContactRef<'_>| self.get(k).is_some_and(|g| g.slot().holds(seq));
        if let Some(k) = named {
            if holds(&k.as_ref()) {
                return Some(k.clone());
            }
            if let Some(t) = self.erased_key(&k.as_ref())
                && holds(&ContactRef::Erased(t))
            {
                return Some(ContactKey::Erased(t));
            }
        }
        let has = |f: &Slot| f.holds(seq);
        self.phones
            .iter()
            .find(|e| has(e.value()))
            .map(|e| ContactKey::Phone(*e.key()))
            .or_else(|| {
                self.emails
                    .iter()
                    .find(|e| has(e.value()))
                    .map(|e| ContactKey::Email(e.key().clone()))
            })
            .or_else(|| {
                self.externals
                    .iter()
                    .find(|e| has(e.value()))
                    .map(|e| ContactKey::External(e.key().clone()))
            })
            .or_else(|| {
                self.erased
                    .iter()
                    .find(|e| has(e.value()))
                    .map(|e| ContactKey::Erased(*e.key()))
            })
    }

    fn linked(&self, l: &crate::model::LinkEvent) {
        let previous = self.linked_person(&l.contact.as_ref());
        if previous.as_deref() != Some(l.person.as_str()) {
            if let Some(prev) = previous {
                self.leave(&prev, &l.contact);
            }
            let person: Box<str> = l.person.as_str().into();
            let mut grew = member_bytes(&l.contact);
            let mut m = self.members.entry(person.clone()).or_insert_with(|| {
                grew += person.heap_bytes();
                Vec::new()
            });
            m.push(l.contact.clone());
            drop(m);
            self.heap.fetch_add(grew as i64, Ordering::Relaxed);
            self.update(&l.contact, |f| f.person = Some(l.person.as_str().into()));
        }
    }

    fn unlinked(&self, u: &crate::model::UnlinkEvent) {
        let previous = self.linked_person(&u.contact.as_ref());
        if let Some(prev) = previous {
            self.leave(&prev, &u.contact);
            self.update(&u.contact, |f| f.person = None);
        }
    }

    /// Joins the tokens of one erased person (with any erased person they already belong
    /// to) so that each speaks for all.
    fn group_erased(&self, e: &crate::model::ErasureEvent) {
        let named = if e.group.is_empty() {
            &e.tokens
        } else {
            &e.group
        };
        let mut all: Vec<Token> = named
            .iter()
            .filter_map(|k| match k {
                ContactKey::Erased(t) => Some(*t),
                _ => None,
            })
            .collect();
        for t in all.clone() {
            let earlier = self.erased_groups.get(&t).map(|g| g.clone());
            all.extend(earlier.iter().flat_map(|g| g.iter().copied()));
        }
        all.sort_unstable();
        all.dedup();
        if all.len() < 2 {
            return;
        }
        let group: Arc<[Token]> = all.into();
        for t in group.iter() {
            self.erased_groups.insert(*t, group.clone());
        }
        self.any_erased.store(true, Ordering::Release);
    }

    fn person_for_mirror(&self, contact: &ContactKey) -> Option<Box<str>> {
        if matches!(contact, ContactKey::External(_) | ContactKey::Erased(_)) {
            return None;
        }
        self.linked_person(&contact.as_ref())
    }

    fn leave(&self, person: &str, contact: &ContactKey) {
        if let Some(mut m) = self.members.get_mut(person) {
            let before = m.len();
            m.retain(|c| c != contact);
            let gone = (before - m.len()) * member_bytes(contact);
            self.heap.fetch_sub(gone as i64, Ordering::Relaxed);
        }
    }

    fn update(&self, key: &ContactKey, f: impl FnOnce(&mut ContactFacts)) {
        match key {
            ContactKey::Phone(p) => self.upsert(&self.phones, *p, f),
            ContactKey::Email(e) => self.upsert(&self.emails, e.clone(), f),
            ContactKey::External(x) => self.upsert(&self.externals, x.clone(), f),
            ContactKey::Erased(t) => {
                self.any_erased.store(true, Ordering::Release);
                self.upsert(&self.erased, *t, f)
            }
        }
    }

    fn remove(&self, key: &ContactKey) -> Option<ContactFacts> {
        let slot = match key {
            ContactKey::Phone(p) => self.phones.remove(p).map(|(_, f)| f),
            ContactKey::Email(e) => self.emails.remove(e).map(|(_, f)| f),
            ContactKey::External(x) => self.externals.remove(x).map(|(_, f)| f),
            ContactKey::Erased(t) => self.erased.remove(t).map(|(_, f)| f),
        };
        let heap = key.heap_bytes() + slot.as_ref().map_or(0, |s| s.heap_bytes());
        if slot.is_some() {
            self.heap.fetch_sub(heap as i64, Ordering::Relaxed);
        }
        slot.map(|s| s.decode())
    }

    /// Changes one identifier's facts: decoded, changed by `f`, stored packed again (the
    /// entry goes once nothing is left). Writes are rare next to checks, so they pay the
    /// decoding.
    fn upsert<K: std::hash::Hash + Eq + HeapBytes>(
        &self,
        map: &FastMap<K, Slot>,
        key: K,
        f: impl FnOnce(&mut ContactFacts),
    ) {
        use dashmap::mapref::entry::Entry;
        let key_heap = key.heap_bytes() as i64;
        let delta = match map.entry(key) {
            Entry::Occupied(mut o) => {
                let before = o.get().heap_bytes() as i64;
                let mut facts = o.get().decode();
                f(&mut facts);
                match Slot::encode(&facts) {
                    Some(s) => {
                        let after = s.heap_bytes() as i64;
                        *o.get_mut() = s;
                        after - before
                    }
                    None => {
                        o.remove();
                        -before - key_heap
                    }
                }
            }
            Entry::Vacant(v) => {
                let mut facts = ContactFacts::new();
                f(&mut facts);
                match Slot::encode(&facts) {
                    Some(s) => {
                        let after = s.heap_bytes() as i64;
                        v.insert(s);
                        after + key_heap
                    }
                    None => 0,
                }
            }
        };
        self.heap.fetch_add(delta, Ordering::Relaxed);
    }

    /// What the index takes in memory by its own accounting: the maps' tables at their
    /// capacity, what their entries point to, and the side maps. RSS growth stays within a
    /// few percent of it (allocator rounding is counted, fragmentation is not).
    pub fn bytes(&self) -> usize {
        fn table<K, V>(m: &FastMap<K, V>) -> usize
        where
            K: std::hash::Hash + Eq,
        {
            // hashbrown: buckets are a power of two at 8/7 of the capacity, each the entry
            // plus one control byte.
            let buckets = (m.capacity() * 8 / 7).max(1);
            buckets * (std::mem::size_of::<(K, V)>() + 1)
        }
        let side = |n: usize, each: usize| n * each;
        table(&self.phones)
            + table(&self.emails)
            + table(&self.externals)
            + table(&self.erased)
            + table(&self.erased_groups)
            + table(&self.members)
            + table(&self.archived)
            + table(&self.mirrors)
            + self.heap.load(Ordering::Relaxed).max(0) as usize
            + side(self.mirrors.len(), 32)
            + side(self.archived.len(), 16)
            + self.attempts.bytes()
            + names::NAMES.usage().1
    }

    /// Forgets `contacts` in clear, then re-applies their history as rewritten by the
    /// erasure (under tokens), which leaves the index as a replay of the rewritten log would.
    pub fn erase(&self, contacts: &[ContactKey], history: &[StoredEvent]) {
        for c in contacts {
            // Their attempt events became tombstones.
            self.attempts.forget(c);
            if let ContactKey::External(x) = c
                && let Some((person, members)) = self.members.remove(&**x)
            {
                let gone = person.heap_bytes() + members.iter().map(member_bytes).sum::<usize>();
                self.heap.fetch_sub(gone as i64, Ordering::Relaxed);
                for m in members {
                    self.update(&m, |f| f.person = None);
                }
            }
            let Some(facts) = self.remove(c) else {
                continue;
            };
            if let Some(p) = &facts.person {
                self.leave(p, c);
            }
            for seq in facts
                .consents
                .iter()
                .map(|x| x.seq)
                .chain(facts.dnc.iter().map(|x| x.seq))
            {
                self.archived.remove(&seq);
                if let Some((_, m)) = self.mirrors.remove(&seq) {
                    self.update_person(&m.person, |f| {
                        f.dnc.retain(|e| e.seq != seq);
                    });
                }
            }
            // Withdrawals mirrored to a person who stays: the person keeps none of them.
            if let Some(p) = &facts.person {
                let gone: Vec<u64> = facts.consents.iter().map(|x| x.seq).collect();
                self.update_person(p, |f| f.consents.retain(|x| !gone.contains(&x.seq)));
            }
        }
        for ev in history {
            match &ev.event {
                Event::ConsentRecorded(_) | Event::DncAdded(_) | Event::DncRemoved(_) => {
                    self.apply_body(ev)
                }
                _ => {}
            }
        }
    }

    /// The people holding a copy of a withdrawal, refusal or company DNC entry of
    /// `contacts`: those they were linked to when it was recorded. An erasure groups those
    /// people's external ids with the erased tokens, so the copy keeps speaking for them
    /// once the rewritten record names only a token.
    pub fn mirrored_to(&self, contacts: &[ContactKey]) -> Vec<String> {
        let mut seqs: Vec<u64> = Vec::new();
        for c in contacts {
            if let Some(g) = self.get(&c.as_ref()) {
                seqs.extend(g.slot().seqs());
            }
        }
        let mut out: Vec<String> = Vec::new();
        for s in seqs {
            if let Some(p) = self.mirrors.get(&s).map(|m| m.person.to_string())
                && !out.contains(&p)
            {
                out.push(p);
            }
        }
        out
    }

    /// The identifiers held in clear whose tokens are in `tokens`: what another replica's
    /// erasure names, found by hashing every key (erasures are rare; this is O(identifiers)).
    pub fn contacts_for_tokens(&self, tokens: &[Token]) -> Vec<ContactKey> {
        let Some(t) = self.tokenizer.get() else {
            return Vec::new();
        };
        let wanted: std::collections::HashSet<&Token> = tokens.iter().collect();
        let mut out = Vec::new();
        for e in self.phones.iter() {
            let k = ContactKey::Phone(*e.key());
            if wanted.contains(&t.token_of(&k)) {
                out.push(k);
            }
        }
        // A number known only by its attempts (names among them are hashed: an erased
        // email's attempts stay until they leave the window, naming no one).
        for e in self.attempts.map().iter() {
            let k = ContactKey::Phone(*e.key());
            if *e.key() < 1 << 63
                && !self.phones.contains_key(e.key())
                && wanted.contains(&t.token_of(&k))
            {
                out.push(k);
            }
        }
        for e in self.emails.iter() {
            let k = ContactKey::Email(e.key().clone());
            if wanted.contains(&t.token_of(&k)) {
                out.push(k);
            }
        }
        for e in self.externals.iter() {
            let k = ContactKey::External(e.key().clone());
            if wanted.contains(&t.token_of(&k)) {
                out.push(k);
            }
        }
        out
    }

    /// The seqs of the consent and DNC events about `contacts` (their own facts, with the
    /// removals of archived entries), in order: what an erasure reads back and rewrites.
    pub fn fact_seqs(&self, contacts: &[ContactKey]) -> Vec<u64> {
        let mut seqs = std::collections::BTreeSet::new();
        for c in contacts {
            if let Some(g) = self.get(&c.as_ref()) {
                seqs.extend(g.slot().seqs());
            }
        }
        let removals: Vec<u64> = seqs
            .iter()
            .filter_map(|s| self.archived.get(s).map(|a| a.removal_seq))
            .collect();
        seqs.extend(removals);
        seqs.into_iter().collect()
    }

    /// A SHA-256 over everything decisions read, in a canonical order: two replicas at the
    /// same seq with the same digest decide alike.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        fn sorted<K: Ord + Clone + std::hash::Hash + Eq, V: std::fmt::Debug>(
            m: &FastMap<K, V>,
        ) -> Vec<(K, String)> {
            let mut v: Vec<(K, String)> = m
                .iter()
                .map(|e| (e.key().clone(), format!("{:?}", e.value())))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        }
        let mut h = Sha256::new();
        h.update(self.seq().to_le_bytes());
        for (k, v) in sorted(&self.phones) {
            h.update(format!("p{k}={v}\n"));
        }
        for (k, v) in sorted(&self.emails) {
            h.update(format!("e{k}={v}\n"));
        }
        for (k, v) in sorted(&self.externals) {
            h.update(format!("x{k}={v}\n"));
        }
        for (k, v) in sorted(&self.erased) {
            h.update(format!("t{}={v}\n", hex::encode(k)));
        }
        for (k, v) in sorted(&self.erased_groups) {
            h.update(format!("g{}={v}\n", hex::encode(k)));
        }
        for (k, v) in sorted(&self.members) {
            h.update(format!("m{k}={v}\n"));
        }
        for (k, v) in sorted(&self.archived) {
            h.update(format!("a{k}={v}\n"));
        }
        for (k, list) in self.attempts.sorted() {
            h.update(format!("c{k}={list:?}\n"));
        }
        hex::encode(h.finalize())
    }

    fn update_person(&self, person: &str, f: impl FnOnce(&mut ContactFacts)) {
        self.upsert(&self.externals, person.into(), f)
    }

    /// Drops archived DNC entries whose retention date has passed.
    pub fn purge_archived(&self, now: Millis) -> usize {
        let expired: Vec<(u64, ContactKey)> = self
            .archived
            .iter()
            .filter(|a| a.retain_until <= now)
            .map(|a| (*a.key(), a.owner.clone()))
            .collect();
        for (seq, owner) in &expired {
            self.archived.remove(seq);
            self.update(owner, |f| f.dnc.retain(|e| e.seq != *seq));
            if let Some((_, m)) = self.mirrors.remove(seq) {
                self.update_person(&m.person, |f| f.dnc.retain(|e| e.seq != *seq));
            }
        }
        expired.len()
    }
}

/// What one identifier in a person's member list takes.
fn member_bytes(k: &ContactKey) -> usize {
    std::mem::size_of::<ContactKey>() + k.heap_bytes()
}

/// Heap bytes a map key points to, at the allocator's size class.
trait HeapBytes {
    fn heap_bytes(&self) -> usize;
}

impl HeapBytes for u64 {
    fn heap_bytes(&self) -> usize {
        0
    }
}

impl HeapBytes for Token {
    fn heap_bytes(&self) -> usize {
        0
    }
}

impl HeapBytes for Box<str> {
    fn heap_bytes(&self) -> usize {
        packed::size_class(self.len())
    }
}

impl HeapBytes for ContactKey {
    fn heap_bytes(&self) -> usize {
        match self {
            ContactKey::Email(e) | ContactKey::External(e) => e.heap_bytes(),
            ContactKey::Phone(_) | ContactKey::Erased(_) => 0,
        }
    }
}

enum Guard<'a> {
    Phone(dashmap::mapref::one::Ref<'a, u64, Slot>),
    Name(dashmap::mapref::one::Ref<'a, Box<str>, Slot>),
    Erased(dashmap::mapref::one::Ref<'a, Token, Slot>),
}

impl Guard<'_> {
    fn slot(&self) -> &Slot {
        match self {
            Guard::Phone(g) => g.value(),
            Guard::Name(g) => g.value(),
            Guard::Erased(g) => g.value(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DncAddEvent, DncRemoveEvent, DncType};

    fn ev(seq: u64, event: Event) -> StoredEvent {
        StoredEvent {
            seq,
            recorded_at: 1_000,
            event,
        }
    }

    #[test]
    fn archived_entries_leave_after_retention() {
        let idx = Index::new();
        let contact = ContactKey::Phone(12025550100);
        let add = DncAddEvent {
            contact: contact.clone(),
            dnc_type: DncType::Corporate,
            list: None,
            expires_at: None,
            source: String::new(),
            note: String::new(),
            actor: String::new(),
        };
        assert_eq!(idx.apply(&ev(1, Event::DncAdded(add))), Applied::Applied);
        let rm = DncRemoveEvent {
            entry_seq: 1,
            contact: None,
            actor: "ops".into(),
            reason: "x".into(),
            retain_until: 5_000,
        };
        assert_eq!(idx.apply(&ev(2, Event::DncRemoved(rm))), Applied::Applied);
        assert_eq!(idx.records(&contact.as_ref()).0.dnc.len(), 1);
        assert_eq!(idx.purge_archived(4_999), 0);
        assert_eq!(idx.purge_archived(5_000), 1);
        assert!(idx.records(&contact.as_ref()).0.dnc.is_empty());
        assert!(idx.with_facts(&contact.as_ref(), |f, _| f[0].dnc.is_empty()));
    }

    #[test]
    fn apply_is_idempotent_and_refuses_gaps() {
        let idx = Index::new();
        let link = |seq| {
            ev(
                seq,
                Event::IdentityUnlinked(crate::model::UnlinkEvent {
                    contact: ContactKey::Phone(12025550100),
                }),
            )
        };
        assert_eq!(idx.apply(&link(1)), Applied::Applied);
        assert_eq!(idx.apply(&link(1)), Applied::AlreadyApplied);
        assert_eq!(idx.apply(&link(3)), Applied::Gap { expected: 2 });
        assert_eq!(idx.seq(), 1);
    }
}
