//! The embedded store's subject index (which audit records name a person, by token): recent
//! records appended by seq, and immutable sorted runs that they are sorted into in bulk.
//!
//! Tokens are keyed hashes, so a B-tree keyed by token takes every write at a random leaf:
//! each record of a 1,000-record write copied and rewrote a 4 KiB page of its own, which
//! cost more than the rest of the write. Appending by seq touches the tree's right edge
//! only; sorting 16,384 records at a time and merging runs four at a time (up to a million
//! entries a run) writes each entry a few times in large sequential chunks instead.
//!
//! An entry is the token (16 bytes) then the audit seq (8, big-endian), so byte order is
//! (token, seq) order. A run is stored as chunks of up to `CHUNK` entries keyed by
//! (run id, the chunk's first entry); a lookup reads the chunks that can hold the token.
use super::StoreError;
use crate::model::Token;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Audit seq -> the tokens the record names (16 bytes each), not yet in a run.
pub const RECENT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_subjects_recent");
/// (run id, the chunk's first entry) -> the chunk's entries, sorted.
pub const RUNS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("audit_subject_runs");
/// Run id -> its entry count.
pub const RUN_SIZES: TableDefinition<u64, u64> = TableDefinition::new("audit_subject_run_sizes");
/// Earlier versions' index, one B-tree entry a (token, seq); folded into a run at open.
pub const LEGACY: TableDefinition<(&[u8], u64), ()> = TableDefinition::new("audit_subjects");

const TOKEN: usize = 16;
const ENTRY: usize = TOKEN + 8;
type Entry = [u8; ENTRY];

/// Entries a chunk holds: 48 KiB, a few pages, one value. (Tests use small sizes so that
/// runs, chunk edges and merges come up within a few hundred records.)
const CHUNK: usize = if cfg!(test) { 8 } else { 2048 };
/// Recent records that are sorted into a run together.
const FLUSH_AT: u64 = if cfg!(test) { 16 } else { 16_384 };
/// Runs of one size class that are merged into one.
const FAN_IN: usize = 4;
/// Size classes that are merged further: runs stop growing at about 16,384 × 4^3 records'
/// entries (a million and more), so one merge never holds up writes for long.
const MAX_TIER: u32 = 3;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(format!("audit subject index: {what}"))
}

fn entry(token: &[u8], seq: u64) -> Entry {
    let mut e = [0u8; ENTRY];
    e[..TOKEN].copy_from_slice(token);
    e[TOKEN..].copy_from_slice(&seq.to_be_bytes());
    e
}

fn seq_of(e: &Entry) -> u64 {
    u64::from_be_bytes(
        e[TOKEN..]
            .try_into()
            .expect("an entry ends with 8 bytes of seq"),
    )
}

/// A run's size class: 0 for a fresh run, one more for every fourfold.
fn tier(entries: u64) -> u32 {
    let mut n = entries / FLUSH_AT;
    let mut t = 0;
    while n >= FAN_IN as u64 {
        n /= FAN_IN as u64;
        t += 1;
    }
    t
}

/// The four tables, from a read or a write transaction.
pub struct SubjectTables<L, R, S, C> {
    pub legacy: L,
    pub recent: R,
    pub sizes: S,
    pub runs: C,
}

pub type WriteTables<'t> = SubjectTables<
    redb::Table<'t, (&'static [u8], u64), ()>,
    redb::Table<'t, u64, &'static [u8]>,
    redb::Table<'t, u64, u64>,
    redb::Table<'t, (u64, &'static [u8]), &'static [u8]>,
>;

