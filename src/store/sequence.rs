//! A numbered sequence of records in redb (the change log, the audit trail): runs of records
//! as compressed blocks keyed by their first seq, then the newest records one by one (the
//! tail) until there are enough for a block.
//!
//! The tail tables are the ones every earlier build wrote record by record, so a data
//! directory from before blocks existed reads as one long tail, and `fold` turns it into
//! blocks in steps.
use super::StoreError;
use super::blocks::{self, Item};
use redb::{ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

pub type Def = TableDefinition<'static, u64, &'static [u8]>;

/// Bytes a block aims to stay under. redb gives a value larger than a page a run of pages
/// rounded up to a power of two, so a block just over 16 KiB would take 32 KiB: blocks are
/// sized to fill one 32 KiB run (less room for the page's own header).
const TARGET: usize = 32 * 1024 - 256;
/// The share of `TARGET` a block is sized for, so that most land under it first time.
const FILL: f64 = 0.93;
/// Bounds on the records of one block: reading one record back decompresses its block.
const MIN_RECORDS: usize = 16;
const MAX_RECORDS: usize = 1024;
const FIRST_RECORDS: usize = 128;

/// How many records the next block of a sequence takes, learnt from the compressed size
/// of the blocks written before it (records of one kind compress alike).
#[derive(Clone, Copy, Debug)]
pub struct Sizing {
    bytes_per_record: f64,
}

impl Default for Sizing {
    fn default() -> Self {
        Sizing {
            bytes_per_record: TARGET as f64 * FILL / FIRST_RECORDS as f64,
        }
    }
}

impl Sizing {
    pub fn records(&self) -> usize {
        ((TARGET as f64 * FILL / self.bytes_per_record) as usize).clamp(MIN_RECORDS, MAX_RECORDS)
    }

    fn learn(&mut self, records: usize, bytes: usize) {
        let seen = bytes as f64 / records.max(1) as f64;
        self.bytes_per_record = 0.2 * self.bytes_per_record + 0.8 * seen.max(1.0);
    }
}

/// The tables of one sequence.
#[derive(Clone, Copy)]
pub struct Tables {
    pub blocks: Def,
    /// Tail: each record's main part.
    pub main: Def,
    /// Tail: each record's second part, where records have one.
    pub extra: Option<Def>,
    /// What the records are, for errors.
    pub what: &'static str,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(t: &Tables, first: u64, e: String) -> StoreError {
    StoreError::Corrupt(format!("{} block at {first}: {e}", t.what))
}

/// The open tables of a sequence inside one transaction, read-only or writable.
pub struct Open<T> {
    pub def: Tables,
    pub blocks: T,
    pub main: T,
    pub extra: Option<T>,
}

impl<T> Open<T> {
    /// The tables of `def`, each opened by `open` (read and write transactions open tables
    /// through different methods).
    fn with<E: std::fmt::Display>(
        def: Tables,
        mut open: impl FnMut(Def) -> Result<T, E>,
    ) -> Result<Self, StoreError> {
        Ok(Open {
            def,
            blocks: open(def.blocks).map_err(unavailable)?,
            main: open(def.main).map_err(unavailable)?,
            extra: def.extra.map(&mut open).transpose().map_err(unavailable)?,
        })
    }
}

impl<'txn> Open<Table<'txn, u64, &'static [u8]>> {
    pub fn write(txn: &'txn WriteTransaction, def: Tables) -> Result<Self, StoreError> {
        Open::with(def, |d| txn.open_table(d))
    }
}

impl Open<redb::ReadOnlyTable<u64, &'static [u8]>> {
    pub fn read(txn: &redb::ReadTransaction, def: Tables) -> Result<Self, StoreError> {
        Open::with(def, |d| txn.open_table(d))
    }
}

