//! The DecisionService's hand-written wire path, from outside: raw bytes sent to Check,
//! CheckBatch and CheckStream of the real binary. Malformed messages are INVALID_ARGUMENT
//! for the call whenever prost refuses them too, well-formed ones are answered as prost's
//! structs would be, and a bad item in a batch is still that item's BLOCK, in order.
mod common;

use bytes::Bytes;
use common::*;
use pb::{Channel as Ch, Purpose as P, Reason as R};
use preflight::api::grpc::BytesCodec as Raw;
use preflight::proto as pb;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

const SERVICE: &str = "/preflight.v1.DecisionService/";

async fn unary(ch: &Channel, method: &str, body: Vec<u8>) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(format!("{SERVICE}{method}")).unwrap();
    grpc.unary(tonic::Request::new(Bytes::from(body)), path, Raw)
        .await
        .map(|r| r.into_inner())
}

/// Sends `bodies` on one CheckStream; the answers, up to the first error.
async fn stream(ch: &Channel, bodies: Vec<Vec<u8>>) -> (Vec<Bytes>, Option<tonic::Status>) {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(format!("{SERVICE}CheckStream")).unwrap();
    let out = futures::stream::iter(bodies.into_iter().map(Bytes::from));
    let mut answers = Vec::new();
    let mut resp = match grpc.streaming(tonic::Request::new(out), path, Raw).await {
        Ok(r) => r.into_inner(),
        Err(e) => return (answers, Some(e)),
    };
    loop {
        match resp.message().await {
            Ok(Some(a)) => answers.push(a),
            Ok(None) => return (answers, None),
            Err(e) => return (answers, Some(e)),
        }
    }
}

fn garbage() -> Vec<Vec<u8>> {
    // Longer than a window of checks, so some are decided before the damage is read.
    let good = pb::CheckBatchRequest {
        checks: vec![check_req("+12025550123", Ch::Voice, P::Service); 40],
    }
    .encode_to_vec();
    let mut cases = vec![
        vec![0xff; 12],
        vec![0x0a, 0x7f, 0x01],
        vec![0x0f],
        vec![0x0a, 0x02, 0x0a, 0x05],
        vec![0x0a, 0x03, 0x0a, 0x01, 0xc3],
        vec![0x23],
    ];
    for cut in [1, 5, good.len() / 2, good.len() - 1] {
        cases.push(good[..cut].to_vec());
    }
    cases
}

/// Every other service decodes with prost: a request it cannot read is the caller's bad
/// input, INVALID_ARGUMENT naming the message, and the service answers the next call.
#[tokio::test]
async fn malformed_requests_to_the_other_services_are_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let calls = [
        ("ConsentService/RecordConsent", "RecordConsentRequest"),
        ("DncService/AddEntries", "AddEntriesRequest"),
        ("AttemptService/RecordAttempts", "RecordAttemptsRequest"),
        ("PrivacyService/SubmitRequest", "SubmitRequestRequest"),
    ];
    for (method, message) in calls {
        for bytes in [vec![0xff; 12], vec![0x0a, 0x7f, 0x01]] {
            let mut grpc = tonic::client::Grpc::new(ch.clone());
            grpc.ready().await.unwrap();
            let path =
                http::uri::PathAndQuery::try_from(format!("/preflight.v1.{method}")).unwrap();
            let err = grpc
                .unary(tonic::Request::new(Bytes::from(bytes.clone())), path, Raw)
                .await
                .expect_err(method);
            assert_eq!(
                err.code(),
                Code::InvalidArgument,
                "{method} {bytes:02x?}: {err:?}"
            );
            assert!(
                err.message().contains(message),
                "{method}: {}",
                err.message()
            );
        }
    }
    let ok = pb::consent_service_client::ConsentServiceClient::new(ch.clone())
        .record_consent(pb::RecordConsentRequest {
            contact: "+12025550123".into(),
            status: pb::ConsentStatus::Withdrawn as i32,
            channels: vec![Ch::Sms as i32],
            purposes: vec![P::Marketing as i32],
            ..Default::default()
        })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test]
