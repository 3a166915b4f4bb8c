//! The in-memory index that reads see: per-identifier facts in sharded maps, the identity
//! graph, applied in seq order from the change log and fanned out to watchers.
mod facts;

pub use facts::{ConsentFact, ConsentView, ContactFacts, ContactReport, DncFact, DncView, Removal};

use crate::audit::Tokenizer;
use crate::model::{
    ConsentStatus, ContactKey, ContactRef, DncType, Event, Millis, StoredEvent, Token,
};
use dashmap::DashMap;
use facts::Detail;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

type FastMap<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

static NO_FACTS: ContactFacts = ContactFacts::new();

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
    phones: FastMap<u64, ContactFacts>,
    emails: FastMap<Box<str>, ContactFacts>,
    /// External ids; a person's own facts live under their external id.
    externals: FastMap<Box<str>, ContactFacts>,
    /// Erased identifiers by token: what keeps an erased person's opt-outs enforced.
    erased: FastMap<Token, ContactFacts>,
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
    /// Full records by the seq that created them (reports, removals).
    details: FastMap<u64, Detail>,
    /// Withdrawal, refusal or company DNC entry seq to the person its fact was mirrored to.
    mirrors: FastMap<u64, Box<str>>,
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
            details: FastMap::default(),
            mirrors: FastMap::default(),
            seq: AtomicU64::new(0),
            heard_at: AtomicI64::new(0),
            authoritative: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
            changes: broadcast::channel(WATCH_BUFFER).0,
        }
    }
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
        self.erased.get(token).map(|g| g.clone())
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
            let own = guard.as_ref().map(|g| g.facts()).unwrap_or(&NO_FACTS);
            let person = match key {
                ContactRef::External(x) if self.members.contains_key(*x) => Some((*x).into()),
                _ => own.person.clone(),
            };
            if person.is_none() && token.is_none() {
                let f = f.take().expect("called once");
                return f(&[own], seq);
            }
            person
        };
        let mut own: ContactFacts = self.get(key).map(|g| g.facts().clone()).unwrap_or_default();
        let mut owned: Vec<ContactFacts> = Vec::new();
        if let Some(person) = &person {
            if !matches!(key, ContactRef::External(x) if **x == **person) {
                owned.push(
                    self.externals
                        .get(&**person)
                        .map(|g| g.clone())
                        .unwrap_or_default(),
                );
            }
            let members: Vec<ContactKey> = self
                .members
                .get(&**person)
                .map(|m| m.clone())
                .unwrap_or_default();
            for m in members {
                if key_ref(&m) != *key {
                    owned.push(
                        self.get(&key_ref(&m))
                            .map(|g| g.facts().clone())
                            .unwrap_or_default(),
                    );
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
            _ => self.get(key).and_then(|g| g.facts().person.clone())?,
        };
        let members = self
            .members
            .get(&*person)
            .map(|m| m.clone())
            .unwrap_or_default();
        Some((person.into(), members))
    }

    /// The full records of `key` and the seq they were read at, for reports (not the hot path).
    pub fn report(&self, key: &ContactRef<'_>) -> (ContactReport, u64) {
        let seq = self.seq();
        let (consent_seqs, dnc_seqs) = match self.get(key) {
            Some(g) => {
                let f = g.facts();
                let c: Vec<u64> = f.consents.iter().map(|c| c.seq).collect();
                let d: Vec<u64> = f.dnc.iter().map(|d| d.seq).collect();
                (c, d)
            }
            None => (Vec::new(), Vec::new()),
        };
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
        }
    }

    fn consent_recorded(
        &self,
        ev: &StoredEvent,
        c: &crate::model::ConsentEvent,
        mirror_to: Option<Box<str>>,
    ) {
        self.details.insert(
            ev.seq,
            Detail::Consent(ConsentView {
                seq: ev.seq,
                recorded_at: ev.recorded_at,
                record: c.clone(),
            }),
        );
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
            self.mirrors.insert(ev.seq, p);
        }
        self.update(&c.contact, |f| add(f, fact));
    }

    fn dnc_added(
        &self,
        ev: &StoredEvent,
        d: &crate::model::DncAddEvent,
        mirror_to: Option<Box<str>>,
    ) {
        self.details.insert(
            ev.seq,
            Detail::Dnc(DncView {
                seq: ev.seq,
                added_at: ev.recorded_at,
                entry: d.clone(),
                removal: None,
            }),
        );
        let fact = DncFact::of(ev.seq, d);
        let add = |f: &mut ContactFacts, fact: DncFact| {
            if !f.dnc.iter().any(|x| x.seq == fact.seq) {
                f.dnc.push(fact);
            }
        };
        if let Some(p) = mirror_to {
            self.update_person(&p, |f| add(f, fact.clone()));
            self.mirrors.insert(ev.seq, p);
        }
        self.update(&d.contact, |f| add(f, fact));
    }

    fn dnc_removed(&self, ev: &StoredEvent, r: &crate::model::DncRemoveEvent) {
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
        let mark = |f: &mut ContactFacts| {
            if let Some(e) = f.dnc.iter_mut().find(|e| e.seq == r.entry_seq) {
                e.removed = true;
            }
        };
        if let Some(contact) = contact {
            self.update(&contact, mark);
        }
        let mirrored = self.mirrors.get(&r.entry_seq).map(|p| p.clone());
        if let Some(p) = mirrored {
            self.update_person(&p, mark);
        }
    }

    fn linked(&self, l: &crate::model::LinkEvent) {
        let previous = self
            .get(&l.contact.as_ref())
            .and_then(|g| g.facts().person.clone());
        if previous.as_deref() != Some(l.person.as_str()) {
            if let Some(prev) = previous {
                self.leave(&prev, &l.contact);
            }
            self.members
                .entry(l.person.as_str().into())
                .or_default()
                .push(l.contact.clone());
            self.update(&l.contact, |f| f.person = Some(l.person.as_str().into()));
        }
    }

    fn unlinked(&self, u: &crate::model::UnlinkEvent) {
        let previous = self
            .get(&u.contact.as_ref())
            .and_then(|g| g.facts().person.clone());
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
        self.get(&contact.as_ref())
            .and_then(|g| g.facts().person.clone())
    }

    fn leave(&self, person: &str, contact: &ContactKey) {
        if let Some(mut m) = self.members.get_mut(person) {
            m.retain(|c| c != contact);
        }
    }

    fn update(&self, key: &ContactKey, f: impl FnOnce(&mut ContactFacts)) {
        match key {
            ContactKey::Phone(p) => f(&mut self.phones.entry(*p).or_default()),
            ContactKey::Email(e) => f(&mut self.emails.entry(e.clone()).or_default()),
            ContactKey::External(x) => f(&mut self.externals.entry(x.clone()).or_default()),
            ContactKey::Erased(t) => {
                self.any_erased.store(true, Ordering::Release);
                f(&mut self.erased.entry(*t).or_default())
            }
        }
    }

    fn remove(&self, key: &ContactKey) -> Option<ContactFacts> {
        match key {
            ContactKey::Phone(p) => self.phones.remove(p).map(|(_, f)| f),
            ContactKey::Email(e) => self.emails.remove(e).map(|(_, f)| f),
            ContactKey::External(x) => self.externals.remove(x).map(|(_, f)| f),
            ContactKey::Erased(t) => self.erased.remove(t).map(|(_, f)| f),
        }
    }

    /// Forgets `contacts` in clear, then re-applies their history as rewritten by the
    /// erasure (under tokens), which leaves the index as a replay of the rewritten log would.
    pub fn erase(&self, contacts: &[ContactKey], history: &[StoredEvent]) {
        for c in contacts {
            if let ContactKey::External(x) = c
                && let Some((_, members)) = self.members.remove(&**x)
            {
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
                self.details.remove(&seq);
                if let Some((_, p)) = self.mirrors.remove(&seq) {
                    self.update_person(&p, |f| {
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
                let f = g.facts();
                seqs.extend(f.consents.iter().map(|x| x.seq));
                seqs.extend(f.dnc.iter().map(|x| x.seq));
            }
        }
        let mut out: Vec<String> = Vec::new();
        for s in seqs {
            if let Some(p) = self.mirrors.get(&s).map(|p| p.to_string())
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

    /// The consent and DNC events about `contacts` (their own facts), rebuilt from the kept
    /// records in seq order: what an erasure rewrites in the index.
    pub fn history_of(&self, contacts: &[ContactKey]) -> Vec<StoredEvent> {
        let mut seqs = std::collections::BTreeSet::new();
        for c in contacts {
            if let Some(g) = self.get(&c.as_ref()) {
                let f = g.facts();
                seqs.extend(f.consents.iter().map(|x| x.seq));
                seqs.extend(f.dnc.iter().map(|x| x.seq));
            }
        }
        let mut out = Vec::new();
        for seq in seqs {
            match self.details.get(&seq).map(|d| d.clone()) {
                Some(Detail::Consent(v)) => out.push(StoredEvent {
                    seq,
                    recorded_at: v.recorded_at,
                    event: Event::ConsentRecorded(v.record),
                }),
                Some(Detail::Dnc(v)) => {
                    out.push(StoredEvent {
                        seq,
                        recorded_at: v.added_at,
                        event: Event::DncAdded(v.entry),
                    });
                    if let Some(r) = v.removal {
                        out.push(StoredEvent {
                            seq: r.seq,
                            recorded_at: r.at,
                            event: Event::DncRemoved(crate::model::DncRemoveEvent {
                                entry_seq: seq,
                                actor: r.actor,
                                reason: r.reason,
                                retain_until: r.retain_until,
                            }),
                        });
                    }
                }
                None => {}
            }
        }
        out.sort_by_key(|e| e.seq);
        out
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
        for (k, v) in sorted(&self.details) {
            h.update(format!("d{k}={v}\n"));
        }
        hex::encode(h.finalize())
    }

    /// A DNC entry by the seq that added it (archived ones too, until purged).
    pub fn dnc_view(&self, seq: u64) -> Option<DncView> {
        match self.details.get(&seq).as_deref() {
            Some(Detail::Dnc(v)) => Some(v.clone()),
            _ => None,
        }
    }

    fn update_person(&self, person: &str, f: impl FnOnce(&mut ContactFacts)) {
        f(&mut self.externals.entry(person.into()).or_default())
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
            if let Some((_, p)) = self.mirrors.remove(seq) {
                self.update_person(&p, |f| f.dnc.retain(|e| e.seq != *seq));
            }
        }
        expired.len()
    }
}

enum Guard<'a> {
    Phone(dashmap::mapref::one::Ref<'a, u64, ContactFacts>),
    Name(dashmap::mapref::one::Ref<'a, Box<str>, ContactFacts>),
    Erased(dashmap::mapref::one::Ref<'a, Token, ContactFacts>),
}

impl Guard<'_> {
    fn facts(&self) -> &ContactFacts {
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
            actor: "ops".into(),
            reason: "x".into(),
            retain_until: 5_000,
        };
        assert_eq!(idx.apply(&ev(2, Event::DncRemoved(rm))), Applied::Applied);
        assert_eq!(idx.report(&contact.as_ref()).0.dnc.len(), 1);
        assert_eq!(idx.purge_archived(4_999), 0);
        assert_eq!(idx.purge_archived(5_000), 1);
        assert!(idx.report(&contact.as_ref()).0.dnc.is_empty());
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
