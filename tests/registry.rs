//! National-scale registries end to end: generate, import (full, changes, gzip, rejects),
//! decide, list, restart from snapshots, and swap under concurrent checks.
mod common;

use common::*;
use pb::{Channel as Ch, Purpose as P, Reason as R};
use preflight::proto as pb;
use preflight::registry::generate::Generator;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use tonic::Code;

fn chunks(list: &str, mode: pb::ImportMode, files: &[&Path]) -> Vec<pb::ImportRegistryChunk> {
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        for part in bytes.chunks(64 * 1024) {
            out.push(pb::ImportRegistryChunk {
                list: list.into(),
                mode: mode as i32,
                file_name: f.file_name().unwrap().to_string_lossy().into(),
                data: part.to_vec(),
                max_reject_fraction: 0.0,
            });
        }
    }
    out
}

fn numbers(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.replace(',', ""))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_import_decide_persist_and_swap() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    // Two files of one full list: plain with `area,number` lines, and gzip.
    let a = files.join("part-a.txt");
    let mut w = std::fs::File::create(&a).unwrap();
    Generator::new(11).write(20_000, true, &mut w).unwrap();
    writeln!(w, "this line is broken").unwrap();
    drop(w);
    let b_plain = files.join("part-b.txt");
    Generator::new(12)
        .write(5_000, false, &mut std::fs::File::create(&b_plain).unwrap())
        .unwrap();
    let b = files.join("part-b.txt.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&b).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&std::fs::read(&b_plain).unwrap()).unwrap();
    gz.finish().unwrap();
    let listed_a = numbers(&a);
    let listed_b = numbers(&b_plain);

    let mut server = Server::start(&dir.path().join("data"));
    let ch = server.ready().await;
    let mut n = dnc(&ch);
    let r = n
        .import_registry(futures::stream::iter(chunks(
            "federal",
            pb::ImportMode::Full,
            &[&a, &b],
        )))
        .await
        .unwrap()
        .into_inner();
    let info = r.registry.unwrap();
    assert_eq!(
        (info.name.as_str(), info.version, info.r#type),
        ("FEDERAL", 1, pb::DncType::Federal as i32)
    );
    let distinct: std::collections::HashSet<&String> =
        listed_a[..20_000].iter().chain(&listed_b).collect();
    assert_eq!(info.count, distinct.len() as u64);
    assert_eq!(r.rejected_lines, 1);
    let rejects = std::fs::read_to_string(&r.rejects_path).unwrap();
    assert!(
        rejects.contains("part-a.txt:20001:") && rejects.contains("this line is broken"),
        "{rejects}"
    );
    assert_eq!(
        info.sources[0].sha256,
        hex::encode(Sha256::digest(std::fs::read(&a).unwrap()))
    );
    assert_eq!(info.sources[1].name, "part-b.txt.gz");

    // Decisions: FEDERAL governs marketing on voice and SMS, and names the list version.
    let listed = &listed_a[7];
    let d = decision(&ch)
        .check(check_req(listed, Ch::Voice, P::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&d), vec![R::DncFederal, R::NoConsent]);
    assert_eq!(d.matched_ids, vec!["registry:FEDERAL@v1".to_string()]);
    let d = decision(&ch)
        .check(check_req(&listed_b[3], Ch::Sms, P::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert!(reasons(&d).contains(&R::DncFederal));
    let d = decision(&ch)
        .check(check_req(listed, Ch::Voice, P::Service))
        .await
        .unwrap()
        .into_inner();
    assert!(d.reasons.is_empty(), "{d:?}");
    // Express consent overrides the registry under the default policy.
    consent(&ch)
        .record_consent(grant(listed, &[Ch::Voice], &[P::Marketing]))
        .await
        .unwrap();
    let d = decision(&ch)
        .check(check_req(listed, Ch::Voice, P::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.verdict, pb::Verdict::Allow as i32);

    // A change file: two additions, one deletion.
    let changes = files.join("changes.csv");
    std::fs::write(
        &changes,
        format!(
            "2025550197,A\n202,5550198,2026-11-20,A\n{},D\n",
            listed_a[8]
        ),
    )
    .unwrap();
    let r = n
        .import_registry(futures::stream::iter(chunks(
            "FEDERAL",
            pb::ImportMode::Changes,
            &[&changes],
        )))
        .await
        .unwrap()
        .into_inner();
    let v2 = r.registry.unwrap();
    assert_eq!(
        (v2.version, v2.added, v2.removed, v2.count),
        (2, 2, 1, info.count + 1)
    );
    let hit = decision(&ch)
        .check(check_req("(202) 555-0198", Ch::Voice, P::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hit.matched_ids, vec!["registry:FEDERAL@v2".to_string()]);
    let gone = decision(&ch)
        .check(check_req(&listed_a[8], Ch::Voice, P::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert!(!reasons(&gone).contains(&R::DncFederal));

    // Too many bad lines: refused, and version 2 keeps serving.
    let bad = files.join("bad.txt");
    std::fs::write(&bad, "2025550111\nnot a number\n12\n").unwrap();
    let e = n
        .import_registry(futures::stream::iter(chunks(
            "FEDERAL",
            pb::ImportMode::Full,
            &[&bad],
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("2 of 3 lines rejected")
            && e.message().contains("version 2 keeps serving"),
        "{}",
        e.message()
    );
    let e = n
        .import_registry(futures::stream::iter(chunks(
            "STATE:",
            pb::ImportMode::Full,
            &[&bad],
        )))
        .await
        .unwrap_err();
    assert!(
        e.code() == Code::InvalidArgument && e.message().starts_with("list"),
        "{}",
        e.message()
    );
    let e = n
        .import_registry(futures::stream::iter(chunks(
            "STATE:TX",
            pb::ImportMode::Changes,
            &[&changes],
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // A state list beside it, through the CLI with its progress bar.
    let tx = files.join("tx.txt");
    std::fs::write(&tx, "2025550197\n5125550100\n").unwrap();
    let url = server.url();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args([
            "dnc",
            "import",
            "--list",
            "STATE:TX",
            "--full",
            tx.to_str().unwrap(),
            "--server",
            &url,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("STATE:TX (STATE) version 1 2 numbers"));
    let d = decision(&ch)
        .check(check_req("2025550197", Ch::Sms, P::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&d), vec![R::DncFederal, R::DncState, R::NoConsent]);
    let lists = n
        .list_registries(pb::ListRegistriesRequest {})
        .await
        .unwrap()
        .into_inner()
        .registries;
    assert_eq!(
        lists
            .iter()
            .map(|l| (l.name.as_str(), l.version))
            .collect::<Vec<_>>(),
        vec![("FEDERAL", 2), ("STATE:TX", 1)]
    );

    // Swap under load: checks keep answering while version 3 is imported.
    let checker = {
        let ch = ch.clone();
        let listed = listed_b[0].clone();
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..400 {
                let d = decision(&ch)
                    .check(check_req(&listed, Ch::Voice, P::Marketing))
                    .await
                    .unwrap()
                    .into_inner();
                assert!(reasons(&d).contains(&R::DncFederal), "{d:?}");
                seen.insert(d.matched_ids[0].clone());
            }
            seen
        })
    };
    // Version 3 is part b given twice (repeats are dropped, not counted) and one new number.
    let b_twice = files.join("part-b-twice.txt");
    let plain = std::fs::read_to_string(&b_plain).unwrap();
    std::fs::write(&b_twice, format!("{plain}{plain}2025550111\n")).unwrap();
    let r = n
        .import_registry(futures::stream::iter(chunks(
            "FEDERAL",
            pb::ImportMode::Full,
            &[&b_twice],
        )))
        .await
        .unwrap()
        .into_inner();
    let v3 = r.registry.unwrap();
    let mut v2_set: std::collections::HashSet<String> =
        distinct.iter().map(|s| s.to_string()).collect();
    v2_set.extend(["2025550197".to_string(), "2025550198".to_string()]);
    v2_set.remove(&listed_a[8]);
    let mut v3_set: std::collections::HashSet<String> = listed_b.iter().cloned().collect();
    v3_set.insert("2025550111".into());
    assert_eq!(
        (v3.version, v3.count, v3.added, v3.removed),
        (
            3,
            v3_set.len() as u64,
            v3_set.difference(&v2_set).count() as u64,
            v2_set.difference(&v3_set).count() as u64
        )
    );
    let seen = checker.await.unwrap();
    assert!(
        seen.iter()
            .all(|s| s == "registry:FEDERAL@v2" || s == "registry:FEDERAL@v3"),
        "{seen:?}"
    );
    drop(n);
    server.kill();

    // Restart: lists come back from their binary snapshots, not from text.
    let mut server = Server::start(&dir.path().join("data"));
    let ch = server.ready().await;
    let lists = dnc(&ch)
        .list_registries(pb::ListRegistriesRequest {})
        .await
        .unwrap()
        .into_inner()
        .registries;
    assert_eq!(
        lists
            .iter()
            .map(|l| (l.name.as_str(), l.version))
            .collect::<Vec<_>>(),
        vec![("FEDERAL", 3), ("STATE:TX", 1)]
    );
    let d = decision(&ch)
        .check(check_req(&listed_b[4], Ch::Voice, P::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.matched_ids, vec!["registry:FEDERAL@v3".to_string()]);
    server.kill();
}

#[test]
fn the_generator_is_deterministic_and_valid() {
    let mut a = Vec::new();
    Generator::new(5).write(3_000, false, &mut a).unwrap();
    let mut b = Vec::new();
    Generator::new(5).write(3_000, false, &mut b).unwrap();
    assert_eq!(a, b);
    let text = String::from_utf8(a).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3_000);
    assert_eq!(
        lines.iter().collect::<std::collections::HashSet<_>>().len(),
        3_000,
        "distinct"
    );
    let phones = preflight::normalize::PhoneNormalizer::new(preflight::normalize::Region::us());
    for l in lines.iter().take(500) {
        assert!(
            phones.normalize(l, None).is_ok(),
            "{l} is not a valid number"
        );
    }
}