impl<T: ReadableTable<u64, &'static [u8]>> Open<T> {
    /// The first seq held in the tail rather than in a block.
    pub fn tail_start(&self) -> Result<u64, StoreError> {
        match self.blocks.last().map_err(unavailable)? {
            None => Ok(1),
            Some((k, v)) => {
                let n = blocks::count(v.value()).map_err(|e| corrupt(&self.def, k.value(), e))?;
                Ok(k.value() + n as u64)
            }
        }
    }

    /// Records in the tail: it runs without a gap from `start` (the `tail_start`) to its
    /// last key.
    fn tail_len(&self, start: u64) -> Result<usize, StoreError> {
        Ok(match self.main.last().map_err(unavailable)? {
            Some((k, _)) if k.value() >= start => (k.value() - start + 1) as usize,
            _ => 0,
        })
    }

    fn tail_item(&self, seq: u64, main: &[u8]) -> Result<Item, StoreError> {
        let extra = match &self.extra {
            Some(t) => t.get(seq).map_err(unavailable)?.map(|v| v.value().to_vec()),
            None => None,
        };
        Ok(Item {
            main: main.to_vec(),
            extra,
        })
    }

    /// The block holding `seq` (its first seq and records), if a block does.
    fn block_of(&self, seq: u64) -> Result<Option<(u64, Vec<Item>)>, StoreError> {
        let Some(found) = self.blocks.range(..=seq).map_err(unavailable)?.next_back() else {
            return Ok(None);
        };
        let (k, v) = found.map_err(unavailable)?;
        let first = k.value();
        let items = blocks::decode(v.value()).map_err(|e| corrupt(&self.def, first, e))?;
        Ok(((seq - first) < items.len() as u64).then_some((first, items)))
    }

    /// Records with seq > `after`, at most `limit`, in order.
    pub fn range(&self, after: u64, limit: usize) -> Result<Vec<(u64, Item)>, StoreError> {
        let mut out = Vec::new();
        let from = after.saturating_add(1);
        let tail = self.tail_start()?;
        if from < tail && limit > 0 {
            // The block holding `from`, then the ones after it.
            let start = match self.blocks.range(..=from).map_err(unavailable)?.next_back() {
                Some(r) => r.map_err(unavailable)?.0.value(),
                None => from,
            };
            for r in self.blocks.range(start..).map_err(unavailable)? {
                let (k, v) = r.map_err(unavailable)?;
                let first = k.value();
                let items = blocks::decode(v.value()).map_err(|e| corrupt(&self.def, first, e))?;
                for (i, it) in items.into_iter().enumerate() {
                    let seq = first + i as u64;
                    if seq >= from && out.len() < limit {
                        out.push((seq, it));
                    }
                }
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        for r in self.main.range(from.max(tail)..).map_err(unavailable)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = r.map_err(unavailable)?;
            out.push((k.value(), self.tail_item(k.value(), v.value())?));
        }
        Ok(out)
    }

    /// The record at `seq`, if held.
    pub fn get(&self, seq: u64) -> Result<Option<Item>, StoreError> {
        if seq >= self.tail_start()? {
            return match self.main.get(seq).map_err(unavailable)? {
                Some(v) => Ok(Some(self.tail_item(seq, v.value())?)),
                None => Ok(None),
            };
        }
        Ok(self
            .block_of(seq)?
            .map(|(first, mut items)| items.swap_remove((seq - first) as usize)))
    }

    /// The newest record.
    pub fn last(&self) -> Result<Option<(u64, Item)>, StoreError> {
        if let Some(r) = self.main.last().map_err(unavailable)? {
            let (k, v) = r;
            return Ok(Some((k.value(), self.tail_item(k.value(), v.value())?)));
        }
        match self.blocks.last().map_err(unavailable)? {
            None => Ok(None),
            Some((k, v)) => {
                let first = k.value();
                let mut items =
                    blocks::decode(v.value()).map_err(|e| corrupt(&self.def, first, e))?;
                let n = items.len() as u64;
                Ok(items.pop().map(|it| (first + n - 1, it)))
            }
        }
    }

    /// The seq of the newest record; 0 when there is none.
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        if let Some((k, _)) = self.main.last().map_err(unavailable)? {
            return Ok(k.value());
        }
        Ok(self.tail_start()? - 1)
    }
}

impl Open<Table<'_, u64, &'static [u8]>> {
    fn put_tail(&mut self, seq: u64, it: &Item) -> Result<(), StoreError> {
        self.main
            .insert(seq, it.main.as_slice())
            .map_err(unavailable)?;
        if let Some(t) = &mut self.extra {
            match &it.extra {
                Some(e) => {
                    t.insert(seq, e.as_slice()).map_err(unavailable)?;
                }
                None => {
                    t.remove(seq).map_err(unavailable)?;
                }
            }
        }
        Ok(())
    }

    fn drop_tail(&mut self, seq: u64) -> Result<(), StoreError> {
        self.main.remove(seq).map_err(unavailable)?;
        if let Some(t) = &mut self.extra {
            t.remove(seq).map_err(unavailable)?;
        }
        Ok(())
    }

