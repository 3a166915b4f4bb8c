//! `preflight scrub`: a CSV of any size through CheckStream with bounded memory; every
//! input column kept, verdict, reasons and normalized contact added.
use super::ServerArg;
use super::client::{connect, refused};
use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use preflight::api::grpc::convert::{channel_pb, ms_to_ts, purpose_pb, ts_to_ms};
use preflight::model::{Channel, Purpose};
use preflight::proto as pb;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct ScrubArgs {
    /// CSV with a header row.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Where the results go (written to `<out>.partial`, renamed when complete).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_parser = super::channel)]
    pub channel: Channel,
    #[arg(long, value_parser = super::purpose, default_value = "marketing")]
    pub purpose: Purpose,
    /// Header of the contact column; default: the first of contact, phone, phone_number,
    /// mobile, number, msisdn, email.
    #[arg(long)]
    pub column: Option<String>,
    #[arg(long, default_value = "")]
    pub category: String,
    #[arg(long, default_value = "")]
    pub policy: String,
    /// Region for numbers written without a country code (server default when empty).
    #[arg(long, default_value = "")]
    pub region: String,
    /// Header of the postal-code column (US ZIP or Canadian postal code); default: the first
    /// of postal_code, zip, zip_code, zipcode, postal, when present.
    #[arg(long)]
    pub postal_column: Option<String>,
    /// What the campaign is about (a topic, or a debt's account number), for frequency limits
    /// counted by subject; default: every attempt counts.
    #[arg(long, default_value = "")]
    pub subject: String,
    /// When the contacts would be made (RFC 3339, or a date); default: now, at the service.
    #[arg(long)]
    pub at: Option<String>,
    /// Field delimiter.
    #[arg(long, default_value = ",")]
    pub delimiter: char,
    /// Rows per CheckStream message.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// Batches in flight; memory stays near batch x in_flight rows.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub in_flight: u32,
    #[command(flatten)]
    pub server: ServerArg,
}

const CONTACT_HEADERS: &[&str] = &[
    "contact",
    "phone",
    "phone_number",
    "mobile",
    "number",
    "msisdn",
    "email",
];
const POSTAL_HEADERS: &[&str] = &["postal_code", "zip", "zip_code", "zipcode", "postal"];
const ADDED: [&str; 4] = [
    "verdict",
    "reasons",
    "normalized_contact",
    "next_allowed_at",
];

fn header_names(headers: &csv::ByteRecord) -> Vec<String> {
    headers
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect()
}

/// The postal-code column: the one named, else the first usual name present, else none.
fn postal_column(headers: &csv::ByteRecord, wanted: Option<&str>) -> Result<Option<usize>> {
    let names = header_names(headers);
    let find = |w: &str| names.iter().position(|n| n.eq_ignore_ascii_case(w));
    match wanted {
        Some(w) => find(w).map(Some).ok_or_else(|| {
            anyhow!(
                "--postal-column `{w}` is not a header of the input; headers: {}",
                names.join(", ")
            )
        }),
        None => Ok(POSTAL_HEADERS.iter().find_map(|w| find(w))),
    }
}

fn contact_column(headers: &csv::ByteRecord, wanted: Option<&str>) -> Result<usize> {
    let names = header_names(headers);
    let find = |w: &str| names.iter().position(|n| n.eq_ignore_ascii_case(w));
    match wanted {
        Some(w) => find(w).ok_or_else(|| {
            anyhow!(
                "--column `{w}` is not a header of the input; headers: {}",
                names.join(", ")
            )
        }),
        None => CONTACT_HEADERS.iter().find_map(|w| find(w)).ok_or_else(|| {
            anyhow!(
                "no contact column found (looked for {}); name it with --column; headers: {}",
                CONTACT_HEADERS.join(", "),
                names.join(", ")
            )
        }),
    }
}

/// Added column names, prefixed where the input already uses them.
fn added_headers(headers: &csv::ByteRecord) -> Vec<String> {
    ADDED
        .iter()
        .map(|a| {
            if headers.iter().any(|h| h.eq_ignore_ascii_case(a.as_bytes())) {
                format!("preflight_{a}")
            } else {
                a.to_string()
            }
        })
        .collect()
}

