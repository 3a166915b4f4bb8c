//! Contact attempts inside the longest frequency-limit window: 16 bytes each, by identifier.
use crate::model::{
    AttemptEvent, AttemptOutcome, Channel, ContactKey, ContactRef, Millis, Purpose,
};
use dashmap::DashMap;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

type FastMap<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

/// One identifier's attempts: the first inline in the map's entry (most identifiers have one
/// inside a window), more on the heap.
pub type AttemptList = SmallVec<[Attempt; 1]>;

/// One attempt as limits read it. Times are whole seconds rounded up, so an attempt is
/// counted for at most a second longer than its window, never shorter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Attempt {
    /// Seconds since the Unix epoch (rounded up).
    at_s: u32,
    /// FNV-1a of the subject; 0 when the attempt named none.
    subject: u32,
    seq_lo: u32,
    seq_hi: u16,
    channel: u8,
    /// Purpose in the low 2 bits, outcome above them.
    kind: u8,
}

const _: () = assert!(std::mem::size_of::<Attempt>() == 16);

impl Attempt {
    pub fn of(seq: u64, a: &AttemptEvent) -> Attempt {
        Attempt {
            at_s: seconds_up(a.at),
            subject: subject_hash(&a.subject),
            seq_lo: seq as u32,
            seq_hi: (seq >> 32) as u16,
            channel: channel_code(a.channel),
            kind: purpose_code(a.purpose) | (outcome_code(a.outcome) << 2),
        }
    }

    /// When it was made, in milliseconds (whole seconds).
    pub fn at(&self) -> Millis {
        Millis::from(self.at_s) * 1000
    }

    pub fn seq(&self) -> u64 {
        u64::from(self.seq_lo) | (u64::from(self.seq_hi) << 32)
    }

    pub fn subject(&self) -> u32 {
        self.subject
    }

    pub fn channel(&self) -> Channel {
        Channel::ALL[usize::from(self.channel)]
    }

    pub fn purpose(&self) -> Purpose {
        Purpose::ALL[usize::from(self.kind & 3)]
    }

    pub fn outcome(&self) -> AttemptOutcome {
        AttemptOutcome::ALL[usize::from(self.kind >> 2)]
    }

    pub(super) fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.at_s.to_le_bytes());
        b[4..8].copy_from_slice(&self.subject.to_le_bytes());
        b[8..12].copy_from_slice(&self.seq_lo.to_le_bytes());
        b[12..14].copy_from_slice(&self.seq_hi.to_le_bytes());
        b[14] = self.channel;
        b[15] = self.kind;
        b
    }

    pub(super) fn from_bytes(b: &[u8; 16]) -> Option<Attempt> {
        let a = Attempt {
            at_s: u32::from_le_bytes(b[0..4].try_into().ok()?),
            subject: u32::from_le_bytes(b[4..8].try_into().ok()?),
            seq_lo: u32::from_le_bytes(b[8..12].try_into().ok()?),
            seq_hi: u16::from_le_bytes(b[12..14].try_into().ok()?),
            channel: b[14],
            kind: b[15],
        };
        let valid = usize::from(a.channel) < Channel::ALL.len()
            && usize::from(a.kind & 3) < Purpose::ALL.len()
            && usize::from(a.kind >> 2) < AttemptOutcome::ALL.len();
        valid.then_some(a)
    }
}

fn seconds_up(ms: Millis) -> u32 {
    let s = ms.max(0).saturating_add(999) / 1000;
    u32::try_from(s).unwrap_or(u32::MAX)
}

fn channel_code(c: Channel) -> u8 {
    Channel::ALL.iter().position(|x| *x == c).unwrap_or(0) as u8
}

fn purpose_code(p: Purpose) -> u8 {
    Purpose::ALL.iter().position(|x| *x == p).unwrap_or(0) as u8
}

fn outcome_code(o: AttemptOutcome) -> u8 {
    AttemptOutcome::ALL
        .iter()
        .position(|x| *x == o)
        .unwrap_or(0) as u8
}

