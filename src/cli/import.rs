//! `preflight consent import` and `preflight dnc add --in`: a CSV or JSON Lines file (plain
//! or gzip) read row by row into chunks, sent in order under one import id so that a re-run
//! resumes, with a progress bar, a rejects file (line, column, reason), a reject threshold
//! and a summary.
use super::ServerArg;
use super::client::{Conn, connect, refused};
use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use preflight::api::grpc::convert::{channel_pb, dnc_type_pb, ms_to_ts, purpose_pb, status_pb};
use preflight::model::{Channel, ConsentStatus, DncType, Purpose};
use preflight::proto as pb;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub const CONSENT_COLUMNS: &[&str] = &[
    "contact",
    "status",
    "channels",
    "purposes",
    "category",
    "effective_at",
    "expires_at",
    "source",
    "proof",
    "campaign_id",
    "external_id",
];

pub const DNC_COLUMNS: &[&str] = &["contact", "type", "list", "expires_at", "reason"];

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// CSV with a header row, or JSON Lines (`.jsonl`, `.ndjson`); plain or gzip.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Names the import; the same id again resumes after the chunks already committed
    /// (within the service's idempotency_hours). Default: derived from the file's path, size
    /// and modification time, and printed.
    #[arg(long)]
    pub import_id: Option<String>,
    /// Where rejected rows are listed (line, column, reason). Default: `<in>.rejects.csv`.
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Refuse once more than this fraction of the rows so far is rejected (default: the
    /// service's registry_max_reject_fraction, 0.001).
    #[arg(long)]
    pub max_reject_fraction: Option<f64>,
    /// `csv` or `jsonl`; default from the file name.
    #[arg(long)]
    pub format: Option<String>,
    /// Field delimiter of a CSV.
    #[arg(long, default_value = ",")]
    pub delimiter: char,
    /// Rows a chunk (one commit).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub chunk: u32,
    /// Region for numbers written without a country code (server default when empty).
    #[arg(long, default_value = "")]
    pub region: String,
    #[command(flatten)]
    pub server: ServerArg,
}

/// One row of the file: its line and its fields by column.
struct Row {
    line: u64,
    fields: Vec<(usize, String)>,
}

#[derive(Debug, Clone, PartialEq)]
struct Reject {
    line: u64,
    column: String,
    reason: String,
}

/// Bytes read from the file itself (before gunzip), for the progress bar.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn open(path: &Path, read: Arc<AtomicU64>) -> Result<Box<dyn BufRead + Send>> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut magic = [0u8; 2];
    let gz = f.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))?;
    let counted = Counting { inner: f, read };
    Ok(if gz {
        Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, counted)),
        ))
    } else {
        Box::new(std::io::BufReader::with_capacity(1 << 20, counted))
    })
}

fn is_jsonl(path: &Path, format: Option<&str>) -> Result<bool> {
    match format {
        Some(f) if f.eq_ignore_ascii_case("csv") => Ok(false),
        Some(f) if f.eq_ignore_ascii_case("jsonl") || f.eq_ignore_ascii_case("ndjson") => Ok(true),
        Some(f) => bail!("--format `{f}`: use csv or jsonl"),
        None => {
            let name = path.to_string_lossy().to_ascii_lowercase();
            let name = name.strip_suffix(".gz").unwrap_or(&name);
            Ok(name.ends_with(".jsonl") || name.ends_with(".ndjson"))
        }
    }
}

/// The column index of each header, refusing a header it does not know (a typo must never
/// drop a column's data silently) and one it needs but is missing.
fn columns(headers: &[String], known: &[&str], required: &[&str]) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(headers.len());
    for h in headers {
        let h = h.trim().to_ascii_lowercase();
        match known.iter().position(|k| *k == h) {
            Some(i) => {
                if out.contains(&i) {
                    bail!("column `{h}` appears twice in the header");
                }
                out.push(i)
            }
            None => bail!(
                "unknown column `{h}`; the columns are: {}",
                known.join(", ")
            ),
        }
    }
    for r in required {
        let i = known
            .iter()
            .position(|k| k == r)
            .expect("required is known");
        if !out.contains(&i) {
            bail!(
                "the header has no `{r}` column (columns: {})",
                headers.join(", ")
            );
        }
    }
    Ok(out)
}

