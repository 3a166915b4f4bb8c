//! Compliance subcommands: audit verify and export, privacy requests and legal holds.
use super::ServerArg;
use super::client::{connect, refused};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use preflight::api::grpc::convert::ms_to_ts;
use preflight::audit::{Verification, entry_of, verify};
use preflight::model::Millis;
use preflight::model::time::parse_time;
use preflight::proto as pb;
use preflight::store::embedded::{EmbeddedStore, read_audit_from};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct Source {
    /// Read the data directory directly instead of asking a server (the server must be
    /// stopped: the store allows one process at a time).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Recompute the hash chain; exits 1 naming the first broken record.
    Verify {
        #[command(flatten)]
        source: Source,
    },
    /// Write records as JSON Lines (to --out, or stdout).
    Export {
        /// From this time on: RFC 3339 (2026-11-22T10:00:00Z), a date (2026-11-22) or epoch ms.
        #[arg(long, value_parser = parse_time)]
        since: Option<Millis>,
        /// Before this time (same forms).
        #[arg(long, value_parser = parse_time)]
        until: Option<Millis>,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        source: Source,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Kind {
    Access,
    Delete,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Law {
    Ccpa,
    Gdpr,
}

#[derive(Subcommand, Debug)]
pub enum PrivacyCmd {
    /// Register a consumer by phones, emails or ext: ids (returns the known one if any matches).
    Register {
        #[arg(required = true)]
        identifiers: Vec<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Submit an ACCESS or DELETE request for a consumer.
    Submit {
        #[arg(long)]
        consumer: String,
        #[arg(long = "type", value_enum)]
        kind: Kind,
        #[arg(long, value_enum)]
        jurisdiction: Law,
        /// When the consumer made the request (default: now).
        #[arg(long, value_parser = parse_time)]
        received_at: Option<Millis>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show one request.
    Get {
        request_id: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List requests, newest first.
    List {
        #[arg(long)]
        overdue: bool,
        #[arg(long, default_value = "")]
        consumer: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Extend a request's deadline once, recording the notice sent to the consumer.
    Extend {
        request_id: String,
        #[arg(long)]
        notice: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Place a legal hold on an identifier: DELETE requests keep its records.
    Hold {
        contact: String,
        #[arg(long)]
        reason: String,
        /// Release the hold instead.
        #[arg(long)]
        release: bool,
        #[command(flatten)]
        server: ServerArg,
    },
}

fn open_offline(dir: &std::path::Path) -> Result<redb::Database> {
    EmbeddedStore::open(dir).map_err(|e| {
        anyhow!(
            "cannot open the store in {}: {e} (is a server running on it? use --server)",
            dir.display()
        )
    })
}

pub async fn audit(cmd: AuditCmd) -> Result<()> {
    match cmd {
        AuditCmd::Verify { source } => verify_chain(&source).await,
        AuditCmd::Export {
            since,
            until,
            out,
            source,
        } => export(&source, since, until, out).await,
    }
}

fn audit_client(
    channel: super::client::Conn,
) -> pb::audit_service_client::AuditServiceClient<super::client::Conn> {
    pb::audit_service_client::AuditServiceClient::new(channel)
}

async fn verify_chain(source: &Source) -> Result<()> {
    let v = match &source.data_dir {
        Some(dir) => {
            let db = open_offline(dir)?;
            verify(|after, limit| read_audit_from(&db, after, limit))?
        }
        None => {
            let r = audit_client(connect(&source.server).await?)
                .verify_audit(pb::VerifyAuditRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            Verification {
                records: r.records,
                erased: r.erased,
                last_seq: r.last_seq,
                last_hash: r.last_hash,
                first_broken: (!r.ok).then_some((r.first_broken_seq, r.problem)),
            }
        }
    };
    match &v.first_broken {
        None => println!(
            "audit chain intact: {} records ({} erased), last seq {}, head {}",
            v.records, v.erased, v.last_seq, v.last_hash
        ),
        Some((seq, why)) => println!(
            "audit chain BROKEN at record {seq}: {why} ({} records before it verified)",
            v.records
        ),
    }
    if !v.ok() {
        std::process::exit(1);
    }
    Ok(())
}

async fn export(
    source: &Source,
    since: Option<Millis>,
    until: Option<Millis>,
    out: Option<PathBuf>,
) -> Result<()> {
    if let (Some(s), Some(u)) = (since, until)
        && u <= s
    {
        bail!("--until must be after --since");
    }
    let mut w: Box<dyn Write> = match &out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let n = match &source.data_dir {
        Some(dir) => export_offline(dir, since, until, &mut w)?,
        None => export_remote(&source.server, since, until, &mut w).await?,
    };
    w.flush()?;
    if let Some(p) = out {
        eprintln!("{n} audit records written to {}", p.display());
    }
    Ok(())
}

/// Pages through the stopped server's store; the window filter is the engine's own.
fn export_offline(
    dir: &std::path::Path,
    since: Option<Millis>,
    until: Option<Millis>,
    w: &mut dyn Write,
) -> Result<u64> {
    let db = open_offline(dir)?;
    let (mut after, mut n) = (0, 0u64);
    loop {
        let page = read_audit_from(&db, after, 4096)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for raw in &page {
            let e = entry_of(raw).map_err(|e| anyhow!(e))?;
            if e.recorded_within(since, until) {
                serde_json::to_writer(&mut *w, &e)?;
                w.write_all(b"\n")?;
                n += 1;
            }
        }
    }
    Ok(n)
}

async fn export_remote(
    server: &ServerArg,
    since: Option<Millis>,
    until: Option<Millis>,
    w: &mut dyn Write,
) -> Result<u64> {
    let mut stream = audit_client(connect(server).await?)
        .export_audit(pb::ExportAuditRequest {
            since: since.map(ms_to_ts),
            until: until.map(ms_to_ts),
            after_seq: 0,
        })
        .await
        .map_err(refused)?
        .into_inner();
    let mut n = 0u64;
    while let Some(r) = stream.message().await.map_err(refused)? {
        w.write_all(r.json.as_bytes())?;
        w.write_all(b"\n")?;
        n += 1;
    }
    Ok(n)
}

fn status_name(s: i32) -> String {
    pb::PrivacyRequestStatus::try_from(s)
        .map(|x| {
            x.as_str_name()
                .trim_start_matches("PRIVACY_REQUEST_STATUS_")
                .to_string()
        })
        .unwrap_or_else(|_| s.to_string())
}

fn print_request(r: &pb::PrivacyRequest) {
    let ts = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map(|t| t.seconds * 1000)
            .map(|ms| ms.to_string())
            .unwrap_or_default()
    };
    let kind = pb::PrivacyRequestType::try_from(r.r#type)
        .map(|x| {
            x.as_str_name()
                .trim_start_matches("PRIVACY_REQUEST_TYPE_")
                .to_string()
        })
        .unwrap_or_default();
    let law = pb::Jurisdiction::try_from(r.jurisdiction)
        .map(|x| {
            x.as_str_name()
                .trim_start_matches("JURISDICTION_")
                .to_string()
        })
        .unwrap_or_default();
    println!(
        "{}  {}  {kind} {law}  {}{}  respond_by_ms={}",
        r.request_id,
        r.consumer_id,
        status_name(r.status),
        if r.overdue { "  OVERDUE" } else { "" },
        ts(&r.respond_by)
    );
    if !r.bundle_path.is_empty() {
        println!(
            "  bundle {} ({} bytes, sha256 {})",
            r.bundle_path, r.bundle_size, r.bundle_sha256
        );
    }
    if r.erased_identifiers > 0 {
        println!("  erased {} identifiers", r.erased_identifiers);
    }
    for x in &r.retained {
        println!("  kept {}: {}", x.record_id, x.reason);
    }
    if !r.error.is_empty() {
        println!("  error: {}", r.error);
    }
}

type PrivacyClient = pb::privacy_service_client::PrivacyServiceClient<super::client::Conn>;

pub async fn privacy(cmd: PrivacyCmd) -> Result<()> {
    let server = match &cmd {
        PrivacyCmd::Register { server, .. }
        | PrivacyCmd::Submit { server, .. }
        | PrivacyCmd::Get { server, .. }
        | PrivacyCmd::List { server, .. }
        | PrivacyCmd::Extend { server, .. }
        | PrivacyCmd::Hold { server, .. } => server.clone(),
    };
    let mut c = PrivacyClient::new(connect(&server).await?);
    match cmd {
        PrivacyCmd::Register { identifiers, .. } => register(&mut c, identifiers).await,
        PrivacyCmd::Submit {
            consumer,
            kind,
            jurisdiction,
            received_at,
            ..
        } => submit(&mut c, consumer, kind, jurisdiction, received_at).await,
        PrivacyCmd::Get { request_id, .. } => {
            let r = c.get_request(pb::GetRequestRequest { request_id }).await;
            print_request(&r.map_err(refused)?.into_inner());
            Ok(())
        }
        PrivacyCmd::List {
            overdue, consumer, ..
        } => list(&mut c, overdue, consumer).await,
        PrivacyCmd::Extend {
            request_id, notice, ..
        } => {
            let r = c
                .extend_request(pb::ExtendRequestRequest { request_id, notice })
                .await;
            print_request(&r.map_err(refused)?.into_inner());
            Ok(())
        }
        PrivacyCmd::Hold {
            contact,
            reason,
            release,
            ..
        } => hold(&mut c, contact, reason, release).await,
    }
}

async fn register(c: &mut PrivacyClient, identifiers: Vec<String>) -> Result<()> {
    let r = c
        .register_consumer(pb::RegisterConsumerRequest {
            identifiers,
            default_region: String::new(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let consumer = r.consumer.unwrap_or_default();
    println!(
        "{} {} ({} identifiers{})",
        consumer.consumer_id,
        if r.created {
            "registered"
        } else {
            "already known"
        },
        consumer.identifiers.len(),
        if r.added_identifiers.is_empty() {
            String::new()
        } else {
            format!(", {} added", r.added_identifiers.len())
        }
    );
    Ok(())
}

async fn submit(
    c: &mut PrivacyClient,
    consumer: String,
    kind: Kind,
    jurisdiction: Law,
    received_at: Option<Millis>,
) -> Result<()> {
    let r = c
        .submit_request(pb::SubmitRequestRequest {
            consumer_id: consumer,
            r#type: match kind {
                Kind::Access => pb::PrivacyRequestType::Access,
                Kind::Delete => pb::PrivacyRequestType::Delete,
            } as i32,
            jurisdiction: match jurisdiction {
                Law::Ccpa => pb::Jurisdiction::Ccpa,
                Law::Gdpr => pb::Jurisdiction::Gdpr,
            } as i32,
            received_at: received_at.map(ms_to_ts),
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_request(&r);
    Ok(())
}

async fn list(c: &mut PrivacyClient, overdue: bool, consumer: String) -> Result<()> {
    let r = c
        .list_requests(pb::ListRequestsRequest {
            overdue_only: overdue,
            consumer_id: consumer,
        })
        .await
        .map_err(refused)?
        .into_inner();
    for x in &r.requests {
        print_request(x);
    }
    println!("{} requests", r.requests.len());
    Ok(())
}

async fn hold(c: &mut PrivacyClient, contact: String, reason: String, release: bool) -> Result<()> {
    let req = pb::LegalHoldRequest {
        contact,
        reason,
        default_region: String::new(),
    };
    let r = if release {
        c.release_legal_hold(req).await
    } else {
        c.place_legal_hold(req).await
    }
    .map_err(refused)?
    .into_inner();
    println!(
        "legal hold {} for {} (seq {})",
        if release { "released" } else { "placed" },
        preflight::model::mask(&r.normalized_contact),
        r.seq
    );
    Ok(())
}
