//! API tokens and roles: who may call what, for both transports, decided in one table.
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// One API token: a name (the audit trail's actor), a role, and where its secret is read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub role: Role,
    /// Environment variable holding the token (a Kubernetes Secret via secretKeyRef).
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding the token (a mounted Secret).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// What a token may do. Each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Pre-flight checks and the registry list overview: verdicts, no personal data.
    Check,
    /// Also records and reads consent, DNC entries, identity links, inbound messages, Watch.
    Write,
    /// Also registry imports, the audit trail and privacy requests.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Check => "check",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller, handed to handlers through request extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's configured name; it becomes the audit trail's actor.
    pub name: String,
    pub role: Role,
}

/// Why a call was refused. Messages never contain the presented credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("a bearer token is required (authorization: Bearer <token>)")]
    Missing,
    #[error("the token is not valid")]
    Unknown,
    #[error("the authorization header is malformed: {0}")]
    Malformed(&'static str),
    #[error("token `{name}` has role {has}; this call needs {needs}")]
    Forbidden {
        name: String,
        has: Role,
        needs: Role,
    },
}

/// A refusal as the engine's error: the transports map it like any other.
impl From<Denied> for crate::error::Error {
    fn from(d: Denied) -> Self {
        if d.is_forbidden() {
            crate::error::Error::PermissionDenied(d.to_string())
        } else {
            crate::error::Error::Unauthenticated(d.to_string())
        }
    }
}

impl Denied {
    /// A label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Unknown => "unknown_token",
            Denied::Malformed(_) => "malformed",
            Denied::Forbidden { .. } => "forbidden",
        }
    }

    /// PERMISSION_DENIED for a known caller lacking the role, UNAUTHENTICATED otherwise.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Denied::Forbidden { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("tokens[{index}] ({name}): {message}")]
    Token {
        index: usize,
        name: String,
        message: String,
    },
}

/// The configured tokens, kept only as SHA-256 digests.
#[derive(Clone, Default)]
pub struct Auth {
    by_digest: Arc<HashMap<[u8; 32], Principal>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.by_digest.len())
            .finish()
    }
}

/// Tokens shorter than this are refused at start: they could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

impl Auth {
    /// Reads every token from its environment variable or file. With no tokens configured,
    /// authentication is off and every caller may do everything.
    pub fn load(
        tokens: &[TokenConfig],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Auth, AuthConfigError> {
        let mut by_digest = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (index, t) in tokens.iter().enumerate() {
            let err = |message: String| AuthConfigError::Token {
                index,
                name: t.name.clone(),
                message,
            };
            if t.name.trim().is_empty() {
                return Err(err("name is empty".into()));
            }
            if !names.insert(t.name.clone()) {
                return Err(err("name is used by another token".into()));
            }
            let secret = match (&t.token_env, &t.token_file) {
                (Some(var), None) => {
                    env(var).ok_or_else(|| err(format!("environment variable {var} is not set")))?
                }
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| err(format!("token_file {}: {e}", path.display())))?,
                _ => return Err(err("set exactly one of token_env and token_file".into())),
            };
            let secret = secret.trim();
            if secret.len() < MIN_TOKEN_LEN {
                return Err(err(format!(
                    "the token has {} characters, at least {MIN_TOKEN_LEN} are required",
                    secret.len()
                )));
            }
            let principal = Principal {
                name: t.name.clone(),
                role: t.role,
            };
            if by_digest.insert(digest(secret), principal).is_some() {
                return Err(err("the same token is configured twice".into()));
            }
        }
        Ok(Auth {
            by_digest: Arc::new(by_digest),
        })
    }

    pub fn enabled(&self) -> bool {
        !self.by_digest.is_empty()
    }

    /// Decides a call needing `needs` (None: open to anyone, such as health) given the
    /// `authorization` header value. Ok(None) means an anonymous call that is allowed.
    ///
    /// `allow_basic` admits `Basic base64(name:token)`, which only the provider webhook
    /// routes take (SMS providers can put credentials only in the URL); elsewhere only
    /// `Bearer` (any case, RFC 7235).
    pub fn authorize(
        &self,
        needs: Option<Role>,
        authorization: Option<&[u8]>,
        allow_basic: bool,
    ) -> Result<Option<Principal>, Denied> {
        if !self.enabled() {
            return Ok(None);
        }
        let presented = match authorization {
            None => None,
            Some(h) => Some(credential(h, allow_basic)?),
        };
        let Some(needs) = needs else {
            return Ok(presented.and_then(|t| self.by_digest.get(&digest(&t)).cloned()));
        };
        let token = presented.ok_or(Denied::Missing)?;
        let p = self.by_digest.get(&digest(&token)).ok_or(Denied::Unknown)?;
        if p.role < needs {
            return Err(Denied::Forbidden {
                name: p.name.clone(),
                has: p.role,
                needs,
            });
        }
        Ok(Some(p.clone()))
    }
}

