//! Command-line parsing and the client subcommands (check, dnc, consent).
mod client;
mod compliance;
mod import;
mod scrub;
mod webhooks;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use preflight::clock::SystemClock;
use preflight::config::Config;
use preflight::model::{Channel, DncType, Purpose};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "preflight",
    version,
    about = "Contact-compliance decisions: may we contact this person, on this channel, for this purpose, now?"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service (embedded store in --data-dir, gRPC on 127.0.0.1:50051 by default).
    Serve(ServeArgs),
    /// Ask the service whether a contact may be made.
    Check(CheckArgs),
    /// Record a contact attempt (what frequency limits count), as a dialer would.
    Attempt(AttemptArgs),
    /// Company and registry Do-Not-Call entries.
    #[command(subcommand)]
    Dnc(DncCmd),
    /// Consent records.
    #[command(subcommand)]
    Consent(ConsentCmd),
    /// The tamper-evident audit trail: verify the hash chain, export JSON Lines.
    #[command(subcommand)]
    Audit(compliance::AuditCmd),
    /// CCPA/GDPR consumer requests and legal holds.
    #[command(subcommand)]
    Privacy(compliance::PrivacyCmd),
    /// Validate a config file as `serve` would (policies, programs, tokens, TLS files)
    /// without opening the store or listening.
    CheckConfig {
        #[arg(long, env = "PREFLIGHT_CONFIG")]
        config: PathBuf,
    },
    /// Check every row of a CSV file (any size) and write it back with verdict, reasons
    /// and normalized contact added.
    Scrub(scrub::ScrubArgs),
    /// Webhook endpoints: list their state, resume a paused one, replay from a seq.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCmd),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// TOML config file (see docs/configuration.md).
    #[arg(long, env = "PREFLIGHT_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the embedded store.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long)]
    listen: Option<String>,
    /// REST/JSON, /metrics and HTTP probe listen address ("" turns it off).
    #[arg(long)]
    http_listen: Option<String>,
    /// Use Redis as the shared store (many replicas) instead of the embedded one:
    /// redis://[user:password@]host:port[/db]. Also PREFLIGHT_REDIS_URL.
    #[arg(long)]
    redis: Option<String>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "PREFLIGHT_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct ServerArg {
    /// Address of a running preflight.
    #[arg(
        long,
        global = true,
        env = "PREFLIGHT_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// API token, when the service has tokens configured.
    #[arg(long, global = true, env = "PREFLIGHT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust for an https:// server, besides the system roots.
    #[arg(long, global = true, env = "PREFLIGHT_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

fn channel(s: &str) -> Result<Channel, String> {
    Channel::parse_or_explain(s)
}
fn purpose(s: &str) -> Result<Purpose, String> {
    Purpose::parse_or_explain(s)
}
fn dnc_type(s: &str) -> Result<DncType, String> {
    DncType::parse_or_explain(s)
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Phone (any common format), email, or ext:<id>.
    pub contact: String,
    #[arg(long, value_parser = channel)]
    pub channel: Channel,
    #[arg(long, value_parser = purpose, default_value = "marketing")]
    pub purpose: Purpose,
    #[arg(long, default_value = "")]
    pub category: String,
    /// Check an inbound contact (DNC entries then apply only if the policy says so).
    #[arg(long)]
    pub inbound: bool,
    #[arg(long, default_value = "")]
    pub policy: String,
    #[arg(long, default_value = "")]
    pub region: String,
    /// The person's US ZIP or Canadian postal code, for calling hours.
    #[arg(long, default_value = "")]
    pub postal_code: String,
    /// What the contact is about, for frequency limits counted by subject.
    #[arg(long, default_value = "")]
    pub subject: String,
    /// When the contact would be made (RFC 3339, or a date); default: now, at the service.
    #[arg(long, value_parser = preflight::model::time::parse_time)]
    pub at: Option<i64>,
    #[command(flatten)]
    pub server: ServerArg,
}

fn outcome(s: &str) -> Result<preflight::model::AttemptOutcome, String> {
    preflight::model::AttemptOutcome::parse_or_explain(s)
}

#[derive(Args, Debug)]
pub struct AttemptArgs {
    /// Phone (any common format), email, or ext:<id>.
    pub contact: String,
    #[arg(long, value_parser = channel)]
    pub channel: Channel,
    #[arg(long, value_parser = purpose, default_value = "marketing")]
    pub purpose: Purpose,
    /// How it ended: no_answer, busy, voicemail, connected, conversation, delivered, failed.
    #[arg(long, value_parser = outcome)]
    pub outcome: preflight::model::AttemptOutcome,
    #[arg(long, default_value = "")]
    pub subject: String,
    #[arg(long, default_value = "")]
    pub campaign: String,
    /// When it was made (RFC 3339); default: now, at the service.
    #[arg(long, value_parser = preflight::model::time::parse_time)]
    pub at: Option<i64>,
    #[arg(long, default_value = "")]
    pub region: String,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Subcommand, Debug)]
