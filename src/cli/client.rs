//! Client subcommands: each one gRPC call to a running service, printed for a person.
use super::{
    AttemptArgs, CheckArgs, ConsentArgs, ConsentCmd, DncAddArgs, DncCmd, DncGenerateArgs,
    DncGetArgs, DncRemoveArgs, ServerArg,
};
use anyhow::{Context, Result, anyhow};
use preflight::api::grpc::convert::{
    channel_pb, dnc_type_pb, ms_to_ts, outcome_pb, purpose_pb, ts_to_ms,
};
use preflight::model::DAY_MS;
use preflight::proto as pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A connection that sends the API token (if any) with every call.
pub(super) type Conn = InterceptedService<Channel, Bearer>;

#[derive(Clone)]
pub(super) struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

pub(super) async fn connect(s: &ServerArg) -> Result<Conn> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(s.server.clone())
        .map_err(|e| anyhow!("--server `{}` is not a valid URL: {e}", s.server))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(preflight::server::STREAM_WINDOW))
        .initial_connection_window_size(Some(preflight::server::CONNECTION_WINDOW));
    if s.server.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &s.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("--ca-cert {}", ca.display()))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| anyhow!("TLS for {}: {}", s.server, source_chain(&e)))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow!(
            "cannot reach preflight at {}: {}",
            s.server,
            source_chain(&e)
        )
    })?;
    let token = match s.token.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| anyhow!("--token holds characters a header cannot carry"))?,
        ),
    };
    Ok(InterceptedService::new(channel, Bearer(token)))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

pub(super) fn refused(s: tonic::Status) -> anyhow::Error {
    anyhow!(
        "preflight refused the request ({:?}): {}",
        s.code(),
        s.message()
    )
}

fn now_ms() -> i64 {
    use preflight::clock::Clock;
    preflight::clock::SystemClock.now_ms()
}

fn reason_name(r: i32) -> String {
    pb::Reason::try_from(r)
        .map(|r| r.as_str_name().trim_start_matches("REASON_").to_string())
        .unwrap_or_else(|_| r.to_string())
}

pub async fn check(a: CheckArgs) -> Result<()> {
    let mut c = pb::decision_service_client::DecisionServiceClient::new(connect(&a.server).await?);
    let r = c
        .check(pb::CheckRequest {
            contact: a.contact,
            channel: channel_pb(a.channel) as i32,
            purpose: purpose_pb(a.purpose) as i32,
            category: a.category,
            direction: if a.inbound {
                pb::Direction::Inbound
            } else {
                pb::Direction::Outbound
            } as i32,
            policy: a.policy,
            default_region: a.region,
            postal_code: a.postal_code,
            subject: a.subject,
            at: a.at.map(ms_to_ts),
            ..Default::default()
        })
        .await
        .map_err(refused)?
        .into_inner();
    let verdict = if r.verdict == pb::Verdict::Allow as i32 {
        "ALLOW"
    } else {
        "BLOCK"
    };
    println!("{verdict} {}", r.normalized_contact);
    if !r.reasons.is_empty() {
        let names: Vec<String> = r.reasons.iter().map(|x| reason_name(*x)).collect();
        println!("reasons: {}", names.join(", "));
    }
    if !r.matched_ids.is_empty() {
        println!("records: {}", r.matched_ids.join(", "));
    }
    if !r.detail.is_empty() {
        println!("detail: {}", r.detail);
    }
    if let Some(t) = &r.next_allowed_at {
        println!(
            "next allowed at: {}",
            preflight::model::time::format_time(ts_to_ms(t))
        );
    }
    if !r.time_zones.is_empty() {
        println!("time zones: {}  {}", r.time_zones.join(", "), r.subdivision);
    }
    println!("policy: {}  index seq: {}", r.policy, r.index_seq);
    Ok(())
}

