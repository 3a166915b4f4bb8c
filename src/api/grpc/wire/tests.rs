//! The hand-written wire path against prost: the same fields from the same bytes, the same
//! refusals of damaged bytes, and the same bytes for the same answers.
use super::*;
use crate::audit::Caller;
use crate::engine::{AddEntriesRequest, Arg, ConsentRequest, DncEntryRequest};
use crate::model::{Channel, ConsentStatus, DncType, Purpose};
use proptest::prelude::*;
use prost::Message;

fn ours(buf: &[u8]) -> Result<Vec<CheckFields<'_>>, Malformed> {
    let mut v = Vec::new();
    read_batch(buf, |c| v.push(c)).map(|()| v)
}

/// Both readers accept `buf` and read the same checks, or both refuse it.
fn agree(buf: &[u8]) -> Result<(), String> {
    let theirs = pb::CheckBatchRequest::decode(buf);
    let mine = ours(buf);
    match (&theirs, &mine) {
        (Ok(t), Ok(m)) => {
            let t: Vec<CheckFields<'_>> = t.checks.iter().map(CheckFields::of).collect();
            if &t == m {
                Ok(())
            } else {
                Err(format!("prost read {t:?}, ours {m:?} from {buf:02x?}"))
            }
        }
        (Err(_), Err(_)) => Ok(()),
        _ => Err(format!(
            "prost {}, ours {} on {buf:02x?}",
            verdict(theirs.is_ok()),
            verdict(mine.is_ok())
        )),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "accepted" } else { "refused" }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[+0-9 ()-]{0,16}",
        "\\PC{0,12}",
        "[a-z]{1,8}@[a-z]{1,8}\\.com",
    ]
}

fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![0..8i32, any::<i32>()]
}

prop_compose! {
    fn check()(
        contact in text(), channel in enum_value(), purpose in enum_value(), category in text(),
        direction in enum_value(), policy in text(), default_region in text(),
        at in proptest::option::of((any::<i64>(), any::<i32>())),
        correlation_id in text(), postal_code in text(), subject in text(),
    ) -> pb::CheckRequest {
        pb::CheckRequest {
            contact, channel, purpose, category, direction, policy, default_region,
            at: at.map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
            correlation_id, postal_code, subject,
        }
    }
}

fn batch() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(check(), 0..6)
        .prop_map(|checks| pb::CheckBatchRequest { checks }.encode_to_vec())
}

/// A valid message damaged the ways a wire or a bug damages one.
fn damaged() -> impl Strategy<Value = Vec<u8>> {
    (
        batch(),
        0..4u8,
        any::<prop::sample::Index>(),
        proptest::collection::vec(any::<u8>(), 1..6),
    )
        .prop_map(|(mut b, how, at, junk)| {
            let i = if b.is_empty() { 0 } else { at.index(b.len()) };
            match how {
                0 => b.truncate(i),
                1 if !b.is_empty() => b[i] = junk[0],
                2 => {
                    b.splice(i..i, junk);
                }
                _ => b.extend_from_slice(&junk),
            }
            b
        })
}

