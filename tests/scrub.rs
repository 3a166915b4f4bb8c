//! `preflight scrub` as a dialer team runs it: a CSV in, the same CSV out with verdicts,
//! every input column kept, faulty rows blocked in place, and no output when it fails.
mod common;

use common::*;
use preflight::proto as pb;
use std::path::Path;
use std::process::Command;

/// `preflight scrub --in input --out out --channel voice --server url` and `extra`.
fn scrub(input: &Path, out: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_preflight"))
        .arg("scrub")
        .arg("--in")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(["--channel", "voice", "--server", url])
        .args(extra)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn scrub_keeps_columns_adds_verdicts_and_fails_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(&dir.path().join("data"));
    let ch = srv.ready().await;
    consent(&ch)
        .record_consent(grant(
            "2025550101",
            &[pb::Channel::Voice],
            &[pb::Purpose::Marketing],
        ))
        .await
        .unwrap();
    dnc(&ch)
        .add_entries(pb::AddEntriesRequest {
            entries: vec![entry("2025550102", pb::DncType::Corporate)],
            actor: "ops".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let input = dir.path().join("leads.csv");
    let mut csv = String::from("lead_id,name,Phone,notes\n");
    csv.push_str("1,\"Doe, Jane\",(202) 555-0101,\"said \"\"call me\"\"\"\n");
    csv.push_str("2,Bob,202-555-0102,\n");
    csv.push_str("3,Ann,+1 202 555 0103,multi\n");
    csv.push_str("4,Nobody,not-a-number,\n");
    csv.push_str("5,Empty,,\n");
    // Enough rows to span several stream messages (batch 4 below).
    for i in 0..37 {
        csv.push_str(&format!("{},Filler,202555{:04},\n", 100 + i, 2000 + i));
    }
    std::fs::write(&input, &csv).unwrap();
    let out = dir.path().join("scrubbed.csv");
    let url = srv.url();
    let o = scrub(
        &input,
        &out,
        &url,
        &["--purpose", "marketing", "--batch", "4"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("scrubbed 42 rows"), "{err}");
    assert!(err.contains("ALLOW 1, BLOCK 41"), "{err}");
    assert!(
        err.contains("DNC_CORPORATE") && err.contains("INVALID_CONTACT"),
        "{err}"
    );

    let mut r = csv_reader(&out);
    let headers: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        headers,
        [
            "lead_id",
            "name",
            "Phone",
            "notes",
            "verdict",
            "reasons",
            "normalized_contact",
            "next_allowed_at"
        ]
    );
    let rows: Vec<Vec<String>> = r
        .records()
        .map(|x| x.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), 42);
    assert_eq!(
        rows[0],
        [
            "1",
            "Doe, Jane",
            "(202) 555-0101",
            "said \"call me\"",
            "ALLOW",
            "",
            "+12025550101",
            ""
        ]
    );
    assert_eq!(
        rows[1][4..],
        ["BLOCK", "DNC_CORPORATE;NO_CONSENT", "+12025550102", ""]
    );
    assert_eq!(rows[2][4..], ["BLOCK", "NO_CONSENT", "+12025550103", ""]);
    assert_eq!(rows[3][4..], ["BLOCK", "INVALID_CONTACT", "", ""]);
    assert_eq!(rows[4][4..], ["BLOCK", "INVALID_CONTACT", "", ""]);
    // Order is the input's, across batch boundaries.
    for (i, row) in rows[5..].iter().enumerate() {
        assert_eq!(row[0], (100 + i).to_string());
        assert_eq!(row[6], format!("+1202555{:04}", 2000 + i));
    }

    // A column that is not there: refused, naming it and the headers.
    let bad = dir.path().join("bad.csv");
    let o = scrub(&input, &bad, &url, &["--column", "mobile"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("`mobile`") && err.contains("lead_id, name, Phone, notes"),
        "{err}"
    );
    assert!(!bad.exists());

    // A ragged row stops the scrub with its line number, and no output file is left.
    let ragged = dir.path().join("ragged.csv");
    std::fs::write(&ragged, "phone,name\n2025550101,a\n2025550102\n").unwrap();
    let o = scrub(&ragged, &bad, &url, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("line 3"), "{err}");
    assert!(!bad.exists() && !dir.path().join("bad.csv.partial").exists());

    // The service going away: an error, and still no output that looks complete.
    srv.stop();
    let o = scrub(&input, &bad, &url, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach preflight"));
    assert!(!bad.exists());
}

fn csv_reader(p: &std::path::Path) -> csv::Reader<std::fs::File> {
    csv::Reader::from_path(p).unwrap()
}