#[derive(Default)]
struct Summary {
    rows: u64,
    allow: u64,
    block: u64,
    reasons: BTreeMap<&'static str, u64>,
}

fn reason_name(r: i32) -> &'static str {
    pb::Reason::try_from(r)
        .map(|r| r.as_str_name().trim_start_matches("REASON_"))
        .unwrap_or("UNKNOWN")
}

/// The input rows of one batch, fields copied end to end into one buffer (one allocation
/// per batch rather than two per row).
struct Batch {
    bytes: Vec<u8>,
    /// End offset of each field in `bytes`.
    field_ends: Vec<usize>,
    /// End index (into `field_ends`) of each row.
    row_ends: Vec<usize>,
}

impl Batch {
    fn with_capacity(rows: usize, fields: usize) -> Batch {
        Batch {
            bytes: Vec::with_capacity(rows * 48),
            field_ends: Vec::with_capacity(rows * fields),
            row_ends: Vec::with_capacity(rows),
        }
    }

    fn push(&mut self, r: &csv::ByteRecord) {
        for f in r.iter() {
            self.bytes.extend_from_slice(f);
            self.field_ends.push(self.bytes.len());
        }
        self.row_ends.push(self.field_ends.len());
    }

    fn len(&self) -> usize {
        self.row_ends.len()
    }

    fn is_empty(&self) -> bool {
        self.row_ends.is_empty()
    }

    /// The fields of row `i`.
    fn row(&self, i: usize) -> impl Iterator<Item = &[u8]> {
        let first = if i == 0 { 0 } else { self.row_ends[i - 1] };
        (first..self.row_ends[i]).map(move |f| {
            let start = if f == 0 { 0 } else { self.field_ends[f - 1] };
            &self.bytes[start..self.field_ends[f]]
        })
    }
}

/// The input CSV, read from its header row on.
struct Input {
    reader: csv::Reader<std::fs::File>,
    headers: csv::ByteRecord,
    column: usize,
    postal: Option<usize>,
    delimiter: u8,
    /// Bytes in the file, for the progress bar.
    total: u64,
}

/// `--delimiter` as the byte the CSV reader takes.
pub(super) fn delimiter_byte(c: char) -> Result<u8> {
    u8::try_from(c)
        .ok()
        .filter(u8::is_ascii)
        .ok_or_else(|| anyhow!("--delimiter `{c}` must be one ASCII character"))
}

