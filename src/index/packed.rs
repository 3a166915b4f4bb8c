//! How the index stores an identifier's facts: 24 bytes a fact, one fact inline in the map
//! slot, more (or a person link, or inbound times) spilled behind one pointer. Decisions
//! read them decoded into a `ContactFacts` on the stack.
use super::facts::{ConsentFact, ContactFacts, DncFact};
use super::names::{NAMES, NameId};
use crate::model::time::MAX_TIME;
use crate::model::{ChannelSet, ConsentStatus, DncType, Millis, PurposeSet};

const LOW48: u64 = (1 << 48) - 1;
/// "No time" in a 48-bit field: above MAX_TIME, so it cannot be mistaken for one.
const NO_TIME: u64 = LOW48;
const _: () = assert!((MAX_TIME as u64) < NO_TIME);

/// What a fact is: a consent status or a DNC type, in one byte. The byte's unused values
/// are the niche that lets `Slot` stay 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Granted,
    Withdrawn,
    Denied,
    Federal,
    State,
    Corporate,
    Personal,
    Litigator,
}

impl Kind {
    fn of_status(s: ConsentStatus) -> Kind {
        match s {
            ConsentStatus::Granted => Kind::Granted,
            ConsentStatus::Withdrawn => Kind::Withdrawn,
            ConsentStatus::Denied => Kind::Denied,
        }
    }

    fn of_dnc(t: DncType) -> Kind {
        match t {
            DncType::Federal => Kind::Federal,
            DncType::State => Kind::State,
            DncType::Corporate => Kind::Corporate,
            DncType::Personal => Kind::Personal,
            DncType::Litigator => Kind::Litigator,
        }
    }

    fn status(self) -> Option<ConsentStatus> {
        match self {
            Kind::Granted => Some(ConsentStatus::Granted),
            Kind::Withdrawn => Some(ConsentStatus::Withdrawn),
            Kind::Denied => Some(ConsentStatus::Denied),
            _ => None,
        }
    }

    fn dnc(self) -> Option<DncType> {
        match self {
            Kind::Federal => Some(DncType::Federal),
            Kind::State => Some(DncType::State),
            Kind::Corporate => Some(DncType::Corporate),
            Kind::Personal => Some(DncType::Personal),
            Kind::Litigator => Some(DncType::Litigator),
            _ => None,
        }
    }
}

/// One consent record or DNC entry as decisions read it.
///
/// `a`: seq (48 bits) and the low 16 bits of the name (category or list); `b`: effective
/// time (48 bits), channels (6), purposes (3) and the removed flag; `c`/`d`: expiry (48
/// bits, NO_TIME for none); `e`: the name's high 8 bits. Times are milliseconds, which the
/// rules compare at; they lie in MIN_TIME..=MAX_TIME, below 2^48.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Packed {
    a: u64,
    b: u64,
    c: u32,
    d: u16,
    kind: Kind,
    e: u8,
}

fn time48(t: Millis) -> u64 {
    t.clamp(0, MAX_TIME) as u64
}

fn opt_time48(t: Option<Millis>) -> u64 {
    t.map_or(NO_TIME, time48)
}

impl Packed {
    fn new(seq: u64, name: NameId, kind: Kind, b: u64, expires: Option<Millis>) -> Packed {
        assert!(seq <= LOW48, "seq {seq} does not fit the index's 48 bits");
        let exp = opt_time48(expires);
        Packed {
            a: (seq << 16) | (name & 0xffff) as u64,
            b,
            c: exp as u32,
            d: (exp >> 32) as u16,
            kind,
            e: (name >> 16) as u8,
        }
    }

    pub(crate) fn consent(c: &ConsentFact) -> Packed {
        let name = c.category.map_or(0, |n| NAMES.intern(n));
        let b = (time48(c.effective_at) << 16)
            | (((c.channels.0 & 0x3f) as u64) << 10)
            | (((c.purposes.0 & 0x7) as u64) << 7);
        Packed::new(c.seq, name, Kind::of_status(c.status), b, c.expires_at)
    }

    pub(crate) fn dnc(d: &DncFact) -> Packed {
        let name = d.list.map_or(0, |n| NAMES.intern(n));
        let b = (d.removed as u64) << 6;
        Packed::new(d.seq, name, Kind::of_dnc(d.dnc_type), b, d.expires_at)
    }

    pub(crate) fn seq(&self) -> u64 {
        self.a >> 16
    }

