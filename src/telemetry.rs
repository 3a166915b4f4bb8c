//! Prometheus metrics: the recorder, decision counters, and the gauges read at scrape time.
use crate::model::Reason;
use crate::policy::Decision;
use metrics::Counter;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Request latency buckets (seconds): checks answer in microseconds, writes wait for fsync.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Installs the process-wide recorder. Call once, before the engine is built, so the
/// engine's counters register with it.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    let upkeep = handle.clone();
    // Histograms are drained into their buckets on render or upkeep; without it an idle
    // scraper would let them grow.
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "preflight_checks_total",
        "Checks answered, by verdict and first (primary) reason"
    );
    describe_histogram!(
        "preflight_request_duration_seconds",
        "Request latency by transport, method and outcome code (streams: whole stream)"
    );
    describe_gauge!(
        "preflight_index_seq",
        "Change-log position the index has applied"
    );
    describe_gauge!(
        "preflight_index_age_seconds",
        "Time since the index last heard from its store (0 for the embedded store)"
    );
    describe_gauge!(
        "preflight_index_identifiers",
        "Identifiers with consent, DNC or identity records"
    );
    describe_gauge!(
        "preflight_registry_numbers",
        "Numbers in the serving version of each registry list"
    );
    describe_gauge!(
        "preflight_registry_version",
        "Serving version of each registry list"
    );
    describe_gauge!(
        "preflight_registry_imported_timestamp_seconds",
        "When the serving version of each registry list was imported"
    );
    describe_counter!(
        "preflight_write_errors_total",
        "Writes that failed, by operation and gRPC code"
    );
    describe_counter!(
        "preflight_auth_failures_total",
        "Calls refused for missing, wrong or insufficient credentials"
    );
    describe_gauge!(
        "preflight_index_image_seq",
        "Seq of the newest index image on disk"
    );
    describe_gauge!(
        "preflight_index_image_bytes",
        "Size of the newest index image on disk"
    );
    describe_gauge!(
        "preflight_index_image_build_seconds",
        "How long the last index image build took"
    );
    describe_counter!(
        "preflight_index_image_rejected_total",
        "Index images refused at load (bad checksum, torn, or past the log)"
    );
    describe_counter!(
        "preflight_index_image_failures_total",
        "Index image builds that failed"
    );
    describe_gauge!(
        "preflight_privacy_requests_overdue",
        "Privacy requests past their response deadline"
    );
    describe_gauge!(
        "preflight_webhook_backlog",
        "Change-log events past an endpoint's acknowledged cursor"
    );
    describe_counter!(
        "preflight_webhook_failures_total",
        "Webhook delivery attempts that failed, by endpoint and HTTP status or failure kind"
    );
    describe_counter!(
        "preflight_webhook_deliveries_total",
        "Webhook events acknowledged with a 2xx, by endpoint"
    );
    describe_histogram!(
        "preflight_webhook_delivery_lag_seconds",
        "From an event's commit to its acknowledgement by the endpoint"
    );
    describe_gauge!(
        "preflight_webhook_paused",
        "1 while an endpoint is paused or disabled, else 0"
    );
}

/// An endpoint acknowledged an event `lag_seconds` after its commit.
pub fn webhook_delivered(endpoint: &str, lag_seconds: f64) {
    let e = endpoint.to_string();
    metrics::counter!("preflight_webhook_deliveries_total", "endpoint" => e.clone()).increment(1);
    metrics::histogram!("preflight_webhook_delivery_lag_seconds", "endpoint" => e)
        .record(lag_seconds);
}

/// A delivery attempt failed; `code` is the HTTP status or `timeout`, `connect`, `io`.
pub fn webhook_failure(endpoint: &str, code: String) {
    metrics::counter!("preflight_webhook_failures_total", "endpoint" => endpoint.to_string(), "code" => code)
        .increment(1);
}

pub fn webhook_state(endpoint: &str, backlog: u64, paused: bool) {
    let e = endpoint.to_string();
    metrics::gauge!("preflight_webhook_backlog", "endpoint" => e.clone()).set(backlog as f64);
    metrics::gauge!("preflight_webhook_paused", "endpoint" => e).set(if paused {
        1.0
    } else {
        0.0
    });
}

