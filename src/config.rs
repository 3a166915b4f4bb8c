//! One typed config: the TOML file, then PREFLIGHT_* environment variables, then flags.
pub use crate::auth::TokenConfig;
use crate::calling::{CallingContext, CallingHoursConfig, RulesError, line_of};
use crate::keywords::{Inbound, KeywordConfig, Keywords, ProgramConfig, Programs};
use crate::model::{ChannelSet, Purpose, PurposeSet};
use crate::policy::{Policy, PolicyConfig};
pub use crate::store::redis::RedisConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address.
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Region for phone numbers written without a country code.
    #[serde(default = "default_region")]
    pub default_region: String,
    /// Policy used when a check names none.
    #[serde(default = "default_policy_name")]
    pub default_policy: String,
    /// How long an idempotency key is remembered (at least 24).
    #[serde(default = "default_idem_hours")]
    pub idempotency_hours: u32,
    /// How long removed DNC entries stay archived when the caller names no date.
    #[serde(default = "default_archive_days")]
    pub archive_retention_days: u32,
    /// Registry imports with more malformed lines than this fraction are refused.
    #[serde(default = "default_reject_fraction")]
    pub registry_max_reject_fraction: f64,
    #[serde(default = "default_policies")]
    pub policies: BTreeMap<String, PolicyConfig>,
    #[serde(default)]
    pub inbound: KeywordConfig,
    /// Messaging programs and their reply templates.
    #[serde(default)]
    pub programs: BTreeMap<String, ProgramConfig>,
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// REST/JSON facade, /metrics and HTTP health probes; empty turns the listener off.
    #[serde(default = "default_http_listen")]
    pub http_listen: String,
    /// API tokens. With none, authentication is off (a warning is logged at start).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// TLS for both listeners; plain TCP when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Redis as the store shared by many replicas; the embedded store when absent.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// Durable images of the index, so that a start replays only the log after the newest.
    #[serde(default)]
    pub index_images: ImagesConfig,
    /// Where the calling-hours rules come from, and the zones for numbers without one.
    #[serde(default)]
    pub calling_hours: CallingHoursConfig,
    /// Endpoints that receive change events as Standard Webhooks.
    #[serde(default)]
    pub webhooks: Vec<crate::webhooks::config::WebhookConfig>,
    /// Twilio signature checks on `POST /v1/webhooks/sms`.
    #[serde(default)]
    pub sms_webhook: crate::webhooks::config::SmsWebhookConfig,
    /// HMAC-SHA256 signature checks on `POST /v1/inbound`.
    #[serde(default)]
    pub inbound_signature: crate::webhooks::config::InboundSignatureConfig,
    /// The text the config was read from, so that faults found after parsing can name lines.
    #[serde(skip)]
    pub source: String,
}

/// When the background builder writes a new index image (embedded store).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// A new image is written once the log has grown this many events past the newest one:
    /// what a start replays at most, besides loading the image.
    #[serde(default = "default_image_every")]
    pub every_events: u64,
    /// How often the builder compares the log with the newest image.
    #[serde(default = "default_image_check_ms")]
    pub check_ms: u64,
    /// Images kept: the newest, and older ones to fall back on if it fails its checksum.
    #[serde(default = "default_image_keep")]
    pub keep: usize,
}

fn default_image_every() -> u64 {
    500_000
}

fn default_image_check_ms() -> u64 {
    30_000
}

fn default_image_keep() -> usize {
    2
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            every_events: default_image_every(),
            check_ms: default_image_check_ms(),
            keep: default_image_keep(),
        }
    }
}

impl ImagesConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.every_events == 0 {
            return Err("index_images.every_events: 0; it must be at least 1".into());
        }
        if self.check_ms < 10 {
            return Err(format!(
                "index_images.check_ms: {}; it must be at least 10",
                self.check_ms
            ));
        }
        if self.keep == 0 {
            return Err("index_images.keep: 0; at least one image must be kept".into());
        }
        Ok(())
    }
}

