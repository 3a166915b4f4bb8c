//! Writes across a failover: eight writers recording withdrawals (each retried with its
//! idempotency key until answered) while something is killed under them, and a count of the
//! acknowledged ones a replica does not show.
use super::*;
use preflight::proto as pb;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Eight writers through `ch`; after 1.5 s `kill` runs; they go on until 50 writes were
/// answered after it (or 40 s). Returns the contacts acknowledged, and how many after.
pub async fn withdrawals_while(ch: &Channel, kill: impl FnOnce()) -> (Vec<String>, usize) {
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Default::default();
    let stop_at: Arc<Mutex<Option<Instant>>> = Default::default();
    let mut writers = Vec::new();
    for w in 0..8u32 {
        let (ch, acked, stop_at) = (ch.clone(), acked.clone(), stop_at.clone());
        writers.push(tokio::spawn(async move {
            let mut c = consent(&ch);
            for n in 0u32.. {
                if stop_at.lock().unwrap().is_some_and(|t| Instant::now() > t) {
                    return;
                }
                let contact = format!("+1202{:03}{:04}", 200 + w, n);
                let mut req = withdraw(&contact);
                req.idempotency_key = format!("w-{contact}");
                // A failed write is retried with its idempotency key until it is answered.
                loop {
                    if c.record_consent(req.clone()).await.is_ok() {
                        acked
                            .lock()
                            .unwrap()
                            .push((contact.clone(), Instant::now()));
                        break;
                    }
                    if stop_at.lock().unwrap().is_some_and(|t| Instant::now() > t) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = Instant::now();
    kill();
    // Until writes are answered again after the failover, then a little more.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let after = acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at > killed)
            .count();
        if after >= 50 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    *stop_at.lock().unwrap() = Some(Instant::now());
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let after = acked.iter().filter(|(_, at)| *at > killed).count();
    (acked.into_iter().map(|(c, _)| c).collect(), after)
}

/// Acknowledged withdrawals a replica does not show.
pub async fn missing(ch: &tonic::transport::Channel, contacts: &[String]) -> usize {
    let mut d = decision(ch);
    let mut lost = 0;
    for chunk in contacts.chunks(1000) {
        let r = d
            .check_batch(pb::CheckBatchRequest {
                checks: chunk
                    .iter()
                    .map(|c| check_req(c, pb::Channel::Sms, pb::Purpose::Marketing))
                    .collect(),
            })
            .await
            .unwrap()
            .into_inner();
        lost += r
            .results
            .iter()
            .filter(|x| !x.reasons.contains(&(pb::Reason::ConsentWithdrawn as i32)))
            .count();
    }
    lost
}

pub async fn wait_until_async<F, Fut>(secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