/// Counters of checks by verdict and primary reason, created once so a check pays an
/// atomic add rather than a registry lookup.
pub struct DecisionCounters {
    /// [0] ALLOW, [1 + i] BLOCK with Reason::ALL[i] first.
    by_outcome: Vec<Counter>,
}

impl DecisionCounters {
    pub fn new() -> DecisionCounters {
        let mut by_outcome = vec![metrics::counter!(
            "preflight_checks_total", "verdict" => "ALLOW", "reason" => "NONE"
        )];
        for r in Reason::ALL {
            by_outcome.push(metrics::counter!(
                "preflight_checks_total", "verdict" => "BLOCK", "reason" => r.as_str()
            ));
        }
        DecisionCounters { by_outcome }
    }

    pub const SLOTS: usize = 1 + Reason::ALL.len();

    pub fn slot(d: &Decision) -> usize {
        if d.allowed() {
            0
        } else {
            1 + d.reasons.0.trailing_zeros() as usize
        }
    }

    pub fn record(&self, d: &Decision) {
        self.by_outcome[Self::slot(d)].increment(1);
    }

    /// Adds counts gathered over a batch (indexed like `slot`).
    pub fn record_counts(&self, counts: &[u64; Self::SLOTS]) {
        for (c, n) in self.by_outcome.iter().zip(counts) {
            if *n > 0 {
                c.increment(*n);
            }
        }
    }
}

impl Default for DecisionCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// The index's state gauges: its seq, how long since it heard from its store, its size.
pub fn index_state(seq: u64, age_ms: crate::model::Millis, size: &IndexSize) {
    metrics::gauge!("preflight_index_seq").set(seq as f64);
    metrics::gauge!("preflight_index_age_seconds").set(age_ms as f64 / 1e3);
    metrics::gauge!("preflight_index_identifiers").set(size.identifiers as f64);
    metrics::gauge!("preflight_index_contacts").set(size.identifiers as f64);
    metrics::gauge!("preflight_index_bytes").set(size.bytes as f64);
    if let Some(b) = size.store_bytes {
        metrics::gauge!("preflight_store_bytes").set(b as f64);
    }
}

/// The newest index image's gauges.
pub fn image_state(newest_seq: Option<u64>, newest_bytes: Option<u64>) {
    if let Some(q) = newest_seq {
        metrics::gauge!("preflight_index_image_seq").set(q as f64);
    }
    if let Some(b) = newest_bytes {
        metrics::gauge!("preflight_index_image_bytes").set(b as f64);
    }
}

/// How big the index and its store are.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct IndexSize {
    /// Identifiers the index holds facts for (phones, emails, external ids, tokens).
    pub identifiers: usize,
    /// The index's own accounting of its memory.
    pub bytes: usize,
    pub store_bytes: Option<u64>,
}

/// One registry list's gauges.
pub fn registry_state(list: &str, count: u64, version: u64, imported_at: crate::model::Millis) {
    let name = list.to_string();
    metrics::gauge!("preflight_registry_numbers", "list" => name.clone()).set(count as f64);
    metrics::gauge!("preflight_registry_version", "list" => name.clone()).set(version as f64);
    metrics::gauge!("preflight_registry_imported_timestamp_seconds", "list" => name)
        .set(imported_at as f64 / 1e3);
}

/// Latency histograms of one method by (transport, code).
type MethodHistograms = Vec<(&'static str, &'static str, metrics::Histogram)>;

thread_local! {
    /// By method: the registry's lookup (build a labelled key, hash it, take a lock) was a
    /// twentieth of a unary check's CPU.
    static REQUEST_HISTOGRAMS: std::cell::RefCell<std::collections::HashMap<String, MethodHistograms>> =
        Default::default();
}

/// Records one finished request. Labels come from bounded sets (methods the API defines,
/// route templates, status codes), so the cache stays small.
pub fn request(transport: &'static str, method: &str, code: &'static str, seconds: f64) {
    REQUEST_HISTOGRAMS.with_borrow_mut(|cache| {
        let slots = match cache.get_mut(method) {
            Some(s) => s,
            None => cache.entry(method.to_string()).or_default(),
        };
        match slots.iter().find(|(t, c, _)| *t == transport && *c == code) {
            Some((_, _, h)) => h.record(seconds),
            None => {
                let h = metrics::histogram!(
                    "preflight_request_duration_seconds",
                    "transport" => transport, "method" => method.to_string(), "code" => code
                );
                h.record(seconds);
                slots.push((transport, code, h));
            }
        }
    });
}

