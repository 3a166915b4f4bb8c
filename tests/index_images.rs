//! Index images on the embedded store: a start loads the newest valid image and replays only
//! the log after it; a torn, corrupted or stale image is refused (never a partial index); an
//! erasure removes every image that could name its subjects in clear.
mod common;

use preflight::audit::Caller;
use preflight::clock::SystemClock;
use preflight::config::{Config, ImagesConfig};
use preflight::engine::{
    AddEntriesRequest, Arg, ConsentRequest, DncEntryRequest, Engine, LinkRequest, SubmitRequest,
};
use preflight::model::privacy::{Jurisdiction, RequestStatus, RequestType};
use preflight::model::{ConsentStatus, DncType};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn config(dir: &Path, every: u64) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        index_images: ImagesConfig {
            every_events: every,
            check_ms: 20,
            keep: 2,
        },
        ..Config::default()
    }
}

/// Opens the engine, waiting for the previous one's writer to let go of the data file.
async fn open(dir: &Path, every: u64) -> Arc<Engine> {
    common::open_embedded(&config(dir, every), Arc::new(SystemClock)).await
}

fn caller() -> Caller {
    Caller::system("test")
}

async fn withdraw(engine: &Engine, contact: &str) {
    engine
        .record_consent(
            ConsentRequest {
                contact: contact.into(),
                status: Arg::Set(ConsentStatus::Withdrawn),
                ..Default::default()
            },
            &caller(),
        )
        .await
        .unwrap();
}

