//! The precomputed NANP block table against the phonenumber crate it was computed from.
//! `PREFLIGHT_REGENERATE_NANP=1 cargo test --release --test nanp_table` rewrites it (after
//! a phonenumber upgrade, say); otherwise a deterministic sample of blocks is re-probed.
use preflight::normalize::phone::NanpTable;

#[test]
fn precomputed_blocks_match_the_phonenumber_crate() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/normalize/nanp_blocks.bin.gz");
    if std::env::var("PREFLIGHT_REGENERATE_NANP").is_ok_and(|v| v == "1") {
        std::fs::write(&path, NanpTable::compute_packed(2)).unwrap();
    }
    let table = NanpTable::precomputed();
    // Every plausible block is known; a few thousand, spread over all area codes, agree
    // with a fresh probe.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let (mut valid, mut checked) = (0, 0);
    for area in 200..1000u64 {
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let prefix = area * 1000 + 200 + x % 800;
            let stored = table.state(prefix);
            assert_ne!(stored, 0, "block {prefix} missing from {}", path.display());
            assert_eq!(
                stored,
                NanpTable::probe_block(prefix),
                "block {prefix}: regenerate with PREFLIGHT_REGENERATE_NANP=1"
            );
            valid += usize::from(stored == 1);
            checked += 1;
        }
    }
    assert!(
        valid > checked / 10,
        "only {valid} of {checked} blocks valid"
    );
}
