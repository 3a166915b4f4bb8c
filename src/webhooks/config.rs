//! `[[webhooks]]` and the inbound signature settings from the config, validated into what
//! the deliverers and the REST gate use.
use super::types::TypeSet;
use base64::Engine as _;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One endpoint as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the endpoint in metrics, logs, the admin API and its durable cursor.
    pub name: String,
    pub url: String,
    /// Environment variable holding the Standard Webhooks secret (`whsec_` + base64).
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The secret being rotated out: while set, deliveries carry a signature with each.
    #[serde(default)]
    pub previous_secret_env: Option<String>,
    #[serde(default)]
    pub previous_secret_file: Option<PathBuf>,
    /// Event types (`consent.withdrawn`) or groups (`consent`, `consent.*`); empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Delay before each attempt of one event; past the last the endpoint is paused.
    #[serde(default = "default_schedule")]
    pub retry_schedule_ms: Vec<u64>,
}

fn default_timeout_ms() -> u64 {
    15_000
}

/// Standard Webhooks' suggested schedule: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
fn default_schedule() -> Vec<u64> {
    const MIN: u64 = 60_000;
    vec![
        0,
        5_000,
        5 * MIN,
        30 * MIN,
        120 * MIN,
        300 * MIN,
        600 * MIN,
        600 * MIN,
    ]
}

/// Longest single delay of a schedule, and the most attempts it may hold.
const MAX_DELAY_MS: u64 = 24 * 3_600_000;
const MAX_ATTEMPTS: usize = 32;
const MAX_TIMEOUT_MS: u64 = 120_000;

/// An endpoint ready to deliver to.
#[derive(Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: http::Uri,
    /// Scheme, host, port and path only: what logs and the admin API show (a query may
    /// carry a credential).
    pub shown_url: String,
    /// Signing keys, the current one first.
    pub secrets: Vec<Vec<u8>>,
    pub types: TypeSet,
    pub timeout: Duration,
    pub schedule: Vec<Duration>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.shown_url)
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

/// A fault in one key: `webhooks.<i>.<key>` and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub key: String,
    pub message: String,
}

impl KeyError {
    fn at(i: usize, key: &str, message: impl Into<String>) -> KeyError {
        KeyError {
            key: format!("webhooks.{i}.{key}"),
            message: message.into(),
        }
    }
}

/// Compiles every endpoint; `env` reads environment variables (injected for tests).
/// Warnings (plain http to a host that is not loopback) go to the log.
pub fn compile(
    list: &[WebhookConfig],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Endpoint>, KeyError> {
    let mut out: Vec<Endpoint> = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let ep = compile_one(i, c, env)?;
        if out.iter().any(|o| o.name == ep.name) {
            return Err(KeyError::at(
                i,
                "name",
                format!("`{}` names another endpoint too", ep.name),
            ));
        }
        out.push(ep);
    }
    Ok(out)
}

fn compile_one(
    i: usize,
    c: &WebhookConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Endpoint, KeyError> {
    let name_ok = !c.name.is_empty()
        && c.name.len() <= 64
        && c.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(KeyError::at(
            i,
            "name",
            format!(
                "`{}` is not a name: 1 to 64 letters, digits, `-` or `_`",
                crate::model::ids::quote(&c.name)
            ),
        ));
    }
    let (url, shown_url) = parse_url(&c.url).map_err(|m| KeyError::at(i, "url", m))?;
    if url.scheme_str() == Some("http") && !is_loopback(url.host().unwrap_or_default()) {
        tracing::warn!(endpoint = %c.name, url = %shown_url,
            "webhook endpoint over plain http to a host that is not loopback: events and signatures travel unencrypted");
    }
    let mut secrets = vec![
        secret(
            i,
            ("secret_env", c.secret_env.as_deref()),
            ("secret_file", c.secret_file.as_deref()),
            env,
        )?
        .ok_or_else(|| KeyError::at(i, "secret_env", "set secret_env or secret_file"))?,
    ];
    if let Some(old) = secret(
        i,
        ("previous_secret_env", c.previous_secret_env.as_deref()),
        ("previous_secret_file", c.previous_secret_file.as_deref()),
        env,
    )? {
        secrets.push(old);
    }
    let types =
        TypeSet::parse(&c.kinds).map_err(|(j, m)| KeyError::at(i, &format!("kinds.{j}"), m))?;
    if c.timeout_ms == 0 || c.timeout_ms > MAX_TIMEOUT_MS {
        return Err(KeyError::at(
            i,
            "timeout_ms",
            format!("{}; it must be 1 to {MAX_TIMEOUT_MS}", c.timeout_ms),
        ));
    }
    if c.retry_schedule_ms.is_empty() || c.retry_schedule_ms.len() > MAX_ATTEMPTS {
        return Err(KeyError::at(
            i,
            "retry_schedule_ms",
            format!(
                "{} delays; give 1 to {MAX_ATTEMPTS} (the first is before the first attempt)",
                c.retry_schedule_ms.len()
            ),
        ));
    }
    if let Some((j, d)) = c
        .retry_schedule_ms
        .iter()
        .enumerate()
        .find(|(_, d)| **d > MAX_DELAY_MS)
    {
        return Err(KeyError::at(
            i,
            &format!("retry_schedule_ms.{j}"),
            format!("{d} ms is more than a day"),
        ));
    }
    Ok(Endpoint {
        name: c.name.clone(),
        url,
        shown_url,
        secrets,
        types,
        timeout: Duration::from_millis(c.timeout_ms),
        schedule: c
            .retry_schedule_ms
            .iter()
            .map(|d| Duration::from_millis(*d))
            .collect(),
    })
}