fn open_input(a: &ScrubArgs) -> Result<Input> {
    let file =
        std::fs::File::open(&a.input).with_context(|| format!("--in {}", a.input.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let delimiter = delimiter_byte(a.delimiter)?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(false)
        .buffer_capacity(1 << 20)
        .from_reader(file);
    let headers = reader
        .byte_headers()
        .with_context(|| format!("--in {}: reading the header row", a.input.display()))?
        .clone();
    let column = contact_column(&headers, a.column.as_deref())?;
    let postal = postal_column(&headers, a.postal_column.as_deref())?;
    Ok(Input {
        reader,
        headers,
        column,
        postal,
        delimiter,
        total,
    })
}

/// The output CSV, written under a `.partial` name with the answer columns in its header.
fn open_output(a: &ScrubArgs, input: &Input) -> Result<(csv::Writer<std::fs::File>, PathBuf)> {
    let partial = partial_path(&a.out);
    let out_file =
        std::fs::File::create(&partial).with_context(|| format!("--out {}", partial.display()))?;
    let mut writer = csv::WriterBuilder::new()
        .delimiter(input.delimiter)
        .buffer_capacity(1 << 20)
        .from_writer(out_file);
    let mut out_headers = input.headers.clone();
    for h in added_headers(&input.headers) {
        out_headers.push_field(h.as_bytes());
    }
    writer.write_byte_record(&out_headers)?;
    Ok((writer, partial))
}

/// Parses the CSV on its own thread, sending each batch's rows (to wait for their answers)
/// and its checks; returns the rows read.
fn spawn_reader(
    a: &ScrubArgs,
    mut input: Input,
    bar: indicatif::ProgressBar,
    rows_tx: std::sync::mpsc::SyncSender<Batch>,
    req_tx: tokio::sync::mpsc::Sender<pb::CheckBatchRequest>,
    at: Option<prost_types::Timestamp>,
) -> tokio::task::JoinHandle<Result<u64>> {
    let template = pb::CheckRequest {
        channel: channel_pb(a.channel) as i32,
        purpose: purpose_pb(a.purpose) as i32,
        category: a.category.clone(),
        policy: a.policy.clone(),
        default_region: a.region.clone(),
        subject: a.subject.clone(),
        at,
        ..Default::default()
    };
    let batch_size = a.batch as usize;
    let input_name = a.input.display().to_string();
    let width = input.headers.len();
    tokio::task::spawn_blocking(move || -> Result<u64> {
        let mut rows = 0u64;
        let mut record = csv::ByteRecord::new();
        loop {
            let mut batch = Batch::with_capacity(batch_size, width);
            let mut checks = Vec::with_capacity(batch_size);
            while batch.len() < batch_size {
                let more = input.reader.read_byte_record(&mut record).map_err(|e| {
                    anyhow!(
                        "{input_name}: {e} (line {})",
                        e.position().map_or(0, |p| p.line())
                    )
                })?;
                if !more {
                    break;
                }
                let contact = record.get(input.column).unwrap_or_default();
                let mut c = template.clone();
                c.contact = String::from_utf8_lossy(contact).into_owned();
                if let Some(p) = input.postal.and_then(|i| record.get(i)) {
                    c.postal_code = String::from_utf8_lossy(p).into_owned();
                }
                checks.push(c);
                batch.push(&record);
            }
            if batch.is_empty() {
                return Ok(rows);
            }
            rows += batch.len() as u64;
            bar.set_position(input.reader.position().byte());
            if rows_tx.send(batch).is_err() {
                return Ok(rows);
            }
            if req_tx
                .blocking_send(pb::CheckBatchRequest { checks })
                .is_err()
            {
                return Ok(rows);
            }
        }
    })
}

/// Writes each answer beside its rows on its own thread, in order, as they come.
fn spawn_writer(
    mut writer: csv::Writer<std::fs::File>,
    rows_rx: std::sync::mpsc::Receiver<Batch>,
    resp_rx: std::sync::mpsc::Receiver<pb::CheckBatchResponse>,
) -> tokio::task::JoinHandle<Result<Summary>> {
    tokio::task::spawn_blocking(move || -> Result<Summary> {
        let mut s = Summary::default();
        let mut reasons = String::new();
        for resp in resp_rx {
            let rows = rows_rx
                .recv()
                .map_err(|_| anyhow!("the service answered more batches than were sent"))?;
            if resp.results.len() != rows.len() {
                bail!(
                    "the service answered {} results for a batch of {} rows",
                    resp.results.len(),
                    rows.len()
                );
            }
            for (i, r) in resp.results.into_iter().enumerate() {
                let allowed = r.verdict == pb::Verdict::Allow as i32;
                if allowed {
                    s.allow += 1;
                } else {
                    s.block += 1;
                }
                reasons.clear();
                for (i, code) in r.reasons.iter().enumerate() {
                    if i > 0 {
                        reasons.push(';');
                    }
                    let name = reason_name(*code);
                    reasons.push_str(name);
                    *s.reasons.entry(name).or_default() += 1;
                }
                let verdict: &[u8] = if allowed { b"ALLOW" } else { b"BLOCK" };
                let next = r
                    .next_allowed_at
                    .as_ref()
                    .map(|t| preflight::model::time::format_time(ts_to_ms(t)))
                    .unwrap_or_default();
                let added = [
                    verdict,
                    reasons.as_bytes(),
                    r.normalized_contact.as_bytes(),
                    next.as_bytes(),
                ];
                writer.write_record(rows.row(i).chain(added))?;
                s.rows += 1;
            }
        }
        writer.flush()?;
        writer
            .into_inner()
            .map_err(|e| anyhow!("{}", e.error()))?
            .sync_all()?;
        Ok(s)
    })
}

pub async fn scrub(a: ScrubArgs) -> Result<()> {
    let started = Instant::now();
    let at =
        a.at.as_deref()
            .map(|t| preflight::model::time::parse_time(t.trim()).map_err(|e| anyhow!("--at: {e}")))
            .transpose()?
            .map(ms_to_ts);
    let input = open_input(&a)?;
    let (writer, partial) = open_output(&a, &input)?;
    let mut client =
        pb::decision_service_client::DecisionServiceClient::new(connect(&a.server).await?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);

    let in_flight = a.in_flight as usize;
    let (req_tx, req_rx) = tokio::sync::mpsc::channel::<pb::CheckBatchRequest>(in_flight);
    // The rows of each batch wait here for their answers; bounded like the requests.
    let (rows_tx, rows_rx) = std::sync::mpsc::sync_channel::<Batch>(in_flight + 1);
    let bar = progress(input.total);
    let reader_task = spawn_reader(&a, input, bar.clone(), rows_tx, req_tx, at);

    let mut responses = client
        .check_stream(tokio_stream::wrappers::ReceiverStream::new(req_rx))
        .await
        .map_err(refused)?
        .into_inner();
    let (resp_tx, resp_rx) = std::sync::mpsc::sync_channel::<pb::CheckBatchResponse>(in_flight + 1);
    let writer_task = spawn_writer(writer, rows_rx, resp_rx);
    let mut stream_error = None;
    loop {
        match responses.message().await {
            Ok(Some(r)) => {
                if resp_tx.send(r).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(status) => {
                stream_error = Some(refused(status));
                break;
            }
        }
    }
    drop(resp_tx);
    // Ends the call, so a reader waiting to send learns that nobody listens any more.
    drop(responses);
    drop(client);
    let written = writer_task.await?;
    let read = reader_task.await?;
    bar.finish_and_clear();
    let discard = || {
        let _ = std::fs::remove_file(&partial);
    };
    if let Some(e) = stream_error {
        discard();
        return Err(e.context("the scrub stopped; no output was written"));
    }
    let read = read.inspect_err(|_| discard())?;
    let s = written.inspect_err(|_| discard())?;
    if s.rows != read {
        discard();
        bail!("read {read} rows but received answers for {}", s.rows);
    }
    std::fs::rename(&partial, &a.out)
        .with_context(|| format!("renaming {} to {}", partial.display(), a.out.display()))?;
    report(&s, started.elapsed().as_secs_f64(), &a.out);
    Ok(())
}

fn report(s: &Summary, secs: f64, out: &Path) {
    eprintln!(
        "scrubbed {} rows in {:.2} s ({:.0} rows/s): ALLOW {}, BLOCK {}",
        s.rows,
        secs,
        s.rows as f64 / secs.max(1e-9),
        s.allow,
        s.block
    );
    for (reason, n) in &s.reasons {
        eprintln!("  {reason:<18} {n}");
    }
    eprintln!("results: {}", out.display());
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

fn progress(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} scrubbing [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_contact_column_or_explains() {
        let h = csv::ByteRecord::from(vec!["id", "Name", "Phone", "email"]);
        assert_eq!(contact_column(&h, None).unwrap(), 2);
        assert_eq!(contact_column(&h, Some("EMAIL")).unwrap(), 3);
        let e = contact_column(&h, Some("tel")).unwrap_err().to_string();
        assert!(
            e.contains("`tel`") && e.contains("id, Name, Phone, email"),
            "{e}"
        );
        let none = csv::ByteRecord::from(vec!["a", "b"]);
        assert!(contact_column(&none, None).is_err());
    }

    #[test]
    fn added_columns_do_not_clobber_input_columns() {
        let h = csv::ByteRecord::from(vec!["phone", "Verdict"]);
        assert_eq!(
            added_headers(&h),
            [
                "preflight_verdict",
                "reasons",
                "normalized_contact",
                "next_allowed_at"
            ]
        );
    }
}