pub type ReadTables = SubjectTables<
    redb::ReadOnlyTable<(&'static [u8], u64), ()>,
    redb::ReadOnlyTable<u64, &'static [u8]>,
    redb::ReadOnlyTable<u64, u64>,
    redb::ReadOnlyTable<(u64, &'static [u8]), &'static [u8]>,
>;

pub fn open_write(txn: &WriteTransaction) -> Result<WriteTables<'_>, StoreError> {
    Ok(SubjectTables {
        legacy: txn.open_table(LEGACY).map_err(unavailable)?,
        recent: txn.open_table(RECENT).map_err(unavailable)?,
        sizes: txn.open_table(RUN_SIZES).map_err(unavailable)?,
        runs: txn.open_table(RUNS).map_err(unavailable)?,
    })
}

pub fn open_read(txn: &redb::ReadTransaction) -> Result<ReadTables, StoreError> {
    Ok(SubjectTables {
        legacy: txn.open_table(LEGACY).map_err(unavailable)?,
        recent: txn.open_table(RECENT).map_err(unavailable)?,
        sizes: txn.open_table(RUN_SIZES).map_err(unavailable)?,
        runs: txn.open_table(RUNS).map_err(unavailable)?,
    })
}

impl<L, R, S, C> SubjectTables<L, R, S, C>
where
    L: ReadableTable<(&'static [u8], u64), ()>,
    R: ReadableTable<u64, &'static [u8]>,
    S: ReadableTable<u64, u64>,
    C: ReadableTable<(u64, &'static [u8]), &'static [u8]>,
{
    /// The audit seqs of the records that name `token`, ascending.
    pub fn seqs_of(&self, token: &Token) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        let range = self
            .legacy
            .range((token.as_slice(), 0u64)..=(token.as_slice(), u64::MAX))
            .map_err(unavailable)?;
        for item in range {
            out.push(item.map_err(unavailable)?.0.value().1);
        }
        for run in self.sizes.iter().map_err(unavailable)? {
            let id = run.map_err(unavailable)?.0.value();
            self.run_seqs(id, token, &mut out)?;
        }
        for item in self.recent.iter().map_err(unavailable)? {
            let (seq, tokens) = item.map_err(unavailable)?;
            if tokens.value().chunks_exact(TOKEN).any(|t| t == token) {
                out.push(seq.value());
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Adds to `out` the seqs run `id` holds for `token`: from the chunk before the first
    /// entry the token could have (its tail may hold some) to the last chunk starting
    /// within the token's entries.
    fn run_seqs(&self, id: u64, token: &Token, out: &mut Vec<u64>) -> Result<(), StoreError> {
        let lo = entry(token, 0);
        let hi = entry(token, u64::MAX);
        let before = self
            .runs
            .range((id, &[][..])..(id, &lo[..]))
            .map_err(unavailable)?
            .next_back()
            .transpose()
            .map_err(unavailable)?;
        let mut scan = |chunk: &[u8]| -> Result<(), StoreError> {
            let entries = checked(id, chunk)?;
            let first = entries.partition_point(|e| e[..TOKEN] < token[..]);
            out.extend(
                entries[first..]
                    .iter()
                    .take_while(|e| e[..TOKEN] == token[..])
                    .map(seq_of),
            );
            Ok(())
        };
        if let Some((_, chunk)) = &before {
            scan(chunk.value())?;
        }
        for item in self
            .runs
            .range((id, &lo[..])..=(id, &hi[..]))
            .map_err(unavailable)?
        {
            scan(item.map_err(unavailable)?.1.value())?;
        }
        Ok(())
    }

    /// Every entry of run `id`, in order.
    fn run_entries(&self, id: u64) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .runs
            .range((id, &[][..])..(id + 1, &[][..]))
            .map_err(unavailable)?
        {
            let chunk = item.map_err(unavailable)?.1;
            out.extend_from_slice(checked(id, chunk.value())?);
        }
        Ok(out)
    }
}

/// A chunk of run `id` as its entries, refused when it cannot be whole entries.
fn checked(id: u64, chunk: &[u8]) -> Result<&[Entry], StoreError> {
    let (entries, rest) = chunk.as_chunks::<ENTRY>();
    if rest.is_empty() {
        Ok(entries)
    } else {
        Err(corrupt(format!(
            "a chunk of run {id} is {} bytes, not a multiple of {ENTRY}",
            chunk.len()
        )))
    }
}

impl WriteTables<'_> {
    /// Notes that audit record `seq` names `tokens`.
    pub fn add(&mut self, seq: u64, tokens: &[Token]) -> Result<(), StoreError> {
        if tokens.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = tokens.iter().flatten().copied().collect();
        self.recent
            .insert(seq, bytes.as_slice())
            .map_err(unavailable)?;
        Ok(())
    }

    /// Sorts the recent records into a run once there are enough of them, and merges runs
    /// of one size class once there are `FAN_IN` of them; in the caller's transaction.
    pub fn maintain(&mut self) -> Result<(), StoreError> {
        if self.recent.len().map_err(unavailable)? < FLUSH_AT {
            return Ok(());
        }
        self.flush_recent()?;
        while let Some(ids) = self.mergeable()? {
            self.merge(&ids)?;
        }
        Ok(())
    }

    /// Sorts every recent record's entries into a new run (also used before a fold).
    fn flush_recent(&mut self) -> Result<(), StoreError> {
        let mut entries = Vec::new();
        for item in self.recent.iter().map_err(unavailable)? {
            let (seq, tokens) = item.map_err(unavailable)?;
            let tokens = tokens.value();
            if !tokens.len().is_multiple_of(TOKEN) {
                return Err(corrupt(format!(
                    "record {} names {} bytes of tokens",
                    seq.value(),
                    tokens.len()
                )));
            }
            entries.extend(tokens.chunks_exact(TOKEN).map(|t| entry(t, seq.value())));
        }
        entries.sort_unstable();
        entries.dedup();
        self.recent.retain(|_, _| false).map_err(unavailable)?;
        self.write_run(entries.into_iter())
    }

    fn write_run(&mut self, entries: impl Iterator<Item = Entry>) -> Result<(), StoreError> {
        write_run(&mut self.sizes, &mut self.runs, entries)
    }

    /// The oldest `FAN_IN` runs of the first size class below `MAX_TIER` that has as many.
    fn mergeable(&self) -> Result<Option<Vec<u64>>, StoreError> {
        let mut by_tier: Vec<Vec<u64>> = vec![Vec::new(); MAX_TIER as usize];
        for run in self.sizes.iter().map_err(unavailable)? {
            let (id, n) = run.map_err(unavailable)?;
            let t = tier(n.value());
            if t < MAX_TIER {
                by_tier[t as usize].push(id.value());
            }
        }
        Ok(by_tier
            .into_iter()
            .find(|ids| ids.len() >= FAN_IN)
            .map(|ids| ids[..FAN_IN].to_vec()))
    }

    /// Replaces runs `ids` by one run holding all their entries.
    fn merge(&mut self, ids: &[u64]) -> Result<(), StoreError> {
        let runs: Vec<Vec<Entry>> = ids
            .iter()
            .map(|id| self.run_entries(*id))
            .collect::<Result<_, _>>()?;
        let mut heads: BinaryHeap<Reverse<(Entry, usize, usize)>> = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(k, r)| Reverse((r[0], k, 0)))
            .collect();
        let merged = std::iter::from_fn(|| {
            let Reverse((e, k, i)) = heads.pop()?;
            if let Some(next) = runs[k].get(i + 1) {
                heads.push(Reverse((*next, k, i + 1)));
            }
            Some(e)
        });
        let mut last: Option<Entry> = None;
        let unique = merged.filter(|e| {
            let fresh = last.as_ref() != Some(e);
            last = Some(*e);
            fresh
        });
        self.write_run(unique)?;
        for id in ids {
            self.runs
                .retain_in((*id, &[][..])..(*id + 1, &[][..]), |_, _| false)
                .map_err(unavailable)?;
            self.sizes.remove(*id).map_err(unavailable)?;
        }
        Ok(())
    }

    /// Moves an earlier version's index into a run; returns how many entries it held.
    pub fn fold_legacy(&mut self) -> Result<u64, StoreError> {
        let n = self.legacy.len().map_err(unavailable)?;
        if n == 0 {
            return Ok(0);
        }
        // B-tree order is (token, seq) order: the entries stream into one run as they are.
        let mut bad = None;
        let entries = self
            .legacy
            .iter()
            .map_err(unavailable)?
            .map_while(|item| match item {
                Ok((k, _)) => {
                    let (token, seq) = k.value();
                    if token.len() == TOKEN {
                        Some(entry(token, seq))
                    } else {
                        bad = Some(corrupt(format!("a token of {} bytes", token.len())));
                        None
                    }
                }
                Err(e) => {
                    bad = Some(unavailable(e));
                    None
                }
            });
        write_run(&mut self.sizes, &mut self.runs, entries)?;
        if let Some(e) = bad {
            return Err(e);
        }
        self.legacy.retain(|_, _| false).map_err(unavailable)?;
        Ok(n)
    }
}

/// Stores sorted `entries` as a new run, after every existing one.
fn write_run(
    sizes: &mut redb::Table<'_, u64, u64>,
    runs: &mut redb::Table<'_, (u64, &'static [u8]), &'static [u8]>,
    entries: impl Iterator<Item = Entry>,
) -> Result<(), StoreError> {
    let id = sizes
        .last()
        .map_err(unavailable)?
        .map_or(0, |(id, _)| id.value() + 1);
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK * ENTRY);
    let mut count = 0u64;
    let mut put = |chunk: &[u8]| {
        runs.insert((id, &chunk[..ENTRY]), chunk)
            .map(|_| ())
            .map_err(unavailable)
    };
    for e in entries {
        chunk.extend_from_slice(&e);
        count += 1;
        if chunk.len() == CHUNK * ENTRY {
            put(&chunk)?;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        put(&chunk)?;
    }
    if count > 0 {
        sizes.insert(id, count).map_err(unavailable)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