pub enum DncCmd {
    /// Add entries (one per contact).
    Add(DncAddArgs),
    /// Archive entries (soft delete, kept until their retention date).
    Remove(DncRemoveArgs),
    /// Import registry files (full or change files, plain or gzip) as a new version of a list.
    Import(DncImportArgs),
    /// List the registry lists loaded, with version, count, checksums and import time.
    Registries {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Write a deterministic registry-format file of N numbers over real NANP area codes.
    Generate(DncGenerateArgs),
    /// Show a contact's entries.
    Get(DncGetArgs),
}

#[derive(Args, Debug)]
pub struct DncAddArgs {
    /// Contacts to add; or a file of them with --in.
    #[arg(required_unless_present = "input")]
    pub contacts: Vec<String>,
    /// A CSV (contact, type, list, expires_at, reason) or JSON Lines file, plain or gzip,
    /// added in chunks that a re-run with the same --import-id resumes.
    #[arg(long = "in", conflicts_with = "contacts")]
    pub input: Option<PathBuf>,
    /// Names the import (with --in); default: derived from the file.
    #[arg(long, requires = "input")]
    pub import_id: Option<String>,
    /// Rejected rows (with --in); default `<in>.rejects.csv`.
    #[arg(long, requires = "input")]
    pub rejects: Option<PathBuf>,
    /// Refuse (with --in) once more than this fraction of rows is rejected (default 0.001).
    #[arg(long, requires = "input")]
    pub max_reject_fraction: Option<f64>,
    /// Region for numbers written without a country code (server default when empty).
    #[arg(long, default_value = "")]
    pub region: String,
    #[arg(long = "type", value_parser = dnc_type, default_value = "corporate")]
    pub dnc_type: DncType,
    /// List name; required for STATE (e.g. TX).
    #[arg(long, default_value = "")]
    pub list: String,
    /// Entry expires after this many days.
    #[arg(long)]
    pub expires_in_days: Option<u32>,
    #[arg(long, default_value = "cli")]
    pub source: String,
    #[arg(long, default_value = "")]
    pub note: String,
    #[arg(long, env = "USER", default_value = "cli")]
    pub actor: String,
    #[arg(long, default_value = "")]
    pub idempotency_key: String,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Args, Debug)]
pub struct DncRemoveArgs {
    #[arg(required = true)]
    pub contacts: Vec<String>,
    /// Only this type; default: every CORPORATE and PERSONAL entry.
    #[arg(long = "type", value_parser = dnc_type)]
    pub dnc_type: Option<DncType>,
    #[arg(long, default_value = "")]
    pub list: String,
    /// Who removes (required).
    #[arg(long)]
    pub actor: String,
    /// Why (required).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Args, Debug)]
pub struct DncImportArgs {
    /// FEDERAL, STATE:<code> (e.g. STATE:TX), LITIGATOR, or a custom list name.
    #[arg(long)]
    pub list: String,
    /// Files holding the whole list (one 10-digit number, or `area,number`, per line).
    #[arg(long, num_args = 1.., conflicts_with = "changes", required_unless_present = "changes")]
    pub full: Vec<PathBuf>,
    /// Change files: a number and an action field `A` (add) or `D` (delete) per line.
    #[arg(long, num_args = 1..)]
    pub changes: Vec<PathBuf>,
    /// Refuse the import when more than this fraction of lines are malformed (server default: 0.001).
    #[arg(long)]
    pub max_reject_fraction: Option<f64>,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Args, Debug)]
pub struct DncGenerateArgs {
    #[arg(long)]
    pub count: u64,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// `area,number` lines instead of 10 digits.
    #[arg(long)]
    pub comma: bool,
    /// gzip the output.
    #[arg(long)]
    pub gzip: bool,
}

#[derive(Args, Debug)]
pub struct DncGetArgs {
    pub contact: String,
    /// Include archived entries.
    #[arg(long)]
    pub archived: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Args, Debug)]
pub struct ConsentArgs {
    pub contact: String,
    /// Repeat for several; withdraw with none covers every channel.
    #[arg(long = "channel", value_parser = channel)]
    pub channels: Vec<Channel>,
    /// Repeat for several; withdraw with none covers every purpose but SECURITY.
    #[arg(long = "purpose", value_parser = purpose)]
    pub purposes: Vec<Purpose>,
    #[arg(long, default_value = "")]
    pub category: String,
    #[arg(long, default_value = "cli")]
    pub source: String,
    #[arg(long, default_value = "")]
    pub proof: String,
    #[arg(long, default_value = "")]
    pub campaign: String,
    #[arg(long)]
    pub expires_in_days: Option<u32>,
    #[arg(long, default_value = "")]
    pub idempotency_key: String,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Subcommand, Debug)]