/// Consents, DNC entries, identity links and a finished ACCESS request: every kind of state
/// an image carries. Returns the ACCESS request's id.
async fn write_some(engine: &Arc<Engine>, from: u64, n: u64) -> String {
    for i in from..from + n {
        let phone = format!("+1202555{:04}", i);
        withdraw(engine, &phone).await;
        engine
            .add_entries(
                AddEntriesRequest {
                    entries: vec![DncEntryRequest {
                        contact: format!("p{i}@example.com"),
                        dnc_type: Arg::Set(DncType::Corporate),
                        list: "internal".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                &caller(),
            )
            .await
            .unwrap();
        engine
            .link_identifiers(
                LinkRequest {
                    external_id: format!("crm-{i}"),
                    contacts: vec![phone, format!("p{i}@example.com")],
                    ..Default::default()
                },
                &caller(),
            )
            .await
            .unwrap();
    }
    let reg = engine
        .register_consumer(&[format!("+1202555{:04}", from)], "", &caller())
        .await
        .unwrap();
    request(engine, reg.consumer.seq, RequestType::Access).await
}

async fn request(engine: &Arc<Engine>, consumer_seq: u64, t: RequestType) -> String {
    let req = engine
        .submit_request(
            SubmitRequest {
                consumer_id: preflight::model::event::consumer_id(consumer_seq),
                request_type: Arg::Set(t),
                jurisdiction: Arg::Set(Jurisdiction::Ccpa),
                received_at: None,
            },
            &caller(),
        )
        .await
        .unwrap();
    let id = preflight::model::event::request_id(req.seq);
    for _ in 0..2000 {
        let r = engine.get_request(&id).unwrap();
        if r.status == RequestStatus::Completed {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("request {id} did not complete");
}

/// Waits until the newest image is at `seq` or later.
async fn image_at(engine: &Engine, seq: u64) -> u64 {
    for _ in 0..1000 {
        if let Some(q) = engine.image_status().unwrap().newest_seq
            && q >= seq
        {
            return q;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no image at {seq}: {:?}", engine.image_status());
}

fn images(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "img"))
        .collect();
    v.sort();
    v
}

/// What the index decides from: equal digests decide alike.
fn state(engine: &Engine) -> (u64, String, usize) {
    let i = engine.index();
    (i.seq(), i.digest(), i.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_loads_the_newest_image_and_replays_only_the_log_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), 40).await;
    let access = write_some(&engine, 0, 20).await;
    let at = image_at(&engine, 40).await;
    // The builder sleeps between looks; these land after the image it wrote.
    withdraw(&engine, "+12025559001").await;
    withdraw(&engine, "+12025559002").await;
    let before = state(&engine);
    drop(engine);

    let engine = open(dir.path(), 1_000_000).await;
    let status = engine.image_status().unwrap();
    let newest = status.started_from_seq.expect("started from an image");
    assert!(newest >= at, "{status:?}");
    assert_eq!(status.replayed_at_start, before.0 - newest, "{status:?}");
    assert_eq!(status.rejected, 0);
    assert_eq!(state(&engine), before);
    // The privacy state comes back from the events the image names.
    let r = engine.get_request(&access).unwrap();
    assert_eq!(r.status, RequestStatus::Completed);
    // And writes go on from the right seq.
    withdraw(&engine, "+12025559003").await;
    assert_eq!(engine.index().seq(), before.0 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_or_torn_image_is_refused_and_an_older_one_or_the_log_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), 30).await;
    write_some(&engine, 0, 10).await;
    let first = image_at(&engine, 30).await;
    write_some(&engine, 10, 10).await;
    let second = image_at(&engine, first + 30).await;
    let before = state(&engine);
    drop(engine);
    let files = images(dir.path());
    assert_eq!(files.len(), 2, "two images kept: {files:?}");

    // One bit flipped in the newest: its checksum fails, the older one is used.
    let newest = files[1].clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&newest, &bytes).unwrap();
    let engine = open(dir.path(), 1_000_000).await;
    let status = engine.image_status().unwrap();
    assert_eq!(status.rejected, 1, "{status:?}");
    assert_eq!(status.started_from_seq, Some(first), "{status:?}");
    // Most flips fail the checksum; one in a length or a tag fails the parse before it.
    assert!(status.last_error.is_some(), "{status:?}");
    assert_eq!(state(&engine), before);
    assert!(newest.with_extension("rejected").exists());
    assert!(second > first);
    drop(engine);

    // The older one torn (a crash mid-copy): nothing of it is kept, the whole log is.
    let older = &files[0];
    let bytes = std::fs::read(older).unwrap();
    std::fs::write(older, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let engine = open(dir.path(), 1_000_000).await;
    let status = engine.image_status().unwrap();
    assert_eq!(status.rejected, 1, "{status:?}");
    assert_eq!(status.started_from_seq, None, "{status:?}");
    assert_eq!(status.replayed_at_start, before.0);
    assert_eq!(state(&engine), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_the_log_does_not_reach_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), 1_000_000).await;
    write_some(&engine, 0, 3).await;
    let early = state(&engine);
    drop(engine);
    // The store as it was then (an older backup).
    let backup = tempfile::tempdir().unwrap();
    for f in ["preflight.redb", "privacy.key"] {
        std::fs::copy(dir.path().join(f), backup.path().join(f)).unwrap();
    }
    let engine = open(dir.path(), 20).await;
    write_some(&engine, 3, 10).await;
    image_at(&engine, early.0 + 20).await;
    drop(engine);
    std::fs::create_dir_all(backup.path().join("images")).unwrap();
    for f in images(dir.path()) {
        std::fs::copy(
            &f,
            backup.path().join("images").join(f.file_name().unwrap()),
        )
        .unwrap();
    }
    let engine = open(backup.path(), 1_000_000).await;
    let status = engine.image_status().unwrap();
    assert_eq!(status.started_from_seq, None, "{status:?}");
    assert!(status.rejected >= 1, "{status:?}");
    assert!(status.last_error.unwrap().contains("past the change log"));
    assert_eq!(state(&engine), early);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_removes_the_images_that_name_its_subject() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), 20).await;
    write_some(&engine, 0, 10).await;
    image_at(&engine, 20).await;
    let stale = images(dir.path()).pop().unwrap();
    let kept = dir.path().join("stale-image");
    std::fs::copy(&stale, &kept).unwrap();
    let phone: u64 = 12025550004;
    assert!(contains(
        &std::fs::read(&stale).unwrap(),
        &phone.to_le_bytes()
    ));

    let reg = engine
        .register_consumer(&["+12025550004".to_string()], "", &caller())
        .await
        .unwrap();
    request(&engine, reg.consumer.seq, RequestType::Delete).await;
    // Every image from before the erasure is gone; any written since holds only tokens.
    assert!(!stale.exists());
    tokio::time::sleep(Duration::from_millis(200)).await;
    for f in images(dir.path()) {
        assert!(
            !contains(&std::fs::read(&f).unwrap(), &phone.to_le_bytes()),
            "{f:?}"
        );
    }
    let before = state(&engine);
    drop(engine);

    // A crash between the erasure's commit and the removal leaves an old image behind: the
    // start finds the erasure after it and replays the whole (rewritten) log instead.
    for f in images(dir.path()) {
        std::fs::remove_file(f).unwrap();
    }
    std::fs::copy(&kept, &stale).unwrap();
    let engine = open(dir.path(), 1_000_000).await;
    let status = engine.image_status().unwrap();
    assert_eq!(status.started_from_seq, None, "{status:?}");
    assert_eq!(state(&engine), before);
    assert!(!stale.exists(), "the stale image is removed");
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_can_write_an_image_before_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), 1_000_000).await;
    write_some(&engine, 0, 5).await;
    let written = engine.write_image().unwrap().expect("written");
    assert_eq!(written.seq, engine.index().seq());
    assert!(written.bytes > 0);
    assert_eq!(engine.image_status().unwrap().newest_seq, Some(written.seq));
    let before = state(&engine);
    drop(engine);
    let engine = open(dir.path(), 1_000_000).await;
    let status = engine.image_status().unwrap();
    assert_eq!(status.started_from_seq, Some(written.seq));
    assert_eq!(status.replayed_at_start, 0);
    assert_eq!(state(&engine), before);
}