pub async fn attempt(a: AttemptArgs) -> Result<()> {
    let mut c = pb::attempt_service_client::AttemptServiceClient::new(connect(&a.server).await?);
    let r = c
        .record_attempts(pb::RecordAttemptsRequest {
            attempts: vec![pb::Attempt {
                contact: a.contact.clone(),
                channel: channel_pb(a.channel) as i32,
                purpose: purpose_pb(a.purpose) as i32,
                subject: a.subject,
                at: a.at.map(ms_to_ts),
                outcome: outcome_pb(a.outcome) as i32,
                campaign_id: a.campaign,
            }],
            default_region: a.region,
            ..Default::default()
        })
        .await
        .map_err(refused)?
        .into_inner();
    for x in &r.results {
        if !x.error.is_empty() {
            return Err(anyhow!("{}: {}", a.contact, x.error));
        }
        println!("recorded {} {}", x.attempt_id, x.normalized_contact);
    }
    println!("seq: {}", r.seq);
    Ok(())
}

fn print_results(results: &[pb::EntryResult], contacts: &[String]) {
    for r in results {
        let status = pb::EntryStatus::try_from(r.status)
            .map(|s| s.as_str_name().trim_start_matches("ENTRY_STATUS_"))
            .unwrap_or("?");
        let input = contacts
            .get(r.index as usize)
            .map(String::as_str)
            .unwrap_or("");
        let ids = r.entry_ids.join(",");
        if r.error.is_empty() {
            println!("{status:<10} {input} -> {} {ids}", r.normalized_contact);
        } else {
            println!("{status:<10} {input}: {}", r.error);
        }
    }
}

pub async fn dnc(cmd: DncCmd) -> Result<()> {
    match cmd {
        DncCmd::Add(a) => add_entries(a).await,
        DncCmd::Remove(a) => remove_entries(a).await,
        DncCmd::Import(a) => {
            let (mode, files) = if a.full.is_empty() {
                (pb::ImportMode::Changes, a.changes)
            } else {
                (pb::ImportMode::Full, a.full)
            };
            let max_reject = a.max_reject_fraction.unwrap_or(0.0);
            import(&a.server, &a.list, mode, &files, max_reject).await
        }
        DncCmd::Registries { server } => registries(&server).await,
        DncCmd::Generate(a) => generate(a),
        DncCmd::Get(a) => get_entries(a).await,
    }
}

async fn dnc_client(server: &ServerArg) -> Result<DncClient> {
    Ok(pb::dnc_service_client::DncServiceClient::new(
        connect(server).await?,
    ))
}

type DncClient = pb::dnc_service_client::DncServiceClient<Conn>;