/// FNV-1a (32 bits) of a subject, case and surrounding space ignored; never 0, which means
/// "no subject". Two subjects that collide count as one: an over-count, never an under-count.
pub fn subject_hash(subject: &str) -> u32 {
    let s = subject.trim();
    if s.is_empty() {
        return 0;
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// The map key of an identifier: a phone number is its own (E.164 digits stay below 2^50);
/// any other identifier is a 64-bit FNV-1a of its kind and text with the top bit set. Two
/// names that collide share their attempts: an over-count, never an under-count.
fn attempt_key(k: &ContactRef<'_>) -> u64 {
    let (tag, bytes): (u8, &[u8]) = match k {
        ContactRef::Phone(p) => return *p,
        ContactRef::Email(e) => (b'e', e.as_bytes()),
        ContactRef::External(x) => (b'x', x.as_bytes()),
        ContactRef::Erased(t) => (b't', t.as_slice()),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(tag).chain(bytes.iter().copied()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | (1 << 63)
}

/// How long an attempt is kept after it was made: the longest window of any policy this
/// process has loaded. Process-wide, because every index of the process (the live one, one
/// loaded from an image, the image builder's) must keep the same attempts, and it only
/// grows, so no policy ever counts fewer attempts than its window holds.
static HORIZON_MS: AtomicI64 = AtomicI64::new(0);

/// Makes the horizon at least `ms` (set from the policies before any index is loaded).
pub fn keep_attempts_for(ms: Millis) {
    HORIZON_MS.fetch_max(ms.max(0), Ordering::AcqRel);
}

fn horizon() -> Millis {
    HORIZON_MS.load(Ordering::Acquire)
}

/// Attempts by identifier, each list in the order recorded.
#[derive(Default)]
pub struct Attempts {
    map: FastMap<u64, AttemptList>,
    /// Attempts held; checks skip the map while it is 0.
    held: AtomicU64,
}

impl Attempts {
    pub fn is_empty(&self) -> bool {
        self.held.load(Ordering::Acquire) == 0
    }

    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Records one attempt; `now` (the event's commit time, so every replay prunes alike)
    /// drops the identifier's attempts that have left the horizon. An attempt already past
    /// it is not kept.
    pub fn record(&self, seq: u64, a: &AttemptEvent, now: Millis) {
        self.record_after(seq, a, now.saturating_sub(horizon()))
    }

    /// Records one attempt, keeping only the identifier's attempts made after `cutoff`.
    fn record_after(&self, seq: u64, a: &AttemptEvent, cutoff: Millis) {
        let fresh = Attempt::of(seq, a);
        let keep = fresh.at() > cutoff;
        let key = attempt_key(&a.contact.as_ref());
        let mut list = self.map.entry(key).or_default();
        let before = list.len();
        list.retain(|x| x.at() > cutoff && x.seq() != seq);
        if keep {
            list.push(fresh);
        }
        let after = list.len();
        let empty = list.is_empty();
        drop(list);
        if empty {
            self.map.remove_if(&key, |_, v| v.is_empty());
        }
        self.adjust(before, after);
    }

    fn adjust(&self, before: usize, after: usize) {
        if after >= before {
            self.held
                .fetch_add((after - before) as u64, Ordering::AcqRel);
        } else {
            self.held
                .fetch_sub((before - after) as u64, Ordering::AcqRel);
        }
    }

    /// Calls `f` with each attempt held for `key` (under one shard read lock).
    pub fn each(&self, key: &ContactRef<'_>, f: &mut dyn FnMut(&Attempt)) {
        if self.is_empty() {
            return;
        }
        if let Some(list) = self.map.get(&attempt_key(key)) {
            for a in list.iter() {
                f(a);
            }
        }
    }

    /// Forgets every attempt of `key` (its events were erased).
    pub fn forget(&self, key: &ContactKey) {
        if let Some((_, list)) = self.map.remove(&attempt_key(&key.as_ref())) {
            self.adjust(list.len(), 0);
        }
    }

    /// Drops attempts that have left the horizon by `now`; returns how many went.
    pub fn prune(&self, now: Millis) -> usize {
        self.prune_before(now.saturating_sub(horizon()))
    }

    fn prune_before(&self, cutoff: Millis) -> usize {
        let mut gone = 0;
        self.map.retain(|_, list| {
            let before = list.len();
            list.retain(|a| a.at() > cutoff);
            gone += before - list.len();
            if list.spilled() && list.capacity() > 2 * list.len() + 4 {
                list.shrink_to_fit();
            }
            !list.is_empty()
        });
        self.adjust(gone, 0);
        gone
    }

    /// Bytes held: the table at its capacity and each list's buffer.
    pub fn bytes(&self) -> usize {
        let buckets = (self.map.capacity() * 8 / 7).max(1);
        let table = buckets * (std::mem::size_of::<(u64, AttemptList)>() + 1);
        let lists: usize = self
            .map
            .iter()
            .filter(|e| e.value().spilled())
            .map(|e| super::packed::size_class(e.value().capacity() * 16))
            .sum();
        table + lists
    }

    /// Every list, sorted by key, for the digest and the image.
    pub fn sorted(&self) -> Vec<(u64, AttemptList)> {
        let mut v: Vec<(u64, AttemptList)> = self
            .map
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        v.sort_unstable_by_key(|x| x.0);
        v
    }

    pub(super) fn map(&self) -> &FastMap<u64, AttemptList> {
        &self.map
    }

    /// Puts a list read from an image in place (its attempts were within the horizon then).
    /// Room for `n` identifiers' lists, before an image's are loaded.
    pub(super) fn reserve(&mut self, n: usize) {
        self.map = FastMap::with_capacity_and_hasher(n, Default::default());
    }

    pub(super) fn load(&self, key: u64, list: AttemptList) {
        let n = list.len();
        if n > 0 {
            self.map.insert(key, list);
            self.adjust(0, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(contact: u64, at: Millis, outcome: AttemptOutcome) -> AttemptEvent {
        AttemptEvent {
            contact: ContactKey::Phone(contact),
            channel: Channel::Sms,
            purpose: Purpose::Service,
            subject: "Loan 42".into(),
            at,
            outcome,
            campaign_id: "c".into(),
        }
    }

    #[test]
    fn packs_and_unpacks_every_field() {
        let e = ev(12025550100, 1_700_000_000_001, AttemptOutcome::Conversation);
        let a = Attempt::of((7u64 << 32) | 9, &e);
        assert_eq!(a.at(), 1_700_000_001_000, "rounded up to the second");
        assert_eq!(a.seq(), (7u64 << 32) | 9);
        assert_eq!(a.channel(), Channel::Sms);
        assert_eq!(a.purpose(), Purpose::Service);
        assert_eq!(a.outcome(), AttemptOutcome::Conversation);
        assert_eq!(a.subject(), subject_hash(" loan 42 "));
        assert_eq!(Attempt::from_bytes(&a.to_bytes()), Some(a));
        assert_eq!(subject_hash("  "), 0);
        assert_ne!(subject_hash("loan 42"), subject_hash("loan 43"));
    }

    #[test]
    fn keeps_only_the_horizon_and_forgets_on_request() {
        let hour = 3_600_000;
        let at = Attempts::default();
        at.record_after(1, &ev(1, 1_000_000, AttemptOutcome::Busy), 1_000_000 - hour);
        at.record_after(2, &ev(1, 2_000_000, AttemptOutcome::Busy), 2_000_000 - hour);
        assert_eq!(at.held(), 2);
        // The third arrives after the first has left the window: the first goes.
        at.record_after(3, &ev(1, 4_700_000, AttemptOutcome::Busy), 4_700_000 - hour);
        let mut seqs = vec![];
        at.each(&ContactRef::Phone(1), &mut |a| seqs.push(a.seq()));
        assert_eq!(seqs, vec![2, 3]);
        assert_eq!(at.prune_before(5_700_000 - hour), 1);
        assert_eq!(at.held(), 1);
        at.forget(&ContactKey::Phone(1));
        assert!(at.is_empty());
    }

    #[test]
    fn lists_load_back_as_they_were() {
        let at = Attempts::default();
        for i in 0..5u64 {
            let t = 1_000_000 * i as Millis;
            at.record_after(i + 1, &ev(i % 2, t, AttemptOutcome::NoAnswer), -1);
        }
        let back = Attempts::default();
        for (k, list) in at.sorted() {
            let bytes: Vec<[u8; 16]> = list.iter().map(|a| a.to_bytes()).collect();
            back.load(
                k,
                bytes
                    .iter()
                    .map(|b| Attempt::from_bytes(b).unwrap())
                    .collect(),
            );
        }
        assert_eq!(back.sorted(), at.sorted());
        assert_eq!(back.held(), 5);
    }
}
