//! What the index knows about one identifier: a compact, decision-only form kept inline in
//! the map (one cache miss per lookup), and the shape of the full records reports read
//! from the store.
use crate::model::{
    Channel, ChannelSet, ConsentEvent, ConsentStatus, DncAddEvent, DncType, Millis, PurposeSet,
};
use smallvec::SmallVec;

/// The decision-relevant part of a consent record.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsentFact {
    pub seq: u64,
    pub effective_at: Millis,
    pub expires_at: Option<Millis>,
    pub status: ConsentStatus,
    pub channels: ChannelSet,
    pub purposes: PurposeSet,
    /// Interned: categories are few.
    pub category: Option<&'static str>,
}

impl ConsentFact {
    pub fn of(seq: u64, c: &ConsentEvent) -> ConsentFact {
        ConsentFact {
            seq,
            effective_at: c.effective_at,
            expires_at: c.expires_at,
            status: c.status,
            channels: c.channels,
            purposes: c.purposes,
            category: c.category.as_deref().map(interned),
        }
    }
}

/// The decision-relevant part of a DNC entry.
#[derive(Clone, Debug, PartialEq)]
pub struct DncFact {
    pub seq: u64,
    pub dnc_type: DncType,
    /// Interned: list names are few.
    pub list: Option<&'static str>,
    pub expires_at: Option<Millis>,
    pub removed: bool,
}

impl DncFact {
    pub fn of(seq: u64, d: &DncAddEvent) -> DncFact {
        DncFact {
            seq,
            dnc_type: d.dnc_type,
            list: d.list.as_deref().map(interned),
            expires_at: d.expires_at,
            removed: false,
        }
    }

    /// In force at `at`: not removed and not expired.
    pub fn is_active(&self, at: Millis) -> bool {
        !self.removed && self.expires_at.is_none_or(|e| e > at)
    }
}

/// The name's one shared copy.
fn interned(name: &str) -> &'static str {
    super::names::NAMES.get(super::names::NAMES.intern(name))
}

/// An identifier's facts decoded for a decision (see `packed` for how they are stored):
/// inline up to four of each, so the check path allocates nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContactFacts {
    /// In seq order.
    pub consents: SmallVec<[ConsentFact; 4]>,
    /// In seq order, archived entries included until their retention date.
    pub dnc: SmallVec<[DncFact; 4]>,
    /// The person (external id) this identifier is linked to.
    pub person: Option<Box<str>>,
    /// Last inbound message time per channel (0: none).
    pub last_inbound: Option<[Millis; 6]>,
}

impl ContactFacts {
    pub const fn new() -> Self {
        ContactFacts {
            consents: SmallVec::new_const(),
            dnc: SmallVec::new_const(),
            person: None,
            last_inbound: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.consents.is_empty()
            && self.dnc.is_empty()
            && self.person.is_none()
            && self.last_inbound.is_none()
    }

    /// Takes in the consent records and DNC entries of `other` (what an identifier's token
    /// holds once it was erased), keeping seq order.
    pub(crate) fn absorb(&mut self, other: ContactFacts) {
        for c in other.consents {
            if !self.consents.iter().any(|x| x.seq == c.seq) {
                self.consents.push(c);
            }
        }
        for d in other.dnc {
            if !self.dnc.iter().any(|x| x.seq == d.seq) {
                self.dnc.push(d);
            }
        }
        self.consents.sort_by_key(|c| c.seq);
        self.dnc.sort_by_key(|d| d.seq);
    }

    pub fn last_inbound_on(&self, channel: Channel) -> Option<Millis> {
        let t = self.last_inbound.as_ref()?[channel_slot(channel)];
        (t != 0).then_some(t)
    }

    pub(crate) fn record_inbound(&mut self, channel: Channel, at: Millis) {
        let slots = self.last_inbound.get_or_insert([0; 6]);
        let slot = &mut slots[channel_slot(channel)];
        *slot = (*slot).max(at);
    }
}

const fn channel_slot(c: Channel) -> usize {
    match c {
        Channel::Voice => 0,
        Channel::Sms => 1,
        Channel::Whatsapp => 2,
        Channel::Email => 3,
        Channel::Chat => 4,
        Channel::Social => 5,
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Removal {
    pub seq: u64,
    pub at: Millis,
    pub actor: String,
    pub reason: String,
    pub retain_until: Millis,
}

/// A full consent record, for reports.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsentView {
    pub seq: u64,
    pub recorded_at: Millis,
    pub record: ConsentEvent,
}

/// A full DNC entry with its archive state, for reports.
#[derive(Clone, Debug, PartialEq)]
pub struct DncView {
    pub seq: u64,
    pub added_at: Millis,
    pub entry: DncAddEvent,
    pub removal: Option<Removal>,
}

impl DncView {
    pub fn is_active(&self, at: Millis) -> bool {
        self.removal.is_none() && self.entry.expires_at.is_none_or(|e| e > at)
    }
}

/// Everything held about one identifier, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContactReport {
    pub consents: Vec<ConsentView>,
    pub dnc: Vec<DncView>,
}