    /// Appends `new` (the seqs right after the last record, in order), then folds blocks
    /// off the front of the tail while it holds enough records for one: at most
    /// `max_blocks`, and only the tail's first `max_blocks * MAX_RECORDS` records are read.
    /// Returns the records folded.
    pub fn append(
        &mut self,
        new: Vec<(u64, Item)>,
        max_blocks: usize,
        sizing: &mut Sizing,
    ) -> Result<usize, StoreError> {
        let start = self.tail_start()?;
        if self.tail_len(start)? + new.len() < sizing.records() || max_blocks == 0 {
            for (seq, it) in &new {
                self.put_tail(*seq, it)?;
            }
            return Ok(0);
        }
        // The stored tail's first records, as many as `max_blocks` blocks could take.
        let room = max_blocks.saturating_mul(MAX_RECORDS);
        let mut items = Vec::new();
        for r in self.main.range(start..).map_err(unavailable)?.take(room) {
            let (k, v) = r.map_err(unavailable)?;
            items.push((k.value(), self.tail_item(k.value(), v.value())?));
        }
        let held: Vec<u64> = items.iter().map(|(seq, _)| *seq).collect();
        items.extend(new);
        if items[0].0 != start {
            return Err(StoreError::Corrupt(format!(
                "{} seq {} where the tail starts at {start}",
                self.def.what, items[0].0
            )));
        }
        for (i, pair) in items.windows(2).enumerate() {
            if pair[1].0 != pair[0].0 + 1 {
                return Err(StoreError::Corrupt(format!(
                    "{} seqs {} and {} follow each other at position {i} of the tail",
                    self.def.what, pair[0].0, pair[1].0
                )));
            }
        }
        let mut folded = 0;
        let mut written = 0;
        while written < max_blocks && items.len() - folded >= sizing.records() {
            let mut n = sizing.records();
            loop {
                let run = &items[folded..folded + n];
                let block = blocks::encode(run.iter().map(|(_, it)| it))
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", self.def.what)))?;
                if block.len() > TARGET && n > MIN_RECORDS {
                    // Over: fewer records, in proportion, and again.
                    n = ((n as f64 * TARGET as f64 / block.len() as f64 * 0.97) as usize)
                        .clamp(MIN_RECORDS, n - 1);
                    continue;
                }
                sizing.learn(n, block.len());
                self.blocks
                    .insert(run[0].0, block.as_slice())
                    .map_err(unavailable)?;
                break;
            }
            folded += n;
            written += 1;
        }
        for &seq in held.iter().take(folded) {
            self.drop_tail(seq)?;
        }
        for (seq, it) in &items[folded.max(held.len())..] {
            self.put_tail(*seq, it)?;
        }
        Ok(folded)
    }

    /// Replaces the record at `seq` (held: an erasure rewriting it). Returns false when no
    /// record has that seq.
    pub fn replace(&mut self, seq: u64, it: Item) -> Result<bool, StoreError> {
        if seq >= self.tail_start()? {
            if self.main.get(seq).map_err(unavailable)?.is_none() {
                return Ok(false);
            }
            self.put_tail(seq, &it)?;
            return Ok(true);
        }
        let Some((first, mut items)) = self.block_of(seq)? else {
            return Ok(false);
        };
        items[(seq - first) as usize] = it;
        let block = blocks::encode(&items)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", self.def.what)))?;
        self.blocks
            .insert(first, block.as_slice())
            .map_err(unavailable)?;
        Ok(true)
    }
}

