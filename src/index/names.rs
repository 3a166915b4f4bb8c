//! Consent categories and DNC list names, interned to 24-bit ids so a fact stores three
//! bytes instead of a string. Such names are few (a company's lists and categories), so
//! each is kept for the life of the process and read without a lock.
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

pub(crate) type NameId = u32;

/// Ids run 1..MAX_NAMES; 0 is "no name".
const SEGMENTS: usize = 24;
pub(crate) const MAX_NAMES: u32 = (1 << SEGMENTS) - 1;

/// Segment `s` holds ids `2^s ..= 2^(s+1)-1`, so the table grows without moving what
/// readers already see.
pub(crate) struct Names {
    ids: Mutex<BTreeMap<&'static str, NameId>>,
    segments: [OnceLock<Box<[OnceLock<&'static str>]>>; SEGMENTS],
}

pub(crate) static NAMES: Names = Names::new();

impl Names {
    const fn new() -> Names {
        Names {
            ids: Mutex::new(BTreeMap::new()),
            segments: [const { OnceLock::new() }; SEGMENTS],
        }
    }

    fn place(id: NameId) -> (usize, usize) {
        let seg = (31 - id.leading_zeros()) as usize;
        (seg, (id - (1 << seg)) as usize)
    }

    /// The id of `name`, assigned on first sight.
    ///
    /// # Panics
    /// When more than MAX_NAMES distinct names were seen: callers bound name lengths and
    /// names are lists and categories, so this means misuse, and the index must not store
    /// a fact under the wrong name.
    pub(crate) fn intern(&self, name: &str) -> NameId {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = ids.get(name) {
            return *id;
        }
        let id = ids.len() as NameId + 1;
        assert!(
            id <= MAX_NAMES,
            "more than {MAX_NAMES} distinct list and category names"
        );
        let name: &'static str = Box::leak(name.into());
        let (seg, at) = Self::place(id);
        let slots = self.segments[seg].get_or_init(|| {
            (0..1usize << seg)
                .map(|_| OnceLock::new())
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        let _ = slots[at].set(name);
        ids.insert(name, id);
        id
    }

    /// The name behind an id this table gave out.
    pub(crate) fn get(&self, id: NameId) -> &'static str {
        let (seg, at) = Self::place(id);
        self.segments[seg]
            .get()
            .and_then(|s| s[at].get())
            .copied()
            .expect("name ids come from this table")
    }

    /// Every name with its id, in id order (for an index image).
    pub(crate) fn all(&self) -> Vec<(NameId, &'static str)> {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(NameId, &'static str)> = ids.iter().map(|(k, v)| (*v, *k)).collect();
        v.sort_unstable();
        v
    }

    /// Distinct names held and the bytes they take.
    pub(crate) fn usage(&self) -> (usize, usize) {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = ids.keys().map(|k| k.len() + 40).sum();
        (ids.len(), bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_across_segments() {
        let n = Names::new();
        let ids: Vec<NameId> = (0..300).map(|i| n.intern(&format!("list-{i}"))).collect();
        assert_eq!(ids[0], 1);
        assert_eq!(n.intern("list-7"), ids[7]);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(n.get(*id), format!("list-{i}"));
        }
    }
}