/// Reads rows and hands them on in order; a line it cannot read as a row is a reject.
fn read_rows(
    input: Box<dyn BufRead + Send>,
    jsonl: bool,
    delimiter: u8,
    known: &'static [&'static str],
    required: &'static [&'static str],
    mut each: impl FnMut(std::result::Result<Row, Reject>) -> Result<bool>,
) -> Result<()> {
    if jsonl {
        for (i, line) in input.lines().enumerate() {
            let line_no = i as u64 + 1;
            let line = line.with_context(|| format!("line {line_no}"))?;
            if line.trim().is_empty() {
                continue;
            }
            let row =
                match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line) {
                    Err(e) => Err(Reject {
                        line: line_no,
                        column: String::new(),
                        reason: format!("not a JSON object: {e}"),
                    }),
                    Ok(obj) => {
                        let mut fields = Vec::with_capacity(obj.len());
                        for (k, v) in obj {
                            let Some(c) = known.iter().position(|n| *n == k) else {
                                bail!(
                                    "line {line_no}: unknown column `{k}`; the columns are: {}",
                                    known.join(", ")
                                );
                            };
                            let text = match v {
                                serde_json::Value::Null => String::new(),
                                serde_json::Value::String(s) => s,
                                serde_json::Value::Array(a) => a
                                    .iter()
                                    .map(|x| {
                                        x.as_str()
                                            .map(str::to_string)
                                            .unwrap_or_else(|| x.to_string())
                                    })
                                    .collect::<Vec<_>>()
                                    .join(";"),
                                other => other.to_string(),
                            };
                            fields.push((c, text));
                        }
                        let missing = required.iter().find(|r| {
                            let i = known.iter().position(|k| k == *r).expect("known");
                            !fields.iter().any(|(c, _)| *c == i)
                        });
                        match missing {
                            Some(r) => Err(Reject {
                                line: line_no,
                                column: r.to_string(),
                                reason: "missing".into(),
                            }),
                            None => Ok(Row {
                                line: line_no,
                                fields,
                            }),
                        }
                    }
                };
            if !each(row)? {
                return Ok(());
            }
        }
        return Ok(());
    }
    let mut rd = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(input);
    let headers: Vec<String> = rd
        .headers()
        .context("cannot read the header row")?
        .iter()
        .map(str::to_string)
        .collect();
    let cols = columns(&headers, known, required)?;
    let mut rec = csv::StringRecord::new();
    loop {
        match rd.read_record(&mut rec) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = rec.position().map(|p| p.line()).unwrap_or(0);
                let row = if rec.len() != cols.len() {
                    Err(Reject {
                        line,
                        column: String::new(),
                        reason: format!("{} fields where the header has {}", rec.len(), cols.len()),
                    })
                } else {
                    Ok(Row {
                        line,
                        fields: cols
                            .iter()
                            .copied()
                            .zip(rec.iter().map(str::to_string))
                            .collect(),
                    })
                };
                if !each(row)? {
                    return Ok(());
                }
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(anyhow!("line {line}: {e}"));
                }
                if !each(Err(Reject {
                    line,
                    column: String::new(),
                    reason: e.to_string(),
                }))? {
                    return Ok(());
                }
            }
        }
    }
}

/// A time column: RFC 3339, a date (midnight UTC), `YYYY-MM-DD HH:MM:SS` (UTC), or Unix
/// seconds (10 digits) or milliseconds (13).
pub fn parse_time(s: &str) -> std::result::Result<i64, String> {
    let s = s.trim();
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        let n: i64 = s.parse().map_err(|_| format!("`{s}` is out of range"))?;
        return match s.len() {
            1..=10 => Ok(n * 1000),
            13 => Ok(n),
            _ => Err(format!(
                "`{s}`: Unix time in seconds (10 digits) or milliseconds (13)"
            )),
        };
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| format!("`{s}`: {e}"));
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        return d
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| format!("`{s}`: {e}"));
    }
    Err(format!(
        "`{s}` is not a time (RFC 3339 such as 2026-03-01T12:00:00Z, a date, or Unix seconds)"
    ))
}

fn list<T>(
    s: &str,
    parse: fn(&str) -> std::result::Result<T, String>,
) -> std::result::Result<Vec<T>, String> {
    s.split([';', '|', ',', ' '])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(parse)
        .collect()
}

