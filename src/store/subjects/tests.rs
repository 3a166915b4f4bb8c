//! The subject index against a plain map of (token, seq), through flushes, merges and a fold.
use super::*;
use proptest::prelude::*;
use redb::ReadableDatabase;
use std::collections::BTreeMap;

fn db() -> (tempfile::TempDir, redb::Database) {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("s.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    open_write(&txn).unwrap();
    txn.commit().unwrap();
    (dir, db)
}

fn token(k: u8) -> Token {
    // Spread over the first byte too, so tokens land all over a run.
    let mut t = [k; 16];
    t[0] = k.wrapping_mul(37);
    t
}

type Model = BTreeMap<Token, Vec<u64>>;

/// One committed write: each of `records` (the tokens it names) gets the next seq, in the
/// index and in the model, then the index is maintained.
fn write(
    db: &redb::Database,
    model: &mut Model,
    seq: &mut u64,
    records: impl IntoIterator<Item = Vec<Token>>,
) {
    let txn = db.begin_write().unwrap();
    {
        let mut t = open_write(&txn).unwrap();
        for tokens in records {
            *seq += 1;
            t.add(*seq, &tokens).unwrap();
            for tok in tokens {
                model.entry(tok).or_default().push(*seq);
            }
        }
        t.maintain().unwrap();
    }
    txn.commit().unwrap();
}

/// Every token's seqs, read in a fresh read transaction, equal the model's.
fn agrees(db: &redb::Database, model: &Model, pool: u8) {
    let r = db.begin_read().unwrap();
    let t = open_read(&r).unwrap();
    for k in 0..pool {
        let tok = token(k);
        let want = model.get(&tok).cloned().unwrap_or_default();
        assert_eq!(t.seqs_of(&tok).unwrap(), want, "token {k}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Writes of random sizes, each record naming one to three of a few tokens: after every
    /// commit each token's records are exactly the model's, whatever runs and merges the
    /// writes went through.
    #[test]
    fn lookups_match_a_plain_map(
        writes in prop::collection::vec(
            prop::collection::vec(prop::collection::btree_set(0u8..12, 0..4), 1..60),
            1..40,
        )
    ) {
        let (_dir, db) = db();
        let mut model = Model::new();
        let mut seq = 0u64;
        for names in &writes {
            let records = names.iter().map(|n| n.iter().map(|k| token(*k)).collect());
            write(&db, &mut model, &mut seq, records);
            agrees(&db, &model, 12);
        }
        // The recent table never holds more than one flush's worth after maintenance, and
        // below the top size class no four runs are left of one class.
        let r = db.begin_read().unwrap();
        let t = open_read(&r).unwrap();
        prop_assert!(t.recent.len().unwrap() < FLUSH_AT + 60);
        let mut per_tier = [0usize; MAX_TIER as usize + 1];
        for run in t.sizes.iter().unwrap() {
            let (_, n) = run.unwrap();
            per_tier[tier(n.value()).min(MAX_TIER) as usize] += 1;
        }
        for (k, n) in per_tier[..MAX_TIER as usize].iter().enumerate() {
            prop_assert!(*n < FAN_IN, "{n} runs of class {k} left unmerged");
        }
    }
}

/// Enough records to go through every size class: runs reach the top class, which is not
/// merged further, and lookups still find every record.
#[test]
fn runs_stop_growing_at_the_top_class() {
    let (_dir, db) = db();
    let mut model = Model::new();
    let mut seq = 0u64;
    // 16 records a flush, 4^3 flushes to the top class: twice that.
    for _ in 0..(2 * 64) {
        let first = seq + 1;
        let records = (first..first + FLUSH_AT).map(|s| vec![token((s % 7) as u8)]);
        write(&db, &mut model, &mut seq, records);
    }
    agrees(&db, &model, 7);
    let r = db.begin_read().unwrap();
    let t = open_read(&r).unwrap();
    let tiers: Vec<u32> = t
        .sizes
        .iter()
        .unwrap()
        .map(|r| tier(r.unwrap().1.value()))
        .collect();
    assert_eq!(tiers, vec![MAX_TIER, MAX_TIER], "two runs of the top class");
    assert_eq!(t.recent.len().unwrap(), 0);
}

/// An index written one entry a (token, seq) by an earlier version is folded into a run
/// and answers the same.
#[test]
fn an_earlier_index_is_folded_into_a_run() {
    let (_dir, db) = db();
    let mut model = Model::new();
    let txn = db.begin_write().unwrap();
    {
        let mut legacy = txn.open_table(LEGACY).unwrap();
        for seq in 1..=100u64 {
            for k in [(seq % 5) as u8, 9] {
                let tok = token(k);
                legacy.insert((tok.as_slice(), seq), ()).unwrap();
                model.entry(tok).or_default().push(seq);
            }
        }
    }
    txn.commit().unwrap();
    agrees(&db, &model, 10);
    let txn = db.begin_write().unwrap();
    assert_eq!(open_write(&txn).unwrap().fold_legacy().unwrap(), 200);
    txn.commit().unwrap();
    agrees(&db, &model, 10);
    let r = db.begin_read().unwrap();
    let t = open_read(&r).unwrap();
    assert_eq!(t.legacy.len().unwrap(), 0);
    assert_eq!(t.sizes.len().unwrap(), 1);
    // Folding again finds nothing to do.
    drop(r);
    let txn = db.begin_write().unwrap();
    assert_eq!(open_write(&txn).unwrap().fold_legacy().unwrap(), 0);
    txn.commit().unwrap();
    agrees(&db, &model, 10);
}

/// A damaged chunk is refused with what is wrong, not read as other records.
#[test]
fn a_damaged_chunk_is_refused() {
    let (_dir, db) = db();
    let txn = db.begin_write().unwrap();
    {
        let mut t = open_write(&txn).unwrap();
        let e = entry(&token(1), 5);
        t.runs.insert((0u64, &e[..]), &e[..20]).unwrap();
        t.sizes.insert(0u64, 1u64).unwrap();
    }
    txn.commit().unwrap();
    let r = db.begin_read().unwrap();
    let err = open_read(&r).unwrap().seqs_of(&token(1)).unwrap_err();
    assert!(err.to_string().contains("not a multiple of 24"), "{err}");
}
