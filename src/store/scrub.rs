//! Leaves no erased bytes in a redb file's free pages: compaction moves live pages down and
//! cuts the file, but a page left free in the middle still holds what was last written
//! there; filling the free space with a scratch table of zero pages and dropping it leaves
//! zeros there instead.
use redb::{Database, TableDefinition};

const SCRUB: TableDefinition<u64, &[u8]> = TableDefinition::new("erasure_scrub");

/// Zero-fills the free pages of `db` (no other transaction may be open on it).
pub fn zero_free_pages(db: &Database) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    let stats = txn.stats().map_err(|e| e.to_string())?;
    let page = stats.page_size().max(512);
    // One value a leaf page; a few more than the free pages, for the tree's own.
    let pages = stats.fragmented_bytes() / page as u64 + 16;
    {
        let mut t = txn.open_table(SCRUB).map_err(|e| e.to_string())?;
        let zeros = vec![0u8; page - 256];
        for i in 0..pages {
            t.insert(i, zeros.as_slice()).map_err(|e| e.to_string())?;
        }
    }
    txn.commit().map_err(|e| e.to_string())?;
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.delete_table(SCRUB).map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())
}