pub enum ConsentCmd {
    /// Record express consent.
    Grant(ConsentArgs),
    /// Record an opt-out.
    Withdraw(ConsentArgs),
    /// Import a consent table: CSV with a header (contact, status, channels, purposes,
    /// category, effective_at, expires_at, source, proof, campaign_id, external_id) or JSON
    /// Lines, plain or gzip; resumable with --import-id.
    Import(import::ImportArgs),
    /// Show consent history and DNC entries of a contact.
    Get {
        contact: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

const SHUTDOWN_GRACE_SECS: u64 = 5;

async fn serve(a: ServeArgs) -> Result<()> {
    init_tracing(a.log_format);
    let origin = a
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "defaults".into());
    let mut config = Config::load(a.config.as_deref())?;
    if let Some(d) = a.data_dir {
        config.data_dir = d;
    }
    if let Some(l) = a.listen {
        config.listen = l;
    }
    if let Some(l) = a.http_listen {
        config.http_listen = l;
    }
    if let Some(url) = a.redis {
        match &mut config.redis {
            Some(r) => r.url = url,
            None => config.redis = Some(preflight::config::RedisConfig::with_url(&url)),
        }
    }
    // Before the engine, so its counters register with the recorder.
    let metrics = preflight::telemetry::install().map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
    let security = preflight::server::Security::from_config(&config)
        .with_context(|| format!("config {origin}"))?;
    if !security.auth.enabled() {
        tracing::warn!(
            "no API tokens configured: every caller may check, write and administer (see docs/operations.md, Tokens and TLS)"
        );
    }
    let engine =
        preflight::server::open(&config, &origin, Arc::new(SystemClock)).with_context(|| {
            format!(
                "cannot start with data directory {}",
                config.data_dir.display()
            )
        })?;
    preflight::server::start_background(&engine).await?;
    let grpc_listener = preflight::server::bind(&config.listen).await?;
    let http_listener = match config.http_listen.trim() {
        "" => None,
        addr => Some(preflight::server::bind(addr).await?),
    };
    // In-flight requests get a bounded grace period; idle client connections do not hold
    // the process up after that.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let grpc = preflight::server::serve_grpc(
        engine.clone(),
        grpc_listener,
        security.clone(),
        stopped(stop_rx.clone()),
    );
    let http = async {
        match http_listener {
            Some(l) => {
                preflight::server::serve_http(
                    engine.clone(),
                    l,
                    security.clone(),
                    Some(metrics),
                    stopped(stop_rx.clone()),
                )
                .await
            }
            None => Ok(()),
        }
    };
    let servers = async { tokio::try_join!(grpc, http).map(|_| ()) };
    tokio::select! {
        r = servers => r?,
        _ = async {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
            tokio::time::sleep(std::time::Duration::from_secs(SHUTDOWN_GRACE_SECS)).await;
        } => tracing::warn!("grace period over, closing remaining connections"),
    }
    Ok(())
}

fn check_config(path: &std::path::Path) -> Result<()> {
    let origin = path.display().to_string();
    let config = Config::load(Some(path))?;
    let (policies, _, _) = preflight::server::engine_parts(&config, &origin)?;
    let security = preflight::server::Security::from_config(&config)
        .with_context(|| format!("config {origin}"))?;
    println!(
        "{origin}: ok ({} policies, {} messaging programs, {} API tokens, {} webhook endpoints, TLS {}, store {})",
        policies.all().len(),
        config.programs.len(),
        config.tokens.len(),
        config.webhooks.len(),
        if security.tls.is_some() { "on" } else { "off" },
        match &config.redis {
            Some(r) => format!(
                "redis {} prefix {}",
                r.options(config.idempotency_hours)
                    .map(|o| o.describe_target())
                    .unwrap_or_default(),
                r.prefix
            ),
            None => "embedded".into(),
        }
    );
    Ok(())
}

pub async fn run(cli: Cli) -> Result<()> {
    if !matches!(cli.cmd, Command::Serve(_)) {
        // Client commands print their own results; the log carries only warnings (or what
        // RUST_LOG asks for). Without a subscriber, every span the HTTP/2 client opens is
        // offered to the `log` crate instead: a fifth of a gRPC client's CPU.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    match cli.cmd {
        Command::Serve(a) => serve(a).await,
        Command::Check(a) => client::check(a).await,
        Command::Attempt(a) => client::attempt(a).await,
        Command::Dnc(c) => client::dnc(c).await,
        Command::Consent(c) => client::consent(c).await,
        Command::Audit(c) => compliance::audit(c).await,
        Command::Privacy(c) => compliance::privacy(c).await,
        Command::Scrub(a) => scrub::scrub(a).await,
        Command::Webhooks(c) => webhooks::webhooks(c).await,
        Command::CheckConfig { config } => check_config(&config),
    }
}