async fn malformed_messages_are_invalid_argument_as_prost_says() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;

    for bytes in garbage() {
        // Only what prost refuses too is a refusal; the rest must be answered.
        let prost_batch = pb::CheckBatchRequest::decode(bytes.as_slice());
        match unary(&ch, "CheckBatch", bytes.clone()).await {
            Ok(a) => {
                let b = prost_batch.expect("answered only what prost reads");
                let a = pb::CheckBatchResponse::decode(a).unwrap();
                assert_eq!(a.results.len(), b.checks.len(), "{bytes:02x?}");
            }
            Err(e) => {
                let p = prost_batch.expect_err("refused only what prost refuses");
                assert_eq!(e.code(), Code::InvalidArgument, "{bytes:02x?}: {e:?}");
                assert!(
                    e.message().contains(&p.to_string()),
                    "{} vs {p}",
                    e.message()
                );
            }
        }
        let prost_one = pb::CheckRequest::decode(bytes.as_slice());
        match unary(&ch, "Check", bytes.clone()).await {
            Ok(a) => {
                prost_one.expect("answered only what prost reads");
                pb::CheckResponse::decode(a).unwrap();
            }
            Err(e) => {
                // A lone check that reads is still refused when it names no channel.
                if prost_one.is_err() {
                    assert_eq!(e.code(), Code::InvalidArgument, "{bytes:02x?}: {e:?}");
                }
            }
        }
    }

    // On a stream, the good messages before a malformed one are answered in order, then
    // the call ends INVALID_ARGUMENT.
    let good = pb::CheckBatchRequest {
        checks: vec![check_req("+12025550123", Ch::Voice, P::Service)],
    }
    .encode_to_vec();
    let (answers, err) = stream(&ch, vec![good.clone(), good.clone(), vec![0xff; 4]]).await;
    assert_eq!(answers.len(), 2);
    assert_eq!(err.map(|e| e.code()), Some(Code::InvalidArgument));

    // The service stays up and answers.
    let (answers, err) = stream(&ch, vec![good]).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(answers.len(), 1);
}

#[tokio::test]
async fn batch_answers_through_the_wire_path_match_the_unary_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let mut d = decision(&ch);

    let mut checks = vec![
        check_req("+12025550123", Ch::Voice, P::Service),
        check_req("not a number", Ch::Sms, P::Marketing),
        check_req("(305) 555-0100", Ch::Sms, P::Marketing),
        check_req("ann@example.com", Ch::Email, P::Service),
    ];
    // Past the first window of checks, a bad item: an unknown channel value.
    for i in 0..30 {
        checks.push(check_req(
            &format!("+1202555{:04}", 2000 + i),
            Ch::Voice,
            P::Service,
        ));
    }
    let mut bad = check_req("+12025550124", Ch::Voice, P::Service);
    bad.channel = 99;
    checks.push(bad);
    checks.push(pb::CheckRequest {
        correlation_id: "last".into(),
        ..check_req("+12025550125", Ch::Voice, P::Marketing)
    });
    let req = pb::CheckBatchRequest {
        checks: checks.clone(),
    };
    let mut bytes = req.encode_to_vec();
    // An unknown field (number 15, a string) at the top level is skipped, as prost does.
    bytes.extend_from_slice(&[0x7a, 0x03, b'x', b'y', b'z']);
    let answer =
        pb::CheckBatchResponse::decode(unary(&ch, "CheckBatch", bytes).await.unwrap()).unwrap();
    assert_eq!(answer.results.len(), checks.len());
    let bad = &answer.results[34];
    assert_eq!(bad.reasons, vec![R::InvalidRequest as i32]);
    assert!(
        bad.detail.starts_with("checks[34].channel"),
        "{}",
        bad.detail
    );
    assert_eq!(answer.results[35].correlation_id, "last");
    for (i, (c, got)) in checks.iter().zip(&answer.results).enumerate() {
        if i == 34 {
            continue;
        }
        let mut want = d.check(c.clone()).await.unwrap().into_inner();
        // The index may have moved on between the calls; nothing was written, so not here.
        want.index_age_ms = got.index_age_ms;
        assert_eq!(&want, got, "check {i}");
    }

    // A method the service does not have is UNIMPLEMENTED, as tonic says it.
    let e = unary(&ch, "CheckEverything", vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
}