fn reject(line: u64, column: &str, reason: impl Into<String>) -> Reject {
    Reject {
        line,
        column: column.to_string(),
        reason: reason.into(),
    }
}

/// A consent row as the service takes it, or the first column it cannot read.
fn consent_row(r: Row) -> std::result::Result<pb::ImportConsentRow, Reject> {
    let mut out = pb::ImportConsentRow {
        line: r.line,
        ..Default::default()
    };
    for (c, v) in r.fields {
        let name = CONSENT_COLUMNS[c];
        let bad = |reason: String| reject(r.line, name, reason);
        match name {
            "contact" => out.contact = v,
            "status" => {
                let st = ConsentStatus::parse(v.trim())
                    .ok_or_else(|| bad(format!("`{v}`: use granted, withdrawn or denied")))?;
                out.status = status_pb(st) as i32;
            }
            "channels" => {
                out.channels = list::<Channel>(&v, Channel::parse_or_explain)
                    .map_err(bad)?
                    .into_iter()
                    .map(|c| channel_pb(c) as i32)
                    .collect()
            }
            "purposes" => {
                out.purposes = list::<Purpose>(&v, Purpose::parse_or_explain)
                    .map_err(bad)?
                    .into_iter()
                    .map(|p| purpose_pb(p) as i32)
                    .collect()
            }
            "category" => out.category = v,
            "effective_at" if !v.trim().is_empty() => {
                out.effective_at = Some(ms_to_ts(parse_time(&v).map_err(bad)?))
            }
            "expires_at" if !v.trim().is_empty() => {
                out.expires_at = Some(ms_to_ts(parse_time(&v).map_err(bad)?))
            }
            "source" => out.source = v,
            "proof" => out.proof = v,
            "campaign_id" => out.campaign_id = v,
            "external_id" => out.external_id = v,
            _ => {}
        }
    }
    if out.status == 0 {
        return Err(reject(
            r.line,
            "status",
            "missing: use granted, withdrawn or denied",
        ));
    }
    Ok(out)
}

/// What a DNC row without a type or list column gets (the command's --type, --list, --source).
#[derive(Clone)]
pub struct DncDefaults {
    pub dnc_type: DncType,
    pub list: String,
    pub source: String,
    pub actor: String,
}

/// A DNC row as AddEntries takes it.
fn dnc_row(r: Row, now: i64, d: &DncDefaults) -> std::result::Result<pb::DncEntryInput, Reject> {
    let mut out = pb::DncEntryInput {
        r#type: dnc_type_pb(d.dnc_type) as i32,
        list: d.list.clone(),
        source: d.source.clone(),
        ..Default::default()
    };
    for (c, v) in r.fields {
        let name = DNC_COLUMNS[c];
        let bad = |reason: String| reject(r.line, name, reason);
        match name {
            "contact" => out.contact = v,
            "type" if !v.trim().is_empty() => {
                out.r#type = dnc_type_pb(DncType::parse_or_explain(v.trim()).map_err(bad)?) as i32
            }
            "list" => out.list = v,
            "expires_at" if !v.trim().is_empty() => {
                let ms = parse_time(&v).map_err(bad)?;
                if ms <= now {
                    return Err(reject(r.line, name, format!("`{v}` is already past")));
                }
                out.expires_at = Some(ms_to_ts(ms))
            }
            "reason" => out.note = v,
            _ => {}
        }
    }
    Ok(out)
}

/// Derived from what identifies the file as it is on disk: the same unchanged file gets
/// the same id, so a plain re-run resumes.
fn default_import_id(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let h = Sha256::digest(format!("{}|{}|{mtime}", abs.display(), meta.len()));
    Ok(format!("file-{}", hex::encode(&h[..8])))
}