    fn name(&self) -> Option<&'static str> {
        let id = ((self.e as u32) << 16) | (self.a & 0xffff) as u32;
        (id != 0).then(|| NAMES.get(id))
    }

    fn expires(&self) -> Option<Millis> {
        let t = (self.c as u64) | ((self.d as u64) << 32);
        (t != NO_TIME).then_some(t as Millis)
    }

    /// Into `out`'s consents or DNC entries, by kind.
    fn decode_into(&self, out: &mut ContactFacts) {
        if let Some(status) = self.kind.status() {
            out.consents.push(ConsentFact {
                seq: self.seq(),
                effective_at: (self.b >> 16) as Millis,
                expires_at: self.expires(),
                status,
                channels: ChannelSet(((self.b >> 10) & 0x3f) as u16),
                purposes: PurposeSet(((self.b >> 7) & 0x7) as u16),
                category: self.name(),
            });
        } else if let Some(dnc_type) = self.kind.dnc() {
            out.dnc.push(DncFact {
                seq: self.seq(),
                dnc_type,
                list: self.name(),
                expires_at: self.expires(),
                removed: (self.b >> 6) & 1 == 1,
            });
        }
    }
}

/// More than one fact, a person link or inbound times: behind one pointer.
#[derive(Clone, PartialEq)]
pub(crate) struct Spill {
    /// Consents in seq order, then DNC entries in seq order.
    facts: Box<[Packed]>,
    person: Option<Box<str>>,
    last_inbound: Option<Box<[Millis; 6]>>,
}

/// What the map holds for one identifier: 24 bytes, like one fact.
#[derive(Clone, PartialEq)]
pub(crate) enum Slot {
    One(Packed),
    Many(Box<Spill>),
}

impl Slot {
    /// None when nothing is left to hold (the map entry goes).
    pub(crate) fn encode(f: &ContactFacts) -> Option<Slot> {
        let n = f.consents.len() + f.dnc.len();
        if n == 0 && f.person.is_none() && f.last_inbound.is_none() {
            return None;
        }
        if n == 1 && f.person.is_none() && f.last_inbound.is_none() {
            let p = match f.consents.first() {
                Some(c) => Packed::consent(c),
                None => Packed::dnc(&f.dnc[0]),
            };
            return Some(Slot::One(p));
        }
        let facts: Box<[Packed]> = f
            .consents
            .iter()
            .map(Packed::consent)
            .chain(f.dnc.iter().map(Packed::dnc))
            .collect();
        Some(Slot::Many(Box::new(Spill {
            facts,
            person: f.person.clone(),
            last_inbound: f.last_inbound.map(Box::new),
        })))
    }

    fn facts(&self) -> &[Packed] {
        match self {
            Slot::One(p) => std::slice::from_ref(p),
            Slot::Many(s) => &s.facts,
        }
    }

    pub(crate) fn person(&self) -> Option<&str> {
        match self {
            Slot::One(_) => None,
            Slot::Many(s) => s.person.as_deref(),
        }
    }

    pub(crate) fn holds(&self, seq: u64) -> bool {
        self.facts().iter().any(|p| p.seq() == seq)
    }

    /// The seqs of every fact held (consents first).
    pub(crate) fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.facts().iter().map(Packed::seq)
    }

    /// Everything but the person link into `out`, allocating nothing for up to four
    /// consents and four DNC entries: the decision path.
    pub(crate) fn decode_facts(&self, out: &mut ContactFacts) {
        for p in self.facts() {
            p.decode_into(out);
        }
        if let Slot::Many(s) = self {
            out.last_inbound = s.last_inbound.as_deref().copied();
        }
    }

    pub(crate) fn decode(&self) -> ContactFacts {
        let mut out = ContactFacts::new();
        self.decode_facts(&mut out);
        out.person = self.person().map(Into::into);
        out
    }

    /// Heap bytes behind this slot, at the allocator's size classes (the slot itself is
    /// counted with the map).
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Slot::One(_) => 0,
            Slot::Many(s) => {
                size_class(std::mem::size_of::<Spill>())
                    + size_class(s.facts.len() * std::mem::size_of::<Packed>())
                    + s.person.as_ref().map_or(0, |p| size_class(p.len()))
                    + s.last_inbound.as_ref().map_or(0, |_| size_class(48))
            }
        }
    }
}

/// The size jemalloc (the service's allocator) serves a request of `n` bytes from: 8, 16,
/// then four classes per doubling.
pub(crate) fn size_class(n: usize) -> usize {
    match n {
        0 => 0,
        1..=8 => 8,
        9..=16 => 16,
        _ => {
            let step = (1usize << (usize::BITS - (n - 1).leading_zeros() - 3)).max(16);
            n.div_ceil(step) * step
        }
    }
}

/// Reading a stored image: what went wrong, for the caller to name the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Format(String),
}

impl Kind {
    fn from_byte(b: u8) -> Result<Kind, ImageError> {
        Ok(match b {
            0 => Kind::Granted,
            1 => Kind::Withdrawn,
            2 => Kind::Denied,
            3 => Kind::Federal,
            4 => Kind::State,
            5 => Kind::Corporate,
            6 => Kind::Personal,
            7 => Kind::Litigator,
            _ => return Err(ImageError::Format(format!("unknown fact kind {b}"))),
        })
    }
}