/// Folds a tail longer than any block (a data directory written before blocks) into
/// blocks, one bounded transaction at a time; returns the records folded.
pub fn fold(db: &redb::Database, def: Tables) -> Result<u64, StoreError> {
    let mut total = 0u64;
    let mut sizing = Sizing::default();
    {
        // A tail this store wrote itself is shorter than a block; the writer folds it as
        // it grows (refolding it here would rewrite it in the default size on every start).
        let r = db.begin_read().map_err(unavailable)?;
        let open = Open::read(&r, def)?;
        if open.tail_len(open.tail_start()?)? <= MAX_RECORDS {
            return Ok(0);
        }
    }
    loop {
        let txn = db.begin_write().map_err(unavailable)?;
        let n = {
            let mut open = Open::write(&txn, def)?;
            open.append(Vec::new(), 256, &mut sizing)?
        };
        txn.commit().map_err(unavailable)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    const LOG: Tables = Tables {
        blocks: TableDefinition::new("t_blocks"),
        main: TableDefinition::new("t_main"),
        extra: Some(TableDefinition::new("t_extra")),
        what: "test",
    };

    fn item(seq: u64) -> Item {
        Item {
            main: format!("{{\"seq\":{seq},\"kind\":\"consent_recorded\"}}").into_bytes(),
            extra: (!seq.is_multiple_of(3)).then(|| format!("personal {seq}").into_bytes()),
        }
    }

    fn db() -> (tempfile::TempDir, redb::Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        (dir, db)
    }

    fn append(db: &redb::Database, seqs: std::ops::Range<u64>) {
        append_sized(db, seqs, &mut Sizing::default());
    }

    fn append_sized(db: &redb::Database, seqs: std::ops::Range<u64>, sizing: &mut Sizing) {
        let txn = db.begin_write().unwrap();
        Open::write(&txn, LOG)
            .unwrap()
            .append(seqs.map(|s| (s, item(s))).collect(), usize::MAX, sizing)
            .unwrap();
        txn.commit().unwrap();
    }

    fn tail_len(db: &redb::Database) -> u64 {
        let r = db.begin_read().unwrap();
        r.open_table(LOG.main).unwrap().len().unwrap()
    }

    fn all(db: &redb::Database) -> Vec<(u64, Item)> {
        let r = db.begin_read().unwrap();
        Open::read(&r, LOG).unwrap().range(0, usize::MAX).unwrap()
    }

    fn blocks_held(db: &redb::Database) -> u64 {
        let r = db.begin_read().unwrap();
        r.open_table(LOG.blocks).unwrap().len().unwrap()
    }

    #[test]
    fn appends_of_any_size_read_back_whole_and_in_order() {
        let (_d, db) = db();
        let mut next = 1;
        let mut sizing = Sizing::default();
        for n in [1, 5, 200, 1, 127, 300, 0, 2, 2_000, 1] {
            append_sized(&db, next..next + n, &mut sizing);
            next += n;
        }
        let total = next - 1;
        let got = all(&db);
        assert_eq!(got.len() as u64, total);
        for (i, (seq, it)) in got.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(*it, item(*seq));
        }
        let r = db.begin_read().unwrap();
        let open = Open::read(&r, LOG).unwrap();
        // Blocks hold everything before the tail, and the tail is short of a block.
        assert!(blocks_held(&db) >= 2);
        assert_eq!(open.tail_start().unwrap() - 1 + tail_len(&db), total);
        assert!(tail_len(&db) < sizing.records() as u64);
        // These records compress well: blocks grew past the first ones' 128 records.
        assert!(sizing.records() > FIRST_RECORDS, "{sizing:?}");
        assert_eq!(open.last_seq().unwrap(), total);
        assert_eq!(open.last().unwrap().unwrap(), (total, item(total)));
        for seq in [1, 127, 128, 129, 256, total] {
            assert_eq!(open.get(seq).unwrap(), Some(item(seq)), "seq {seq}");
        }
        assert_eq!(open.get(total + 1).unwrap(), None);
        assert_eq!(open.get(0).unwrap(), None);
        // Pages from anywhere, across blocks and into the tail.
        let page = open.range(120, 20).unwrap();
        assert_eq!(
            page.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (121..=140).collect::<Vec<_>>()
        );
        let page = open.range(total - 3, 10).unwrap();
        assert_eq!(page.len(), 3);
        assert!(open.range(total, 10).unwrap().is_empty());
    }

    #[test]
    fn blocks_of_records_that_compress_poorly_still_fill_one_allocation() {
        let (_d, db) = db();
        // Hash-like hex: about half a byte of entropy a character.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rec = |seq: u64| {
            let mut hex = String::new();
            for _ in 0..12 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                hex.push_str(&format!("{x:016x}"));
            }
            (
                seq,
                Item::new(format!("{{\"seq\":{seq},\"hash\":\"{hex}\"}}").into_bytes()),
            )
        };
        let mut sizing = Sizing::default();
        let mut next = 1;
        for _ in 0..40 {
            let batch: Vec<_> = (next..next + 100).map(&mut rec).collect();
            next += 100;
            let txn = db.begin_write().unwrap();
            Open::write(&txn, LOG)
                .unwrap()
                .append(batch, usize::MAX, &mut sizing)
                .unwrap();
            txn.commit().unwrap();
        }
        let r = db.begin_read().unwrap();
        let t = r.open_table(LOG.blocks).unwrap();
        let sizes: Vec<usize> = t
            .iter()
            .unwrap()
            .map(|e| e.unwrap().1.value().len())
            .collect();
        assert!(sizes.len() >= 3, "{sizes:?}");
        assert!(sizes.iter().all(|&s| s <= TARGET), "{sizes:?}");
        // Within a few blocks the sizing has learnt them and blocks fill most of the
        // allocation.
        assert!(
            sizes[3..].iter().all(|&s| s > TARGET * 85 / 100),
            "{sizes:?}"
        );
    }

    #[test]
    fn a_block_filled_exactly_leaves_no_tail_and_the_last_record_is_in_it() {
        let (_d, db) = db();
        let first = FIRST_RECORDS as u64;
        append(&db, 1..1 + first);
        let r = db.begin_read().unwrap();
        let open = Open::read(&r, LOG).unwrap();
        assert_eq!(open.main.len().unwrap(), 0);
        assert_eq!(open.tail_start().unwrap(), first + 1);
        assert_eq!(open.last().unwrap().unwrap().0, first);
        assert_eq!(open.last_seq().unwrap(), first);
    }

    #[test]
    fn replace_rewrites_one_record_in_a_block_or_in_the_tail() {
        let (_d, db) = db();
        append(&db, 1..301);
        let txn = db.begin_write().unwrap();
        {
            let mut open = Open::write(&txn, LOG).unwrap();
            for seq in [5, 200, 290] {
                let gone = Item::new(format!("redacted {seq}").into_bytes());
                assert!(open.replace(seq, gone).unwrap());
            }
            assert!(!open.replace(301, item(301)).unwrap());
        }
        txn.commit().unwrap();
        for (seq, it) in all(&db) {
            if [5, 200, 290].contains(&seq) {
                assert_eq!(it.main, format!("redacted {seq}").into_bytes());
                assert_eq!(it.extra, None);
            } else {
                assert_eq!(it, item(seq));
            }
        }
    }

    #[test]
    fn a_tail_written_record_by_record_is_folded_into_blocks() {
        let (_d, db) = db();
        // What a store before blocks left: every record in the tail tables.
        let txn = db.begin_write().unwrap();
        {
            let mut main = txn.open_table(LOG.main).unwrap();
            let mut extra = txn.open_table(LOG.extra.unwrap()).unwrap();
            txn.open_table(LOG.blocks).unwrap();
            for seq in 1..=70_000u64 {
                let it = item(seq);
                main.insert(seq, it.main.as_slice()).unwrap();
                if let Some(e) = &it.extra {
                    extra.insert(seq, e.as_slice()).unwrap();
                }
            }
        }
        txn.commit().unwrap();
        let folded = fold(&db, LOG).unwrap();
        assert!(folded > 70_000 - MAX_RECORDS as u64, "{folded}");
        assert_eq!(tail_len(&db), 70_000 - folded);
        let got = all(&db);
        assert_eq!(got.len(), 70_000);
        assert!(got.iter().all(|(s, it)| *it == item(*s)));
        // Appending goes on from there.
        append(&db, 70_001..70_101);
        assert_eq!(all(&db).len(), 70_100);
        assert_eq!(fold(&db, LOG).unwrap(), 0);
    }

    #[test]
    fn a_damaged_block_is_an_error_naming_it() {
        let (_d, db) = db();
        append(&db, 1..200);
        let txn = db.begin_write().unwrap();
        {
            let mut b = txn.open_table(LOG.blocks).unwrap();
            let mut v = b.get(1).unwrap().unwrap().value().to_vec();
            let mid = v.len() / 2;
            v.truncate(mid);
            b.insert(1, v.as_slice()).unwrap();
        }
        txn.commit().unwrap();
        let r = db.begin_read().unwrap();
        let open = Open::read(&r, LOG).unwrap();
        let e = open.range(0, 10).unwrap_err().to_string();
        assert!(e.contains("test block at 1"), "{e}");
        assert!(open.get(3).is_err());
        // The tail after it still reads.
        assert_eq!(open.get(150).unwrap(), Some(item(150)));
    }
}
