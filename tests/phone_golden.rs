//! preflight's phone normalization agrees with libphonenumber (via the `phonenumbers`
//! port) on a table of typed formats; regenerate with scripts/gen_phone_golden.py.
use preflight::normalize::{PhoneNormalizer, Region};

#[test]
fn agrees_with_libphonenumber() {
    let table = include_str!("data/phone_golden.tsv");
    let mut failures = Vec::new();
    let mut rows = 0;
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let (region, input, want) = (cols[0], cols[1], cols[2]);
        let n = PhoneNormalizer::new(Region::parse(region).unwrap());
        let got = match n.normalize(input, None) {
            Ok(d) => format!("+{d}"),
            Err(_) => "INVALID".to_string(),
        };
        // Twice: the second answer comes from the cached NANP table, the first may not.
        let again = match n.normalize(input, None) {
            Ok(d) => format!("+{d}"),
            Err(_) => "INVALID".to_string(),
        };
        if got != want || again != want {
            failures.push(format!(
                "{region} {input:?}: want {want}, got {got} then {again}"
            ));
        }
        rows += 1;
    }
    assert!(rows > 100, "table has {rows} rows");
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