/// PEM certificate chain and private key, served on the gRPC and HTTP listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Where privacy request output goes and which key hashes erased identifiers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Directory for ACCESS bundles (created owner-only); default `<data_dir>/exports`.
    #[serde(default)]
    pub export_dir: Option<PathBuf>,
    /// 32-byte key for the keyed hashes of audit subjects and erased identifiers; created on
    /// first start. Default `<data_dir>/privacy.key`. Losing it makes erased opt-outs unmatchable.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Hours an ACCESS bundle stays on disk after its request completed (a DELETE removes
    /// the consumer's bundles at once).
    #[serde(default = "default_export_ttl_hours")]
    pub export_ttl_hours: u32,
}

fn default_export_ttl_hours() -> u32 {
    72
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            export_dir: None,
            key_file: None,
            export_ttl_hours: default_export_ttl_hours(),
        }
    }
}

impl Config {
    pub fn export_dir(&self) -> PathBuf {
        self.privacy
            .export_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("exports"))
    }

    pub fn key_file(&self) -> PathBuf {
        self.privacy
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("privacy.key"))
    }
}

fn default_listen() -> String {
    "127.0.0.1:50051".into()
}
fn default_http_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_data_dir() -> PathBuf {
    "./preflight-data".into()
}
fn default_region() -> String {
    "US".into()
}
fn default_policy_name() -> String {
    "default".into()
}
fn default_idem_hours() -> u32 {
    48
}
fn default_archive_days() -> u32 {
    5 * 365 + 1
}
fn default_reject_fraction() -> f64 {
    0.001
}
fn default_policies() -> BTreeMap<String, PolicyConfig> {
    BTreeMap::from([
        ("default".to_string(), PolicyConfig::default()),
        ("regulation_f".to_string(), PolicyConfig::regulation_f()),
    ])
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("empty config is valid")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    Read { path: String, message: String },
    #[error("config file {path}, line {line}, key `{key}`: {message}")]
    Parse {
        path: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("config {origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Config {
    /// Reads `path` if given, else the defaults; then applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut c = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?;
                Self::parse(&text, &p.display().to_string())?
            }
            None => Config::default(),
        };
        c.apply_env(|k| std::env::var(k).ok());
        Ok(c)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut c: Config = Self::parse_only(text, origin)?;
        c.source = text.to_string();
        Ok(c)
    }

    fn parse_only(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, key) = match e.span() {
                Some(span) => {
                    let start = span.start.min(text.len());
                    let line = text[..start].matches('\n').count() + 1;
                    // The key is what stands before `=` on that line (the span may point at the value).
                    let line_text = text.lines().nth(line - 1).unwrap_or("");
                    let key = line_text
                        .split_once('=')
                        .map_or(line_text, |(k, _)| k)
                        .trim()
                        .to_string();
                    (line, key)
                }
                None => (0, String::new()),
            };
            ConfigError::Parse {
                path: origin.to_string(),
                line,
                key,
                message: e.message().to_string(),
            }
        })
    }

    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("PREFLIGHT_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("PREFLIGHT_HTTP_LISTEN") {
            self.http_listen = v;
        }
        if let Some(v) = get("PREFLIGHT_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("PREFLIGHT_DEFAULT_REGION") {
            self.default_region = v;
        }
        if let Some(v) = get("PREFLIGHT_DEFAULT_POLICY") {
            self.default_policy = v;
        }
        if let Some(v) = get("PREFLIGHT_PRIVACY_KEY_FILE").filter(|v| !v.trim().is_empty()) {
            self.privacy.key_file = Some(v.into());
        }
        if let Some(v) = get("PREFLIGHT_CALLING_RULES_FILE").filter(|v| !v.trim().is_empty()) {
            self.calling_hours.rules_file = Some(v.into());
        }
        if let Some(v) = get("PREFLIGHT_REDIS_URL").filter(|v| !v.trim().is_empty()) {
            match &mut self.redis {
                Some(r) => r.url = v,
                None => self.redis = Some(RedisConfig::with_url(&v)),
            }
        }
        // Passwords of a Sentinel setup come from Secrets, like the URL.
        if let Some(r) = &mut self.redis {
            if let Some(v) = get("PREFLIGHT_REDIS_PASSWORD").filter(|v| !v.is_empty()) {
                r.password = Some(v);
            }
            if let Some(v) = get("PREFLIGHT_REDIS_SENTINEL_PASSWORD").filter(|v| !v.is_empty()) {
                r.sentinel_password = Some(v);
            }
        }
    }

    /// Validates every policy; the service refuses to start on the first bad one.
    pub fn compiled_policies(&self, origin: &str) -> Result<Vec<Policy>, ConfigError> {
        if self.idempotency_hours < 24 {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                message: format!(
                    "idempotency_hours = {} is below the 24-hour minimum",
                    self.idempotency_hours
                ),
            });
        }
        let at = |e: RulesError| ConfigError::Parse {
            path: e.origin,
            line: e.line,
            key: e.key,
            message: e.message,
        };
        let calling = CallingContext::load(&self.calling_hours).map_err(|e| {
            // Faults of the config's own keys are the config's; the rules file names itself.
            if e.origin == "config" {
                at(RulesError {
                    origin: origin.into(),
                    line: line_of(&self.source, &["calling_hours", "unknown_zones"]),
                    ..e
                })
            } else {
                at(e)
            }
        })?;
        self.policies
            .iter()
            .map(|(name, pc)| {
                let hours = calling
                    .compile(
                        &pc.calling_hours,
                        &pc.calling_windows,
                        &self.source,
                        origin,
                        &["policies", name],
                    )
                    .map_err(at)?;
                Policy::with_calling_hours(name, pc, hours).map_err(|e| {
                    let mut path = vec!["policies", name.as_str()];
                    path.extend(e.key.split('.'));
                    ConfigError::Parse {
                        path: origin.into(),
                        line: line_of(&self.source, &path),
                        key: path.join("."),
                        message: e.message,
                    }
                })
            })
            .collect()
    }
}