pub fn auth_failure(transport: &'static str, kind: &'static str) {
    metrics::counter!("preflight_auth_failures_total", "transport" => transport, "kind" => kind)
        .increment(1);
}

/// Refused-authentication log lines, at most one per caller address per second: a scanner
/// or a misconfigured client cannot flood the log (the counter still counts every one).
pub struct RefusalLog {
    /// (transport, address) to (the second last logged, refusals suppressed since).
    seen: std::sync::Mutex<std::collections::HashMap<Caller, (u64, u64)>>,
}

type Caller = (&'static str, Option<std::net::IpAddr>);

/// Callers remembered at most; past this the table starts over (a line more, never fewer).
const REFUSAL_CALLERS: usize = 4096;

impl RefusalLog {
    pub fn new() -> RefusalLog {
        RefusalLog {
            seen: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Calls `log` with the count of refusals it did not log for this caller, unless this
    /// caller was logged within the current second.
    pub fn refused(
        &self,
        transport: &'static str,
        peer: Option<std::net::SocketAddr>,
        log: impl FnOnce(u64),
    ) {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if let Some(suppressed) = self.admit((transport, peer.map(|p| p.ip())), second) {
            log(suppressed);
        }
    }

    /// Some(suppressed since the last line) when a line may be written at `second`.
    fn admit(&self, ip: Caller, second: u64) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= REFUSAL_CALLERS && !seen.contains_key(&ip) {
            seen.clear();
        }
        let entry = seen.entry(ip).or_insert((u64::MAX, 0));
        if entry.0 == second {
            entry.1 += 1;
            return None;
        }
        let suppressed = entry.1;
        *entry = (second, 0);
        Some(suppressed)
    }
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's one refusal log.
pub fn refusal_log() -> &'static RefusalLog {
    static LOG: std::sync::OnceLock<RefusalLog> = std::sync::OnceLock::new();
    LOG.get_or_init(RefusalLog::new)
}

pub fn write_error(op: &'static str, code: &'static str) {
    metrics::counter!("preflight_write_errors_total", "op" => op, "code" => code).increment(1);
}

/// A replica's trouble staying in step with a shared store (by kind: connect, gap, reload,
/// store_reset, snapshot, registry...).
pub fn sync_error(kind: &'static str) {
    metrics::counter!("preflight_sync_errors_total", "kind" => kind).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReasonSet;

    #[test]
    fn refusals_log_once_per_caller_per_second_with_the_count_suppressed() {
        let log = RefusalLog::new();
        let a = ("grpc", Some("192.0.2.1".parse().unwrap()));
        let b = ("grpc", Some("192.0.2.2".parse().unwrap()));
        assert_eq!(log.admit(a, 10), Some(0));
        for _ in 0..99 {
            assert_eq!(log.admit(a, 10), None);
        }
        // Another caller in the same second still gets its line.
        assert_eq!(log.admit(b, 10), Some(0));
        assert_eq!(log.admit(a, 11), Some(99));
        assert_eq!(log.admit(a, 12), Some(0));
    }

    #[test]
    fn primary_reason_is_the_first_in_vocabulary_order() {
        let mut reasons = ReasonSet::EMPTY;
        reasons.insert(Reason::NoConsent);
        reasons.insert(Reason::DncFederal);
        let d = Decision {
            reasons,
            matched: Default::default(),
            index_seq: 0,
            next_allowed_at: None,
        };
        assert_eq!(
            DecisionCounters::slot(&d),
            1 + Reason::ALL
                .iter()
                .position(|r| *r == Reason::DncFederal)
                .unwrap()
        );
        let allow = Decision {
            reasons: ReasonSet::EMPTY,
            matched: Default::default(),
            index_seq: 0,
            next_allowed_at: None,
        };
        assert_eq!(DecisionCounters::slot(&allow), 0);
    }
}