/// Both readers accept a lone `CheckRequest` (a unary Check) and read the same fields, or
/// both refuse it.
fn agree_one(buf: &[u8]) -> Result<(), String> {
    let theirs = pb::CheckRequest::decode(buf);
    let mine = read_check_request(buf);
    match (&theirs, &mine) {
        (Ok(t), Ok(m)) if CheckFields::of(t) == *m => Ok(()),
        (Err(_), Err(_)) => Ok(()),
        _ => Err(format!("prost {theirs:?}, ours {mine:?} on {buf:02x?}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn reads_a_lone_check_as_prost_does(c in check(), cut in any::<prop::sample::Index>()) {
        let b = c.encode_to_vec();
        prop_assert_eq!(agree_one(&b), Ok(()));
        let i = if b.is_empty() { 0 } else { cut.index(b.len()) };
        prop_assert_eq!(agree_one(&b[..i]), Ok(()));
    }

    #[test]
    fn lone_garbage_is_judged_as_prost_judges_it(b in proptest::collection::vec(any::<u8>(), 0..48)) {
        prop_assert_eq!(agree_one(&b), Ok(()));
    }

    #[test]
    fn reads_what_prost_reads(b in batch()) {
        prop_assert_eq!(agree(&b), Ok(()));
        let n = pb::CheckBatchRequest::decode(b.as_slice()).unwrap().checks.len();
        prop_assert_eq!(count_checks(&b), n);
    }

    #[test]
    fn refuses_what_prost_refuses(b in damaged()) {
        prop_assert_eq!(agree(&b), Ok(()));
    }

    #[test]
    fn garbage_is_judged_as_prost_judges_it(b in proptest::collection::vec(any::<u8>(), 0..48)) {
        prop_assert_eq!(agree(&b), Ok(()));
    }
}

/// `field`'s key bytes.
fn key(field: u32, wire: u8) -> Vec<u8> {
    let mut v = Vec::new();
    Writer { out: &mut v }.key(field, wire);
    v
}

fn len_field(field: u32, body: &[u8]) -> Vec<u8> {
    let mut v = key(field, LEN);
    Writer { out: &mut v }.varint(body.len() as u64);
    v.extend_from_slice(body);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn edge_cases_are_judged_as_prost_judges_them() {
    let contact = len_field(1, b"+12025550001");
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one empty check", len_field(1, b"")),
        ("contact", len_field(1, &contact)),
        (
            "bad UTF-8 in a string",
            len_field(1, &len_field(1, &[0xff, 0xfe])),
        ),
        (
            "a string field sent as a varint",
            len_field(1, &cat(&[&key(1, VARINT), &[5]])),
        ),
        (
            "an enum sent as a string",
            len_field(1, &len_field(2, b"x")),
        ),
        ("checks sent as a varint", cat(&[&key(1, VARINT), &[1]])),
        (
            "two `at`s merge",
            len_field(
                1,
                &cat(&[
                    &len_field(8, &cat(&[&key(1, VARINT), &[7], &key(2, VARINT), &[9]])),
                    &len_field(8, &cat(&[&key(2, VARINT), &[3]])),
                ]),
            ),
        ),
        ("field number 0", cat(&[&[0x02, 0x00]])),
        ("wire type 6", cat(&[&[0x0e]])),
        ("wire type 7", cat(&[&[0x0f]])),
        ("end group alone", key(5, END_GROUP)),
        (
            "a group",
            cat(&[
                &key(5, START_GROUP),
                &key(1, VARINT),
                &[1],
                &key(5, END_GROUP),
            ]),
        ),
        (
            "a group closed by another field",
            cat(&[&key(5, START_GROUP), &key(6, END_GROUP)]),
        ),
        ("an open group", key(5, START_GROUP)),
        (
            "fixed fields",
            cat(&[&key(9, FIXED32), &[1, 2, 3, 4], &key(9, FIXED64), &[0; 8]]),
        ),
        ("a short fixed64", cat(&[&key(9, FIXED64), &[0; 7]])),
        (
            "ten-byte varint, top bit",
            cat(&[&key(9, VARINT), &[0xff; 9], &[0x01]]),
        ),
        (
            "ten-byte varint, overflow",
            cat(&[&key(9, VARINT), &[0xff; 9], &[0x02]]),
        ),
        (
            "eleven-byte varint",
            cat(&[&key(9, VARINT), &[0x80; 10], &[0]]),
        ),
        ("a key past u32", cat(&[&[0xff; 5], &[0x7f], &[0]])),
        (
            "a length past the end",
            cat(&[&key(1, LEN), &[0x10], b"short"]),
        ),
        (
            "a string past its check's end",
            cat(&[&key(1, LEN), &[3], &key(1, LEN), &[5], b"abcdef"]),
        ),
        (
            "a negative enum",
            len_field(
                1,
                &cat(&[
                    &key(2, VARINT),
                    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                ]),
            ),
        ),
        (
            "an enum past i32",
            len_field(1, &cat(&[&key(2, VARINT), &[0x80, 0x80, 0x80, 0x80, 0x10]])),
        ),
    ];
    // Groups nested to prost's limit and one past it, at the top and inside a check.
    for depth in [98usize, 99, 100, 101] {
        let mut g = Vec::new();
        for _ in 0..depth {
            g.extend(key(5, START_GROUP));
        }
        for _ in 0..depth {
            g.extend(key(5, END_GROUP));
        }
        cases.push(("nested groups", g.clone()));
        cases.push(("nested groups in a check", len_field(1, &g)));
        cases.push(("nested groups in `at`", len_field(1, &len_field(8, &g))));
    }
    for (name, bytes) in &cases {
        assert_eq!(agree(bytes), Ok(()), "{name}");
    }
    // The same bytes as a lone check's fields, and nested groups at its own depth.
    for depth in [99usize, 100, 101] {
        let mut g = Vec::new();
        for _ in 0..depth {
            g.extend(key(5, START_GROUP));
        }
        for _ in 0..depth {
            g.extend(key(5, END_GROUP));
        }
        assert_eq!(agree_one(&g), Ok(()), "nested groups, {depth}");
        assert_eq!(agree_one(&len_field(8, &g)), Ok(()), "in `at`, {depth}");
    }
    for (name, bytes) in &cases {
        assert_eq!(agree_one(bytes), Ok(()), "{name}, as a lone check");
    }
}

fn ms(t: &str) -> crate::model::Millis {
    t.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

/// The answers of a real engine, written by hand and by prost, byte for byte.
#[tokio::test]
async fn writes_what_prost_writes() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::config::Config {
        data_dir: dir.path().to_path_buf(),
        ..crate::config::Config::default()
    };
    let clock = crate::clock::ManualClock::new(ms("2026-12-02T17:00:00Z"));
    let engine = crate::server::open_embedded(&config, "test", clock.clone()).unwrap();
    let caller = Caller::system("test");
    for (contact, channel) in [
        ("+12025550001", Channel::Sms),
        ("ann@example.com", Channel::Email),
    ] {
        engine
            .record_consent(
                ConsentRequest {
                    contact: contact.into(),
                    status: Arg::Set(ConsentStatus::Granted),
                    channels: vec![Arg::Set(channel)],
                    purposes: vec![Arg::Set(Purpose::Marketing)],
                    ..Default::default()
                },
                &caller,
            )
            .await
            .unwrap();
    }
    engine
        .add_entries(
            AddEntriesRequest {
                entries: vec![DncEntryRequest {
                    contact: "+12025550002".into(),
                    dnc_type: Arg::Set(DncType::Corporate),
                    ..Default::default()
                }],
                ..Default::default()
            },
            &caller,
        )
        .await
        .unwrap();

    let contacts = [
        "+12025550001",
        "+12025550002",
        "(305) 555-0103",
        "ann@example.com",
        "ext:crm-42",
        "not a number",
        "",
        "+441632960001",
    ];
    let mut checks = Vec::new();
    for (i, contact) in contacts.iter().enumerate() {
        for (channel, direction) in [0, 1, 2, 4, 99].into_iter().flat_map(|c| [(c, 1), (c, 2)]) {
            for at in [None, Some(ms("2026-12-03T03:00:00Z")), Some(-1)] {
                checks.push(pb::CheckRequest {
                    contact: contact.to_string(),
                    channel,
                    purpose: (i % 3) as i32,
                    direction,
                    postal_code: if i % 4 == 2 {
                        "33101".into()
                    } else {
                        String::new()
                    },
                    // Some answers over 127 bytes, whose length takes two bytes.
                    correlation_id: match i % 3 {
                        0 => format!("c-{i}"),
                        1 => "x".repeat(150),
                        _ => String::new(),
                    },
                    policy: if channel == 99 {
                        "nope".into()
                    } else {
                        String::new()
                    },
                    subject: "spring".into(),
                    at: at.map(super::super::convert::ms_to_ts),
                    ..Default::default()
                });
            }
        }
    }
    let reqs: Vec<CheckFields<'_>> = checks.iter().map(CheckFields::of).collect();
    let reqs: Vec<_> = reqs.iter().map(CheckFields::request).collect();
    let batch = engine.check_batch(&reqs).unwrap();
    assert!(batch.iter().any(|o| o.decision.allowed()), "some allowed");
    assert!(batch.iter().any(|o| o.problem.is_some()), "some refused");
    assert!(
        batch.iter().any(|o| o.decision.next_allowed_at.is_some()),
        "some outside the hours"
    );
    assert!(
        batch
            .iter()
            .any(|o| !o.decision.matched.as_slice().is_empty()),
        "some matched a record"
    );
    let theirs = pb::CheckBatchResponse {
        results: batch
            .iter()
            .map(super::super::convert::check_response)
            .collect(),
        index_seq: batch.index_seq,
    }
    .encode_to_vec();
    let mut w = BatchWriter::new(Vec::new());
    for o in batch.iter() {
        w.push(o);
    }
    let mine = w.finish(batch.index_seq);
    assert_eq!(mine, theirs);
    let long = batch
        .iter()
        .filter(|o| super::super::convert::check_response(o).encoded_len() >= 128)
        .count();
    assert!(long > 0, "some answers need a two-byte length");
    for o in batch.iter() {
        let mut one = Vec::new();
        write_check_response(o, &mut one);
        assert_eq!(
            one,
            super::super::convert::check_response(o).encode_to_vec(),
            "{o:?}"
        );
    }
}

#[test]
fn varint_lengths_match_prost() {
    for v in [
        0u64,
        1,
        127,
        128,
        16383,
        16384,
        u32::MAX as u64,
        u64::MAX >> 1,
        u64::MAX,
    ] {
        assert_eq!(varint_len(v), prost::encoding::encoded_len_varint(v), "{v}");
    }
}