impl Config {
    /// The webhook endpoints, validated; secrets read from the environment or their files.
    pub fn compiled_webhooks(
        &self,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<crate::webhooks::Endpoint>, ConfigError> {
        crate::webhooks::config::compile(&self.webhooks, env).map_err(|e| self.key_error(origin, e))
    }

    /// The inbound signature checks, validated; secrets read as for the webhooks.
    pub fn inbound_signatures(
        &self,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<crate::webhooks::InboundSignatures, ConfigError> {
        crate::webhooks::InboundSignatures::load(&self.sms_webhook, &self.inbound_signature, env)
            .map_err(|e| self.key_error(origin, e))
    }

    fn key_error(&self, origin: &str, e: crate::webhooks::config::KeyError) -> ConfigError {
        let path: Vec<&str> = e.key.split('.').collect();
        ConfigError::Parse {
            path: origin.into(),
            line: line_of(&self.source, &path),
            key: e.key.clone(),
            message: e.message,
        }
    }

    /// Keywords, opt-out scope and reply programs, validated.
    pub fn compiled_inbound(&self, origin: &str) -> Result<Inbound, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.into(),
            message,
        };
        let keywords = Keywords::new(&self.inbound).map_err(|e| invalid(e.to_string()))?;
        let programs = Programs::new(&self.programs, &self.inbound.default_program)
            .map_err(|e| invalid(e.to_string()))?;
        let channels = ChannelSet::parse_names(&self.inbound.opt_out_channels)
            .map_err(|(_, m)| invalid(format!("inbound.opt_out_channels: {m}")))?;
        let purposes = PurposeSet::parse_names(&self.inbound.opt_out_purposes)
            .map_err(|(_, m)| invalid(format!("inbound.opt_out_purposes: {m}")))?;
        Ok(Inbound {
            keywords,
            programs,
            opt_out_channels: if channels.is_empty() {
                ChannelSet::all()
            } else {
                channels
            },
            opt_out_purposes: if purposes.is_empty() {
                PurposeSet::of(&[Purpose::Marketing, Purpose::Service])
            } else {
                purposes
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_frequency_limit_names_its_file_line_and_key() {
        let text = "[policies.p]\n[[policies.p.frequency_limits]]\nname = \"x\"\nchannels = [\"VOICE\"]\nwindow_hours = 0\nmax_attempts = 3\n";
        let c = Config::parse(text, "x.toml").unwrap();
        let e = c.compiled_policies("x.toml").unwrap_err().to_string();
        assert!(
            e.contains("x.toml, line 5, key `policies.p.frequency_limits.0.window_hours`"),
            "{e}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        assert_eq!(c.listen, "127.0.0.1:50051");
        let policies = c.compiled_policies("defaults").unwrap();
        let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["default", "regulation_f"]);
        let reg_f = &policies[1];
        assert_eq!(reg_f.frequency.len(), 2);
        assert_eq!(reg_f.longest_window_ms(), 7 * 24 * 3_600_000);
        assert_eq!(policies[0].frequency.len(), 3, "FL, OK and MD");
    }

    #[test]
    fn parse_errors_name_file_line_and_key() {
        let text = "listen = \"0.0.0.0:1\"\n\n[policies.strict]\nblock_dnc = [\"FEDERAL\", \"STATE\"]\nconsent_ttl = 30\n";
        let e = Config::parse(text, "preflight.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("preflight.toml"), "{e}");
        assert!(e.contains("line 5"), "{e}");
        assert!(e.contains("consent_ttl"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = Config::parse("idempotency_hours = \"soon\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1") && e.contains("idempotency_hours"),
            "{e}"
        );
    }

    #[test]
    fn unsafe_policy_is_refused() {
        let c = Config::parse("[policies.lax]\nblock_dnc = [\"CORPORATE\"]\n", "x.toml").unwrap();
        let e = c.compiled_policies("x.toml").unwrap_err().to_string();
        assert!(
            e.contains("policies.lax.block_dnc") && e.contains("FEDERAL"),
            "{e}"
        );
    }

    #[test]
    fn calling_hours_faults_name_file_line_and_key() {
        let fault = |text: &str| {
            Config::parse(text, "x.toml")
                .unwrap()
                .compiled_policies("x.toml")
                .unwrap_err()
                .to_string()
        };
        let e = fault("[policies.p]\ncalling_hours = [\"federal\", \"provincial\"]\n");
        assert!(
            e.contains("x.toml, line 2, key `policies.p.calling_hours.1`")
                && e.contains("provincial"),
            "{e}"
        );
        let e = fault(
            "[policies.p]\n[[policies.p.calling_windows]]\nname = \"late\"\nhours = \"20:00-09:00\"\n",
        );
        assert!(
            e.contains("line 4, key `policies.p.calling_windows.0.hours`")
                && e.contains("after its end"),
            "{e}"
        );
        let w = "[[policies.p.calling_windows]]\nname = \"a\"\nhours = \"09:00-20:00\"\n";
        let e = fault(&format!("[policies.p]\n{w}{}", w.replace("\"a\"", "\"b\"")));
        assert!(
            e.contains("line 6, key `policies.p.calling_windows.1.name`") && e.contains("overlaps"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, "[[rules]]\nset = \"federal\"\nname = \"x\"\nhours = \"08:00-21:00\"\nsaturday = \"10:00-09:00\"\n").unwrap();
        let e = fault(&format!(
            "[calling_hours]\nrules_file = {:?}\n",
            rules.display().to_string()
        ));
        assert!(
            e.contains(&format!(
                "{}, line 5, key `rules.0.saturday`",
                rules.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn env_overrides_file() {
        let mut c = Config::parse("listen = \"127.0.0.1:1\"\n", "x").unwrap();
        c.apply_env(|k| (k == "PREFLIGHT_LISTEN").then(|| "127.0.0.1:2".to_string()));
        assert_eq!(c.listen, "127.0.0.1:2");
    }
}
