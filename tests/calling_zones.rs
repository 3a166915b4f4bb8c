//! The committed location tables (data/calling_zones.tsv, data/us_zip_codes.tsv) are what
//! scripts/gen_calling_zones.py makes of the pinned `phonenumbers` and `zipcodes` packages:
//! the script runs again into a temporary directory and the outputs must be byte-identical.
//! scripts/test.sh installs the pinned packages when they are missing.
use std::path::Path;
use std::process::Command;

#[test]
fn committed_tables_match_a_fresh_generation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("python3")
        .arg(root.join("scripts/gen_calling_zones.py"))
        .arg(out.path())
        .output()
        .expect("python3 runs (scripts/test.sh installs what the generator needs)");
    assert!(
        run.status.success(),
        "the generator failed (pip install phonenumbers==9.0.43 zipcodes==3.0.0): {}",
        String::from_utf8_lossy(&run.stderr)
    );
    for name in ["calling_zones.tsv", "us_zip_codes.tsv"] {
        let committed = std::fs::read_to_string(root.join("data").join(name)).unwrap();
        let fresh = std::fs::read_to_string(out.path().join(name)).unwrap();
        if committed != fresh {
            let first = committed
                .lines()
                .zip(fresh.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(committed.lines().count().min(fresh.lines().count()));
            panic!(
                "data/{name} differs from a fresh generation at line {}: committed {:?}, fresh {:?}; \
                 run python3 scripts/gen_calling_zones.py and commit the result",
                first + 1,
                committed.lines().nth(first),
                fresh.lines().nth(first)
            );
        }
    }
}
