//! Bulk import from the command line against a running service: `preflight consent import`
//! (CSV, JSON Lines, gzip), `preflight dnc add --in`, rejects with line and column, the
//! refusal threshold, an unknown column, and an import SIGKILLed part-way then resumed.
mod common;

use common::*;
use preflight::proto as pb;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn preflight(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn index_seq(server: &Server) -> u64 {
    let body: serde_json::Value = ureq::get(&format!("{}/v1/admin/index", server.http_url()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    body["index_seq"].as_u64().unwrap()
}

fn audit_verifies(server: &Server) {
    let o = preflight(&["audit", "verify", "--server", &server.url()]);
    assert!(o.status.success(), "audit verify: {}", text(&o));
}

async fn reasons_of(
    ch: &tonic::transport::Channel,
    contact: &str,
    channel: pb::Channel,
) -> Vec<pb::Reason> {
    reasons(&check(ch, contact, channel, pb::Purpose::Marketing).await)
}

fn rejects(path: &Path) -> Vec<(u64, String)> {
    let mut rd = csv::Reader::from_path(path).unwrap();
    rd.records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].parse().unwrap(), r[1].to_string())
        })
        .collect()
}

const CONSENTS: &str = "\
contact,status,channels,purposes,source,proof,effective_at,external_id
+12025550101,granted,sms;voice,marketing,web-form,https://example.com/f/1,2026-03-01T12:00:00Z,
+12025550102,withdrawn,,,sms-stop,msg-1,2026-03-02,crm-7
not-a-number,granted,sms,marketing,web-form,,,
+12025550104,granted,sms;fax,marketing,web-form,,,
ann@example.com,granted,email,marketing,web-form,,2026-01-01,crm-7
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_file_imports_row_by_row_with_its_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"));
    let ch = server.ready().await;
    let url = server.url();
    let start = index_seq(&server);

    for (name, gzip) in [("consents.csv", false), ("consents.csv.gz", true)] {
        let path = dir.path().join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        if gzip {
            let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
            gz.write_all(CONSENTS.as_bytes()).unwrap();
            gz.finish().unwrap();
        } else {
            f.write_all(CONSENTS.as_bytes()).unwrap();
        }
        let p = path.to_str().unwrap();
        let o = preflight(&[
            "consent",
            "import",
            "--in",
            p,
            "--max-reject-fraction",
            "0.5",
            "--server",
            &url,
        ]);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(out.contains("5 rows: 3 imported"), "{out}");
        assert!(out.contains("2 rejected"), "{out}");
        let mut bad = rejects(&dir.path().join(format!("{name}.rejects.csv")));
        bad.sort();
        assert_eq!(
            bad,
            vec![(4, "contact".to_string()), (5, "channels".to_string())],
            "{out}"
        );
    }
    // The first file: three consent records and two links (the phone and the email join
    // crm-7); the second, the same three records and no link (both already made).
    assert_eq!(index_seq(&server), start + 3 + 2 + 3, "events written");

    // The withdrawal reached the email through crm-7.
    assert!(
        reasons_of(&ch, "+12025550102", pb::Channel::Sms)
            .await
            .contains(&pb::Reason::ConsentWithdrawn)
    );
    assert!(
        reasons_of(&ch, "ann@example.com", pb::Channel::Email)
            .await
            .contains(&pb::Reason::ConsentWithdrawn)
    );
    let granted = reasons_of(&ch, "+12025550101", pb::Channel::Sms).await;
    assert!(
        !granted.contains(&pb::Reason::NoConsent)
            && !granted.contains(&pb::Reason::ConsentWithdrawn),
        "{granted:?}"
    );
    audit_verifies(&server);

    // JSON Lines, with lists as arrays.
    let jsonl = dir.path().join("more.jsonl");
    std::fs::write(
        &jsonl,
        "{\"contact\":\"+12025550111\",\"status\":\"withdrawn\",\"channels\":[\"SMS\"]}\n\
         {\"contact\":\"+12025550112\",\"status\":\"granted\",\"channels\":[\"sms\"],\"purposes\":[\"marketing\"],\"expires_at\":\"2020-01-01\",\"effective_at\":\"2021-01-01\"}\n",
    )
    .unwrap();
    let o = preflight(&[
        "consent",
        "import",
        "--in",
        jsonl.to_str().unwrap(),
        "--max-reject-fraction",
        "0.5",
        "--server",
        &url,
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("2 rows: 1 imported"), "{out}");
    assert_eq!(
        rejects(&dir.path().join("more.jsonl.rejects.csv")),
        vec![(2, "expires_at".to_string())]
    );
    assert!(
        reasons_of(&ch, "+12025550111", pb::Channel::Sms)
            .await
            .contains(&pb::Reason::ConsentWithdrawn)
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_column_stops_the_import_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"));
    server.ready().await;
    let start = index_seq(&server);
    let path = dir.path().join("typo.csv");
    std::fs::write(
        &path,
        "contact,status,chanels\n+12025550101,withdrawn,sms\n",
    )
    .unwrap();
    let o = preflight(&[
        "consent",
        "import",
        "--in",
        path.to_str().unwrap(),
        "--server",
        &server.url(),
    ]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("unknown column `chanels`"), "{out}");
    assert_eq!(index_seq(&server), start);
    let path = dir.path().join("typo.csv");
    std::fs::write(&path, "contact,kind\n+12025550101,corporate\n").unwrap();
    let o = preflight(&[
        "dnc",
        "add",
        "--in",
        path.to_str().unwrap(),
        "--server",
        &server.url(),
    ]);
    assert!(text(&o).contains("unknown column `kind`"), "{}", text(&o));
    assert_eq!(index_seq(&server), start);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_reject_threshold_is_refused_after_its_last_clean_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"));
    server.ready().await;
    let start = index_seq(&server);
    let mut csv = String::from("contact,status\n");
    for i in 0..100 {
        if (50..70).contains(&i) {
            csv.push_str("not-a-phone,withdrawn\n");
        } else {
            csv.push_str(&format!("+1202555{i:04},withdrawn\n"));
        }
    }
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, csv).unwrap();
    let o = preflight(&[
        "consent",
        "import",
        "--in",
        path.to_str().unwrap(),
        "--chunk",
        "10",
        "--max-reject-fraction",
        "0.05",
        "--server",
        &server.url(),
    ]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("refused") && out.contains("chunks 0 to 4 are committed"),
        "{out}"
    );
    // Chunks 0 to 4 (50 clean rows) landed; chunk 5, where the rejects begin, and all after it did not.
    assert_eq!(index_seq(&server), start + 50);
    audit_verifies(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_part_way_resumes_without_writing_anything_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"));
    let ch = server.ready().await;
    let start = index_seq(&server);
    let rows = 40_000u64;
    let mut csv = String::from("contact,status,channels,purposes,source\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "+1303{:07},granted,sms,marketing,crm\n",
            5_550_000 + i
        ));
    }
    let path = dir.path().join("big.csv");
    std::fs::write(&path, csv).unwrap();
    let args = [
        "consent",
        "import",
        "--in",
        path.to_str().unwrap(),
        "--chunk",
        "500",
        "--import-id",
        "crm-day-one",
        "--server",
        &server.url(),
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seq = index_seq(&server);
        if seq >= start + 2_000 {
            child.kill().unwrap();
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "the import did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait().unwrap();
    // A chunk the service had already received still commits.
    std::thread::sleep(Duration::from_millis(500));
    let partial = index_seq(&server) - start;
    assert!(partial < rows, "killed after {partial} of {rows}");
    assert_eq!(
        partial % 500,
        0,
        "only whole chunks are committed: {partial}"
    );

    let o = preflight(&args);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "{rows} rows: {} imported, {partial} already imported",
            rows - partial
        )),
        "{out}"
    );
    assert_eq!(
        index_seq(&server),
        start + rows,
        "each row written exactly once"
    );
    // And a third run writes nothing at all.
    let o = preflight(&args);
    assert!(
        text(&o).contains(&format!("{rows} rows: 0 imported, {rows} already imported")),
        "{}",
        text(&o)
    );
    assert_eq!(index_seq(&server), start + rows);
    audit_verifies(&server);
    let last = format!("+1303{:07}", 5_550_000 + rows - 1);
    assert!(
        !reasons_of(&ch, &last, pb::Channel::Sms)
            .await
            .contains(&pb::Reason::NoConsent)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dnc_file_adds_entries_and_a_re_run_adds_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"));
    let ch = server.ready().await;
    let start = index_seq(&server);
    let path = dir.path().join("company-dnc.csv");
    std::fs::write(
        &path,
        "contact,type,list,expires_at,reason\n\
         +12025550131,corporate,,,asked on a call\n\
         +12025550132,personal,,2099-01-01,\n\
         +12025550133,corporate,,2001-01-01,\n\
         bob@example.com,,,,complaint\n\
         +12025550134,sometimes,,,\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let run = || {
        preflight(&[
            "dnc",
            "add",
            "--in",
            p,
            "--import-id",
            "dnc-1",
            "--max-reject-fraction",
            "0.5",
            "--server",
            &server.url(),
        ])
    };
    let o = run();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("5 rows: 3 added"), "{out}");
    let mut bad = rejects(&dir.path().join("company-dnc.csv.rejects.csv"));
    bad.sort();
    assert_eq!(
        bad,
        vec![(4, "expires_at".to_string()), (6, "type".to_string())]
    );
    assert_eq!(index_seq(&server), start + 3);
    assert!(
        reasons_of(&ch, "+12025550131", pb::Channel::Voice)
            .await
            .contains(&pb::Reason::DncCorporate)
    );
    assert!(
        reasons_of(&ch, "bob@example.com", pb::Channel::Email)
            .await
            .contains(&pb::Reason::DncCorporate)
    );
    let o = run();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("0 added") && out.contains("3 already imported by an earlier run"),
        "{out}"
    );
    assert_eq!(index_seq(&server), start + 3);
    audit_verifies(&server);
}