/// An absolute http(s) URL with a host, and the part of it fit to show.
fn parse_url(s: &str) -> Result<(http::Uri, String), String> {
    let shown = crate::model::ids::quote(s);
    let url: http::Uri = s
        .parse()
        .map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
    match url.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{shown}` is not an http:// or https:// URL")),
    }
    let Some(auth) = url.authority() else {
        return Err(format!("`{shown}` names no host"));
    };
    if auth.as_str().contains('@') {
        return Err("a URL with credentials in it; use the signature to authenticate".into());
    }
    let shown_url = format!(
        "{}://{}{}",
        url.scheme_str().unwrap_or_default(),
        auth.as_str(),
        url.path()
    );
    Ok((url, shown_url))
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A secret from its environment variable or file (never both), decoded.
fn secret(
    i: usize,
    env_key: (&str, Option<&str>),
    file_key: (&str, Option<&Path>),
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Vec<u8>>, KeyError> {
    let Some((key, text)) = secret_text(&format!("webhooks.{i}"), env_key, file_key, env)? else {
        return Ok(None);
    };
    decode_secret(&text)
        .map(Some)
        .map_err(|m| KeyError::at(i, key, m))
}

/// The trimmed text of a secret given by an environment variable (`env_key`) or a file
/// (`file_key`), never both, and the key it came from; errors name `section.key`.
fn secret_text<'k>(
    section: &str,
    (env_key, env_name): (&'k str, Option<&str>),
    (file_key, file): (&'k str, Option<&Path>),
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(&'k str, String)>, KeyError> {
    let error = |key: &str, message: String| KeyError {
        key: format!("{section}.{key}"),
        message,
    };
    let (key, text) = match (env_name, file) {
        (Some(_), Some(_)) => {
            return Err(error(
                env_key,
                format!("set {env_key} or {file_key}, not both"),
            ));
        }
        (None, None) => return Ok(None),
        (Some(var), None) => (
            env_key,
            env(var).ok_or_else(|| {
                error(env_key, format!("environment variable `{var}` is not set"))
            })?,
        ),
        (None, Some(path)) => (
            file_key,
            std::fs::read_to_string(path)
                .map_err(|e| error(file_key, format!("cannot read {}: {e}", path.display())))?,
        ),
    };
    Ok(Some((key, text.trim().to_string())))
}

/// `whsec_` + standard base64 of 24 to 64 bytes, as the Standard Webhooks spec gives it.
pub fn decode_secret(s: &str) -> Result<Vec<u8>, String> {
    let Some(b64) = s.strip_prefix("whsec_") else {
        return Err("the secret must start with `whsec_` (Standard Webhooks)".into());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the secret after `whsec_` is not valid base64: {e}"))?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(format!(
            "the secret holds {} bytes; it must hold 24 to 64",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Signature checks on the inbound routes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsWebhookConfig {
    /// Environment variable holding the Twilio auth token.
    #[serde(default)]
    pub twilio_auth_token_env: Option<String>,
    #[serde(default)]
    pub twilio_auth_token_file: Option<PathBuf>,
    /// The webhook's URL as Twilio calls it (a proxy in front rewrites the host).
    #[serde(default)]
    pub public_url: Option<String>,
}

/// A shared secret for `POST /v1/inbound`'s `x-preflight-signature` header.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSignatureConfig {
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

/// The inbound signature checks in force.
#[derive(Clone, Default)]
pub struct InboundSignatures {
    /// Twilio auth token and the public URL of `/v1/webhooks/sms`.
    pub twilio: Option<(Vec<u8>, String)>,
    /// The HMAC-SHA256 key for `/v1/inbound`.
    pub hmac: Option<Vec<u8>>,
}

impl InboundSignatures {
    pub fn load(
        sms: &SmsWebhookConfig,
        inbound: &InboundSignatureConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<InboundSignatures, KeyError> {
        let raw = |section: &str,
                   env_key: (&str, Option<&str>),
                   file_key: (&str, Option<&Path>)|
         -> Result<Option<Vec<u8>>, KeyError> {
            match secret_text(section, env_key, file_key, env)? {
                None => Ok(None),
                Some((key, t)) if t.is_empty() => Err(KeyError {
                    key: format!("{section}.{key}"),
                    message: "the secret is empty".into(),
                }),
                Some((_, t)) => Ok(Some(t.into_bytes())),
            }
        };
        let token = raw(
            "sms_webhook",
            (
                "twilio_auth_token_env",
                sms.twilio_auth_token_env.as_deref(),
            ),
            (
                "twilio_auth_token_file",
                sms.twilio_auth_token_file.as_deref(),
            ),
        )?;
        let twilio = match (token, &sms.public_url) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(KeyError {
                    key: "sms_webhook.public_url".into(),
                    message: "the URL Twilio posts to is needed to check its signature".into(),
                });
            }
            (None, Some(_)) => {
                return Err(KeyError {
                    key: "sms_webhook.twilio_auth_token_env".into(),
                    message: "public_url is set but no auth token to check signatures with".into(),
                });
            }
            (Some(t), Some(u)) => {
                parse_url(u).map_err(|message| KeyError {
                    key: "sms_webhook.public_url".into(),
                    message,
                })?;
                Some((t, u.clone()))
            }
        };
        let hmac = raw(
            "inbound_signature",
            ("secret_env", inbound.secret_env.as_deref()),
            ("secret_file", inbound.secret_file.as_deref()),
        )?;
        Ok(InboundSignatures { twilio, hmac })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(toml_text: &str, env: &[(&str, &str)]) -> Result<Vec<Endpoint>, KeyError> {
        #[derive(Deserialize)]
        struct W {
            webhooks: Vec<WebhookConfig>,
        }
        let w: W = toml::from_str(toml_text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        compile(&w.webhooks, &|k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn a_good_endpoint_compiles_with_the_defaults() {
        let eps = one(
            "[[webhooks]]\nname = \"crm\"\nurl = \"https://hooks.example.com/in?k=1\"\nsecret_env = \"S\"\n",
            &[("S", SECRET)],
        )
        .unwrap();
        assert_eq!(eps[0].shown_url, "https://hooks.example.com/in");
        assert_eq!(eps[0].schedule.len(), 8);
        assert_eq!(eps[0].timeout, Duration::from_secs(15));
        assert_eq!(eps[0].secrets[0].len(), 24);
        assert!(eps[0].types.is_all());
    }

    #[test]
    fn bad_endpoints_name_the_key() {
        let base = |extra: &str| format!("[[webhooks]]\nname = \"a\"\n{extra}");
        let key = |t: &str| one(t, &[("S", SECRET)]).unwrap_err().key;
        assert_eq!(
            key(&base("url = \"ftp://x/\"\nsecret_env = \"S\"\n")),
            "webhooks.0.url"
        );
        assert_eq!(
            key(&base("url = \"http://x/\"\nsecret_env = \"NOPE\"\n")),
            "webhooks.0.secret_env"
        );
        assert_eq!(key(&base("url = \"http://x/\"\n")), "webhooks.0.secret_env");
        let e = one(
            &base("url = \"http://x/\"\nsecret_env = \"S\"\n"),
            &[("S", "whsec_AAAA")],
        )
        .unwrap_err();
        assert!(e.message.contains("24 to 64"), "{e:?}");
        let e = one(
            &base("url = \"http://x/\"\nsecret_env = \"S\"\n"),
            &[("S", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
        )
        .unwrap_err();
        assert!(e.message.contains("whsec_"), "{e:?}");
        let e = one(
            &base("url = \"http://x/\"\nsecret_env = \"S\"\n"),
            &[("S", "whsec_!!!")],
        )
        .unwrap_err();
        assert!(e.message.contains("base64"), "{e:?}");
        assert_eq!(
            key(&base(
                "url = \"http://x/\"\nsecret_env = \"S\"\nkinds = [\"dnc.added\", \"consent.maybe\"]\n"
            )),
            "webhooks.0.kinds.1"
        );
        assert_eq!(
            key(&base(
                "url = \"http://x/\"\nsecret_env = \"S\"\nretry_schedule_ms = []\n"
            )),
            "webhooks.0.retry_schedule_ms"
        );
        let twice = format!(
            "{}{}",
            base("url = \"http://x/\"\nsecret_env = \"S\"\n"),
            base("url = \"http://y/\"\nsecret_env = \"S\"\n")
        );
        let e = one(&twice, &[("S", SECRET)]).unwrap_err();
        assert_eq!(e.key, "webhooks.1.name");
    }
}