/// A bar over `total` bytes (imports and registry uploads).
pub(super) fn progress(total: u64, message: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// Moves the progress bar along with the bytes read, until told to stop.
fn follow(bar: &indicatif::ProgressBar, read: &Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let (bar, read) = (bar.clone(), read.clone());
    tokio::spawn(async move {
        loop {
            bar.set_position(read.load(Ordering::Relaxed));
            if bar.is_finished() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
}

/// The rejects file, sorted by line; removed when there are none.
fn write_rejects(path: &Path, mut rejects: Vec<Reject>) -> Result<()> {
    if rejects.is_empty() {
        let _ = std::fs::remove_file(path);
        return Ok(());
    }
    rejects.sort_by_key(|r| r.line);
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    w.write_record(["line", "column", "reason"])?;
    for r in rejects {
        w.write_record([r.line.to_string(), r.column, r.reason])?;
    }
    w.flush()?;
    Ok(())
}

fn rejects_path(a: &ImportArgs) -> PathBuf {
    a.rejects.clone().unwrap_or_else(|| {
        let mut p = a.input.clone().into_os_string();
        p.push(".rejects.csv");
        p.into()
    })
}

fn check_fraction(f: Option<f64>) -> Result<f64> {
    match f {
        None => Ok(0.0),
        Some(f) if (0.0..=1.0).contains(&f) && f > 0.0 => Ok(f),
        Some(f) => bail!("--max-reject-fraction {f}: it must be above 0 and at most 1"),
    }
}

/// The server's reject field named as the file's column.
fn column_of(field: &str) -> String {
    let f = field.rsplit('.').next().unwrap_or(field);
    f.split('[').next().unwrap_or(f).to_string()
}

#[derive(Default)]
struct Tally {
    rows: u64,
    rejected: u64,
}

/// The input of an import as both commands read it, with its id announced and a progress
/// bar following the bytes read.
struct Source {
    import_id: String,
    jsonl: bool,
    delimiter: u8,
    input: Box<dyn BufRead + Send>,
    bar: indicatif::ProgressBar,
    follower: tokio::task::JoinHandle<()>,
}

impl Source {
    fn open(a: &ImportArgs) -> Result<Source> {
        let import_id = match &a.import_id {
            Some(id) => id.clone(),
            None => default_import_id(&a.input)?,
        };
        let jsonl = is_jsonl(&a.input, a.format.as_deref())?;
        let delimiter = super::scrub::delimiter_byte(a.delimiter)?;
        let total = std::fs::metadata(&a.input)
            .with_context(|| format!("cannot read {}", a.input.display()))?
            .len();
        let read = Arc::new(AtomicU64::new(0));
        let input = open(&a.input, read.clone())?;
        eprintln!("import id: {import_id} (the same --import-id resumes this import)");
        let bar = progress(total, "importing");
        let follower = follow(&bar, &read);
        Ok(Source {
            import_id,
            jsonl,
            delimiter,
            input,
            bar,
            follower,
        })
    }
}

/// `preflight consent import`.
pub async fn consent(a: ImportArgs) -> Result<()> {
    let fraction = check_fraction(a.max_reject_fraction)?;
    let Source {
        import_id,
        jsonl,
        delimiter,
        input,
        bar,
        follower,
    } = Source::open(&a)?;
    let mut client =
        pb::consent_service_client::ConsentServiceClient::new(connect(&a.server).await?)
            .max_encoding_message_size(64 << 20);
    let t0 = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportConsentsChunk>(4);
    let (id, region, chunk_rows) = (import_id.clone(), a.region.clone(), a.chunk as usize);
    let reader = tokio::task::spawn_blocking(move || -> Result<(Vec<Reject>, Tally)> {
        let mut rejects = Vec::new();
        let mut tally = Tally::default();
        let mut chunk = pb::ImportConsentsChunk {
            import_id: id.clone(),
            default_region: region.clone(),
            max_reject_fraction: fraction,
            ..Default::default()
        };
        let mut n = 0u64;
        let send = |chunk: &mut pb::ImportConsentsChunk| -> bool {
            let next = pb::ImportConsentsChunk {
                import_id: id.clone(),
                chunk: chunk.chunk + 1,
                default_region: region.clone(),
                max_reject_fraction: fraction,
                ..Default::default()
            };
            tx.blocking_send(std::mem::replace(chunk, next)).is_ok()
        };
        read_rows(
            input,
            jsonl,
            delimiter,
            CONSENT_COLUMNS,
            &["contact", "status"],
            |row| {
                tally.rows += 1;
                match row.and_then(consent_row) {
                    Ok(r) => chunk.rows.push(r),
                    Err(r) => {
                        tally.rejected += 1;
                        chunk.rejected_by_client += 1;
                        rejects.push(r);
                    }
                }
                n += 1;
                if n.is_multiple_of(chunk_rows as u64) {
                    return Ok(send(&mut chunk));
                }
                Ok(true)
            },
        )?;
        if !chunk.rows.is_empty() || chunk.rejected_by_client > 0 || chunk.chunk == 0 {
            send(&mut chunk);
        }
        Ok((rejects, tally))
    });
    let result = client
        .import_consents(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    bar.finish_and_clear();
    let _ = follower.await;
    let (mut rejects, tally) = reader.await??;
    let (response, refusal) = match result {
        Ok(r) => (r.into_inner(), None),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            let so_far = <pb::ImportConsentsResponse as prost::Message>::decode(s.details())
                .unwrap_or_default();
            (so_far, Some(s.message().to_string()))
        }
        Err(s) => return Err(refused(s)),
    };
    rejects.extend(response.rejects.iter().map(|r| Reject {
        line: r.line,
        column: column_of(&r.field),
        reason: r.reason.clone(),
    }));
    let path = rejects_path(&a);
    write_rejects(&path, rejects)?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{} rows: {} imported, {} already imported by an earlier run, {} rejected{}",
        tally.rows.max(response.rows),
        response.imported,
        response.resumed,
        response.rejected.max(tally.rejected),
        if response.rejects_omitted > 0 {
            format!(" ({} not listed)", response.rejects_omitted)
        } else {
            String::new()
        }
    );
    println!(
        "{} chunks committed, {} resumed; seqs {}..{}; {:.1} s, {:.0} rows/s",
        response.chunks_committed,
        response.chunks_resumed,
        response.first_seq,
        response.last_seq,
        secs,
        tally.rows as f64 / secs.max(1e-9)
    );
    if response.rejected > 0 || tally.rejected > 0 {
        println!("rejects: {}", path.display());
    }
    if let Some(why) = refusal {
        bail!("import refused: {why}");
    }
    Ok(())
}

/// `preflight dnc add --in FILE`: AddEntries chunk by chunk, each under the idempotency key
/// of the import and chunk.
pub async fn dnc(a: ImportArgs, defaults: DncDefaults) -> Result<()> {
    let fraction = check_fraction(a.max_reject_fraction)?;
    let fraction = if fraction == 0.0 { 0.001 } else { fraction };
    let Source {
        import_id,
        jsonl,
        delimiter,
        input,
        bar,
        follower,
    } = Source::open(&a)?;
    let mut client: pb::dnc_service_client::DncServiceClient<Conn> =
        pb::dnc_service_client::DncServiceClient::new(connect(&a.server).await?)
            .max_encoding_message_size(64 << 20);
    let t0 = Instant::now();
    // Chunks of (line of each entry, entries, rows the reader rejected).
    type Chunk = (Vec<u64>, Vec<pb::DncEntryInput>, Vec<Reject>, u64);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let chunk_rows = a.chunk as u64;
    let row_defaults = defaults.clone();
    let reader = tokio::task::spawn_blocking(move || -> Result<()> {
        let now = now_ms();
        let mut cur: Chunk = (Vec::new(), Vec::new(), Vec::new(), 0);
        read_rows(input, jsonl, delimiter, DNC_COLUMNS, &["contact"], |row| {
            cur.3 += 1;
            match row.and_then(|r| {
                let line = r.line;
                dnc_row(r, now, &row_defaults).map(|e| (line, e))
            }) {
                Ok((line, e)) => {
                    cur.0.push(line);
                    cur.1.push(e);
                }
                Err(r) => cur.2.push(r),
            }
            if cur.3 >= chunk_rows {
                let full = std::mem::take(&mut cur);
                return Ok(tx.blocking_send(full).is_ok());
            }
            Ok(true)
        })?;
        if cur.3 > 0 {
            let _ = tx.blocking_send(cur);
        }
        Ok(())
    });
    let mut rejects = Vec::new();
    let (mut rows, mut rejected, mut added, mut present, mut resumed) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut refusal = None;
    let mut chunk_no = 0u64;
    while let Some((lines, entries, bad, n)) = rx.recv().await {
        rows += n;
        rejected += bad.len() as u64;
        rejects.extend(bad);
        if rejected as f64 / rows as f64 > fraction {
            refusal = Some(format!(
                "{rejected} of {rows} rows rejected ({:.3}%, more than --max-reject-fraction {fraction}); \
                 chunks 0 to {} are committed, nothing after them",
                rejected as f64 * 100.0 / rows as f64,
                chunk_no as i64 - 1
            ));
            break;
        }
        if !entries.is_empty() {
            let r = client
                .add_entries(pb::AddEntriesRequest {
                    entries,
                    idempotency_key: format!("import:{import_id}:{chunk_no}"),
                    default_region: a.region.clone(),
                    actor: defaults.actor.clone(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            for e in &r.results {
                let line = lines.get(e.index as usize).copied().unwrap_or(0);
                match pb::EntryStatus::try_from(e.status) {
                    Ok(pb::EntryStatus::Accepted) if r.duplicate => resumed += 1,
                    Ok(pb::EntryStatus::Accepted) => added += 1,
                    Ok(pb::EntryStatus::Duplicate) => present += 1,
                    _ => {
                        rejected += 1;
                        let (field, reason) = e.error.split_once(": ").unwrap_or(("", &e.error));
                        rejects.push(reject(line, &column_of(field), reason));
                    }
                }
            }
        }
        chunk_no += 1;
    }
    drop(rx);
    bar.finish_and_clear();
    let _ = follower.await;
    reader.await??;
    let path = rejects_path(&a);
    write_rejects(&path, rejects)?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{rows} rows: {added} added, {present} already listed, {resumed} already imported by an earlier run, {rejected} rejected"
    );
    println!(
        "{chunk_no} chunks; {:.1} s, {:.0} rows/s",
        secs,
        rows as f64 / secs.max(1e-9)
    );
    if rejected > 0 {
        println!("rejects: {}", path.display());
    }
    if let Some(why) = refusal {
        bail!("import refused: {why}");
    }
    Ok(())
}

fn now_ms() -> i64 {
    use preflight::clock::Clock;
    preflight::clock::SystemClock.now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_in_the_forms_crms_export() {
        assert_eq!(parse_time("2026-03-01T12:00:00Z"), Ok(1_772_366_400_000));
        assert_eq!(parse_time("2026-03-01"), Ok(1_772_323_200_000));
        assert_eq!(parse_time("2026-03-01 12:00:00"), Ok(1_772_366_400_000));
        assert_eq!(parse_time("1772366400"), Ok(1_772_366_400_000));
        assert_eq!(parse_time("1772366400000"), Ok(1_772_366_400_000));
        assert!(parse_time("03/01/2026").unwrap_err().contains("not a time"));
        assert!(parse_time("123456789012").is_err());
    }

    #[test]
    fn an_unknown_or_missing_column_is_an_error_naming_it() {
        let h = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = columns(
            &h(&["contact", "status", "chanels"]),
            CONSENT_COLUMNS,
            &["contact", "status"],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown column `chanels`"), "{e}");
        let e = columns(&h(&["contact"]), CONSENT_COLUMNS, &["contact", "status"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `status` column"), "{e}");
        assert_eq!(
            columns(
                &h(&["Status", " contact "]),
                CONSENT_COLUMNS,
                &["contact", "status"]
            )
            .unwrap(),
            vec![1, 0]
        );
    }

    #[test]
    fn a_bad_value_is_a_reject_naming_its_line_and_column() {
        let row = |fields: Vec<(usize, &str)>| Row {
            line: 7,
            fields: fields
                .into_iter()
                .map(|(c, v)| (c, v.to_string()))
                .collect(),
        };
        let r = consent_row(row(vec![(0, "+12025550100"), (1, "maybe")])).unwrap_err();
        assert_eq!((r.line, r.column.as_str()), (7, "status"));
        let r = consent_row(row(vec![
            (0, "+12025550100"),
            (1, "granted"),
            (2, "sms;fax"),
        ]))
        .unwrap_err();
        assert_eq!(r.column, "channels");
        let r =
            consent_row(row(vec![(0, "+12025550100"), (1, "granted"), (6, "soon")])).unwrap_err();
        assert_eq!(r.column, "expires_at");
        let ok = consent_row(row(vec![
            (0, "+12025550100"),
            (1, "GRANTED"),
            (2, "sms|voice"),
            (3, "marketing"),
        ]))
        .unwrap();
        assert_eq!(ok.channels.len(), 2);
        assert_eq!(column_of("entries[3].contact"), "contact");
        assert_eq!(column_of("channels[0]"), "channels");
    }
}