/// Like `authorize`, from a request's headers: a request carrying two `authorization`
/// headers is refused (which one a proxy or a framework reads is anyone's guess).
pub fn authorize_headers(
    auth: &Auth,
    needs: Option<Role>,
    headers: &http::HeaderMap,
    allow_basic: bool,
) -> Result<Option<Principal>, Denied> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() && auth.enabled() {
        return Err(Denied::Malformed("more than one authorization header"));
    }
    auth.authorize(needs, first.map(|v| v.as_bytes()), allow_basic)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The secret in `Bearer <token>`, or the password of `Basic base64(name:token)` (for SMS
/// providers that can only put credentials in the webhook URL).
fn credential(header: &[u8], allow_basic: bool) -> Result<String, Denied> {
    use base64::Engine as _;
    let h = std::str::from_utf8(header).map_err(|_| Denied::Malformed("not UTF-8"))?;
    let (scheme, rest) = h
        .trim()
        .split_once(' ')
        .ok_or(Denied::Malformed("expected `Bearer <token>`"))?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        if !allow_basic {
            return Err(Denied::Malformed(
                "Basic credentials are taken only on the provider webhook routes; use Bearer",
            ));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| Denied::Malformed("Basic credentials are not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| Denied::Malformed("not UTF-8"))?;
        let (_, password) = text
            .split_once(':')
            .ok_or(Denied::Malformed("Basic credentials lack `:`"))?;
        return Ok(password.to_string());
    }
    Err(Denied::Malformed("scheme must be Bearer or Basic"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn token(name: &str, role: Role, var: &str) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            role,
            token_env: Some(var.into()),
            token_file: None,
        }
    }

    fn auth() -> Auth {
        let env = |k: &str| match k {
            "T_CHECK" => Some("check-token-0123456789".to_string()),
            "T_WRITE" => Some(" write-token-0123456789\n".to_string()),
            _ => None,
        };
        Auth::load(
            &[
                token("genesys", Role::Check, "T_CHECK"),
                token("crm", Role::Write, "T_WRITE"),
            ],
            env,
        )
        .unwrap()
    }

    #[test]
    fn roles_include_the_lesser_ones() {
        let a = auth();
        let w = a
            .authorize(
                Some(Role::Check),
                Some(b"Bearer write-token-0123456789"),
                false,
            )
            .unwrap()
            .unwrap();
        assert_eq!(w.name, "crm");
        let denied = a
            .authorize(
                Some(Role::Write),
                Some(b"bearer check-token-0123456789"),
                false,
            )
            .unwrap_err();
        assert!(denied.is_forbidden(), "{denied}");
        assert_eq!(
            a.authorize(Some(Role::Check), None, false).unwrap_err(),
            Denied::Missing
        );
        let wrong = a
            .authorize(
                Some(Role::Check),
                Some(b"Bearer check-token-0123456780"),
                false,
            )
            .unwrap_err();
        assert_eq!(wrong, Denied::Unknown);
        assert!(!wrong.to_string().contains("0123456780"));
        assert_eq!(a.authorize(None, None, false).unwrap(), None);
    }

    #[test]
    fn basic_credentials_carry_the_token_as_password() {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.encode("twilio:write-token-0123456789");
        let header = format!("Basic {b}");
        let p = auth()
            .authorize(Some(Role::Write), Some(header.as_bytes()), true)
            .unwrap()
            .unwrap();
        assert_eq!(p.role, Role::Write);
        // Off the webhook routes, Basic is refused even with a valid token inside.
        let refused = auth()
            .authorize(Some(Role::Write), Some(header.as_bytes()), false)
            .unwrap_err();
        assert_eq!(refused.kind(), "malformed");
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let a = auth();
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::AUTHORIZATION,
            "Bearer write-token-0123456789".parse().unwrap(),
        );
        assert!(authorize_headers(&a, Some(Role::Write), &h, false).is_ok());
        h.append(
            http::header::AUTHORIZATION,
            "Bearer check-token-0123456789".parse().unwrap(),
        );
        let e = authorize_headers(&a, Some(Role::Check), &h, false).unwrap_err();
        assert_eq!(e.kind(), "malformed");
        // Any case of the scheme and more than one space are RFC 7235 and accepted.
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::AUTHORIZATION,
            "bEaReR   write-token-0123456789".parse().unwrap(),
        );
        assert!(authorize_headers(&a, Some(Role::Write), &h, false).is_ok());
    }

    #[test]
    fn without_tokens_everything_is_open() {
        let a = Auth::load(&[], |_| None).unwrap();
        assert!(!a.enabled());
        assert_eq!(a.authorize(Some(Role::Admin), None, false).unwrap(), None);
    }

    #[test]
    fn bad_token_configs_name_the_token() {
        let short = Auth::load(&[token("x", Role::Check, "S")], |_| Some("short".into()));
        assert!(short.unwrap_err().to_string().contains("tokens[0] (x)"));
        let unset = Auth::load(&[token("y", Role::Check, "NOPE")], |_| None);
        assert!(unset.unwrap_err().to_string().contains("NOPE is not set"));
        let both = TokenConfig {
            token_file: Some(PathBuf::from("/x")),
            ..token("z", Role::Check, "A")
        };
        assert!(Auth::load(&[both], |_| None).is_err());
    }
}