impl Packed {
    /// The raw form, with the name as this process numbers it.
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.a.to_le_bytes());
        out.extend_from_slice(&self.b.to_le_bytes());
        out.extend_from_slice(&self.c.to_le_bytes());
        out.extend_from_slice(&self.d.to_le_bytes());
        out.push(self.kind as u8);
        out.push(self.e);
    }

    /// Back from `write`'s form; `names` turns the writer's name ids into this process's.
    fn read(r: &mut super::image::Reader<'_>, names: &[NameId]) -> Result<Packed, ImageError> {
        let a = r.u64()?;
        let b = r.u64()?;
        let c = r.u32()?;
        let d = r.u16()?;
        let kind = Kind::from_byte(r.u8()?)?;
        let e = r.u8()?;
        let old = ((e as u32) << 16) | (a & 0xffff) as u32;
        let new = if old == 0 {
            0
        } else {
            *names
                .get(old as usize)
                .ok_or_else(|| ImageError::Format(format!("name id {old} not in the image")))?
        };
        Ok(Packed {
            a: (a & !0xffff) | (new & 0xffff) as u64,
            b,
            c,
            d,
            kind,
            e: (new >> 16) as u8,
        })
    }
}

impl Slot {
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self {
            Slot::One(p) => {
                out.push(0);
                p.write(out);
            }
            Slot::Many(s) => {
                out.push(1);
                out.extend_from_slice(&(s.facts.len() as u32).to_le_bytes());
                for p in s.facts.iter() {
                    p.write(out);
                }
                super::image::write_opt_str(out, s.person.as_deref());
                match &s.last_inbound {
                    Some(t) => {
                        out.push(1);
                        for x in t.iter() {
                            out.extend_from_slice(&x.to_le_bytes());
                        }
                    }
                    None => out.push(0),
                }
            }
        }
    }

    pub(crate) fn read(
        r: &mut super::image::Reader<'_>,
        names: &[NameId],
    ) -> Result<Slot, ImageError> {
        match r.u8()? {
            0 => Ok(Slot::One(Packed::read(r, names)?)),
            1 => {
                let n = r.u32()? as usize;
                // Sized once (a collect grows and shrinks), within what a damaged count
                // could ask for before the reads past the end refuse it.
                let mut facts = Vec::with_capacity(n.min(1 << 12));
                for _ in 0..n {
                    facts.push(Packed::read(r, names)?);
                }
                let facts = facts.into_boxed_slice();
                let person = r.opt_str()?;
                let last_inbound = match r.u8()? {
                    0 => None,
                    _ => {
                        let mut t = [0; 6];
                        for x in t.iter_mut() {
                            *x = r.u64()? as Millis;
                        }
                        Some(Box::new(t))
                    }
                };
                Ok(Slot::Many(Box::new(Spill {
                    facts,
                    person,
                    last_inbound,
                })))
            }
            t => Err(ImageError::Format(format!("unknown slot tag {t}"))),
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.decode().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Channel, Purpose};

    #[test]
    fn a_slot_is_as_small_as_one_fact() {
        assert_eq!(std::mem::size_of::<Packed>(), 24);
        assert_eq!(std::mem::size_of::<Slot>(), 24);
    }

    #[test]
    fn size_classes_follow_jemalloc() {
        let got: Vec<usize> = [1, 9, 17, 33, 48, 49, 129, 200, 257, 1000]
            .map(size_class)
            .to_vec();
        assert_eq!(got, [8, 16, 32, 48, 48, 64, 160, 224, 320, 1024]);
    }

    #[test]
    fn facts_survive_packing() {
        let mut f = ContactFacts::new();
        f.consents.push(ConsentFact {
            seq: (1 << 48) - 1,
            effective_at: MAX_TIME,
            expires_at: Some(0),
            status: ConsentStatus::Denied,
            channels: ChannelSet::of(&[Channel::Social, Channel::Voice]),
            purposes: PurposeSet::of(&[Purpose::Security]),
            category: Some("newsletter"),
        });
        f.consents.push(ConsentFact {
            seq: 7,
            effective_at: 0,
            expires_at: None,
            status: ConsentStatus::Granted,
            channels: ChannelSet::all(),
            purposes: PurposeSet::all(),
            category: None,
        });
        for (i, t) in DncType::ALL.iter().enumerate() {
            f.dnc.push(DncFact {
                seq: 100 + i as u64,
                dnc_type: *t,
                list: (i % 2 == 0).then_some("company-list"),
                expires_at: (i % 2 == 1).then_some(1_700_000_000_000),
                removed: i == 3,
            });
        }
        let one = ContactFacts {
            dnc: f.dnc[..1].iter().cloned().collect(),
            ..ContactFacts::new()
        };
        assert!(matches!(Slot::encode(&one), Some(Slot::One(_))));
        assert_eq!(Slot::encode(&one).unwrap().decode(), one);
        f.person = Some("crm-42".into());
        f.last_inbound = Some([0, 5, 0, 0, 0, 9]);
        assert_eq!(Slot::encode(&f).unwrap().decode(), f);
        assert!(Slot::encode(&ContactFacts::new()).is_none());
    }
}