async fn add_entries(a: DncAddArgs) -> Result<()> {
    if let Some(input) = a.input {
        let defaults = super::import::DncDefaults {
            dnc_type: a.dnc_type,
            list: a.list,
            source: a.source,
            actor: a.actor,
        };
        let args = super::import::ImportArgs {
            input,
            import_id: a.import_id,
            rejects: a.rejects,
            max_reject_fraction: a.max_reject_fraction,
            format: None,
            delimiter: ',',
            chunk: 10_000,
            region: a.region,
            server: a.server,
        };
        return super::import::dnc(args, defaults).await;
    }
    let expires_at = a
        .expires_in_days
        .map(|d| ms_to_ts(now_ms() + i64::from(d) * DAY_MS));
    let entries = a
        .contacts
        .iter()
        .map(|contact| pb::DncEntryInput {
            contact: contact.clone(),
            r#type: dnc_type_pb(a.dnc_type) as i32,
            list: a.list.clone(),
            expires_at,
            source: a.source.clone(),
            note: a.note.clone(),
        })
        .collect();
    let r = dnc_client(&a.server)
        .await?
        .add_entries(pb::AddEntriesRequest {
            entries,
            idempotency_key: a.idempotency_key,
            actor: a.actor,
            ..Default::default()
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_results(&r.results, &a.contacts);
    println!(
        "seq: {}{}",
        r.seq,
        if r.duplicate { " (replayed)" } else { "" }
    );
    Ok(())
}

async fn remove_entries(a: DncRemoveArgs) -> Result<()> {
    let entries = a
        .contacts
        .iter()
        .map(|contact| pb::RemoveEntry {
            contact: contact.clone(),
            r#type: a.dnc_type.map(|t| dnc_type_pb(t) as i32).unwrap_or(0),
            list: a.list.clone(),
        })
        .collect();
    let r = dnc_client(&a.server)
        .await?
        .remove_entries(pb::RemoveEntriesRequest {
            entries,
            actor: a.actor,
            reason: a.reason,
            ..Default::default()
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_results(&r.results, &a.contacts);
    println!("seq: {}", r.seq);
    Ok(())
}

async fn registries(server: &ServerArg) -> Result<()> {
    let r = dnc_client(server)
        .await?
        .list_registries(pb::ListRegistriesRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    if r.registries.is_empty() {
        println!("no registry lists loaded");
    }
    for l in r.registries {
        print_registry(&l);
    }
    Ok(())
}

fn generate(a: DncGenerateArgs) -> Result<()> {
    let file = std::fs::File::create(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let mut g = preflight::registry::generate::Generator::new(a.seed);
    if a.gzip {
        let mut w = flate2::write::GzEncoder::new(
            std::io::BufWriter::new(file),
            flate2::Compression::fast(),
        );
        g.write(a.count, a.comma, &mut w)?;
        w.finish()?;
    } else {
        let mut w = std::io::BufWriter::with_capacity(8 << 20, file);
        g.write(a.count, a.comma, &mut w)?;
        std::io::Write::flush(&mut w)?;
    }
    println!("wrote {} numbers to {}", a.count, a.out.display());
    Ok(())
}

async fn get_entries(a: DncGetArgs) -> Result<()> {
    let r = dnc_client(&a.server)
        .await?
        .get_entries(pb::GetEntriesRequest {
            contact: a.contact,
            include_archived: a.archived,
            ..Default::default()
        })
        .await
        .map_err(refused)?
        .into_inner();
    println!(
        "{} ({} entries, index seq {})",
        r.normalized_contact,
        r.entries.len(),
        r.index_seq
    );
    for e in r.entries {
        let t = pb::DncType::try_from(e.r#type)
            .map(|t| t.as_str_name())
            .unwrap_or("?");
        let state = if e.active {
            "active".to_string()
        } else if !e.removed_by.is_empty() {
            format!("archived by {}: {}", e.removed_by, e.removal_reason)
        } else {
            "expired".to_string()
        };
        println!(
            "  {} {} {} added by {} ({state})",
            e.entry_id,
            t.trim_start_matches("DNC_TYPE_"),
            e.list,
            e.added_by
        );
    }
    Ok(())
}

async fn record(a: ConsentArgs, status: pb::ConsentStatus) -> Result<()> {
    let mut c = pb::consent_service_client::ConsentServiceClient::new(connect(&a.server).await?);
    let expires_at = a
        .expires_in_days
        .map(|d| ms_to_ts(now_ms() + i64::from(d) * DAY_MS));
    let r = c
        .record_consent(pb::RecordConsentRequest {
            contact: a.contact,
            status: status as i32,
            channels: a.channels.iter().map(|x| channel_pb(*x) as i32).collect(),
            purposes: a.purposes.iter().map(|x| purpose_pb(*x) as i32).collect(),
            category: a.category,
            source: a.source,
            proof: a.proof,
            expires_at,
            campaign_id: a.campaign,
            idempotency_key: a.idempotency_key,
            ..Default::default()
        })
        .await
        .map_err(refused)?
        .into_inner();
    println!(
        "{} {} seq {}{}",
        r.consent_id,
        r.normalized_contact,
        r.seq,
        if r.duplicate { " (replayed)" } else { "" }
    );
    Ok(())
}

pub async fn consent(cmd: ConsentCmd) -> Result<()> {
    match cmd {
        ConsentCmd::Grant(a) => record(a, pb::ConsentStatus::Granted).await,
        ConsentCmd::Withdraw(a) => record(a, pb::ConsentStatus::Withdrawn).await,
        ConsentCmd::Import(a) => super::import::consent(a).await,
        ConsentCmd::Get { contact, server } => {
            let mut c =
                pb::consent_service_client::ConsentServiceClient::new(connect(&server).await?);
            let r = c
                .get_contact(pb::GetContactRequest {
                    contact,
                    ..Default::default()
                })
                .await
                .map_err(refused)?
                .into_inner();
            let json = serde_json::json!({
                "contact": r.normalized_contact,
                "index_seq": r.index_seq,
                "consents": r.consents.iter().map(|c| serde_json::json!({
                    "id": c.consent_id,
                    "status": pb::ConsentStatus::try_from(c.status).map(|s| s.as_str_name()).unwrap_or("?"),
                    "channels": c.channels.iter().map(|x| pb::Channel::try_from(*x).map(|s| s.as_str_name()).unwrap_or("?")).collect::<Vec<_>>(),
                    "purposes": c.purposes.iter().map(|x| pb::Purpose::try_from(*x).map(|s| s.as_str_name()).unwrap_or("?")).collect::<Vec<_>>(),
                    "source": c.source,
                    "seq": c.seq,
                })).collect::<Vec<_>>(),
                "dnc_entries": r.dnc_entries.iter().map(|e| serde_json::json!({
                    "id": e.entry_id,
                    "type": pb::DncType::try_from(e.r#type).map(|s| s.as_str_name()).unwrap_or("?"),
                    "active": e.active,
                })).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&json).context("json")?);
            Ok(())
        }
    }
}

fn print_registry(l: &pb::RegistryInfo) {
    let t = pb::DncType::try_from(l.r#type)
        .map(|t| t.as_str_name().trim_start_matches("DNC_TYPE_"))
        .unwrap_or("?");
    let at = l.imported_at.map(|t| t.seconds).unwrap_or(0);
    println!(
        "{} ({t}) version {} {} numbers, {} import at unix {at}s: +{} -{}",
        l.name, l.version, l.count, l.mode, l.added, l.removed
    );
    for s in &l.sources {
        println!(
            "  {} sha256 {} {} bytes {} lines {} rejected",
            s.name, s.sha256, s.bytes, s.lines, s.rejected
        );
    }
}

/// Streams files to ImportRegistry in 1 MB chunks with a progress bar over all their bytes.
async fn import(
    server: &ServerArg,
    list: &str,
    mode: pb::ImportMode,
    files: &[std::path::PathBuf],
    fraction: f64,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut total = 0u64;
    for f in files {
        total += std::fs::metadata(f)
            .with_context(|| format!("cannot read {}", f.display()))?
            .len();
    }
    let mut c = pb::dnc_service_client::DncServiceClient::new(connect(server).await?)
        .max_encoding_message_size(8 << 20);
    let bar = super::import::progress(total, "uploading");
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportRegistryChunk>(8);
    let files = files.to_vec();
    let list = list.to_string();
    let progress = bar.clone();
    let reader = tokio::spawn(async move {
        for path in files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut f = tokio::fs::File::open(&path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?;
            let mut first = true;
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let n = f
                    .read(&mut buf)
                    .await
                    .with_context(|| format!("cannot read {}", path.display()))?;
                if n == 0 && !first {
                    break;
                }
                buf.truncate(n);
                progress.inc(n as u64);
                let chunk = pb::ImportRegistryChunk {
                    list: list.clone(),
                    mode: mode as i32,
                    file_name: name.clone(),
                    data: buf,
                    max_reject_fraction: fraction,
                };
                if tx.send(chunk).await.is_err() {
                    break;
                }
                first = false;
                if n == 0 {
                    break;
                }
            }
        }
        anyhow::Ok(())
    });
    let response = c.import_registry(tokio_stream::wrappers::ReceiverStream::new(rx));
    let waiting = bar.clone();
    let result = response.await;
    waiting.finish_with_message("imported");
    reader.await??;
    let r = result.map_err(refused)?.into_inner();
    if let Some(info) = &r.registry {
        print_registry(info);
    }
    if r.rejected_lines > 0 {
        println!(
            "{} lines rejected; see {} on the server",
            r.rejected_lines, r.rejects_path
        );
    }
    Ok(())
}
