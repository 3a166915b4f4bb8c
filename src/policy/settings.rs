//! Named policies: their TOML form, validation at start-up, and the compiled form the rules read.
use super::frequency::{FrequencyLimit, FrequencyLimitConfig, state_limits};
use crate::calling::{CallingContext, CallingHours, RuleConfig, RulesError};
use crate::model::{Channel, ChannelSet, DAY_MS, DncType, DncTypeSet, Millis, Purpose};
use serde::Deserialize;
use std::collections::BTreeMap;

/// A policy as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// DNC entry types that block. Default: all five.
    #[serde(default = "all_dnc_names")]
    pub block_dnc: Vec<String>,
    /// Purpose name to the channels on which that purpose needs express consent.
    #[serde(default = "default_require_consent")]
    pub require_consent: BTreeMap<String, Vec<String>>,
    /// A consent older than this many days no longer counts. 0 turns the limit off.
    #[serde(default = "default_ttl")]
    pub consent_ttl_days: u32,
    /// An express consent for the channel and purpose overrides FEDERAL and STATE entries.
    #[serde(default = "yes")]
    pub consent_overrides_registry: bool,
    /// Apply DNC entries to INBOUND checks too.
    #[serde(default)]
    pub block_inbound: bool,
    /// BLOCK with INDEX_STALE when the index has not heard from its store for longer. 0: never.
    #[serde(default)]
    pub max_staleness_ms: u64,
    /// Required to leave FEDERAL or STATE out of block_dnc.
    #[serde(default)]
    pub allow_registry_bypass: bool,
    /// The calling-hours rule sets that apply (`federal`, `states`, `canada`). Default: all.
    #[serde(default = "all_rule_sets")]
    pub calling_hours: Vec<String>,
    /// The policy's own windows, on top of the rule sets (a company's "never after 20:00").
    #[serde(default)]
    pub calling_windows: Vec<RuleConfig>,
    /// How often a person may be contacted in a window. Default: Florida's, Oklahoma's and
    /// Maryland's 3 solicitations in 24 hours on the same subject; `[]` turns limits off.
    #[serde(default = "state_limits")]
    pub frequency_limits: Vec<FrequencyLimitConfig>,
}

fn all_rule_sets() -> Vec<String> {
    crate::calling::RULE_SETS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn all_dnc_names() -> Vec<String> {
    DncType::ALL
        .iter()
        .map(|t| t.as_str().to_string())
        .collect()
}

fn default_require_consent() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([(
        "MARKETING".to_string(),
        vec!["VOICE".into(), "SMS".into(), "WHATSAPP".into()],
    )])
}

fn default_ttl() -> u32 {
    365
}

fn yes() -> bool {
    true
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            block_dnc: all_dnc_names(),
            require_consent: default_require_consent(),
            consent_ttl_days: default_ttl(),
            consent_overrides_registry: true,
            block_inbound: false,
            max_staleness_ms: 0,
            allow_registry_bypass: false,
            calling_hours: all_rule_sets(),
            calling_windows: Vec::new(),
            frequency_limits: state_limits(),
        }
    }
}

impl PolicyConfig {
    /// Regulation F (12 CFR 1006.14(b)(2)): a debt collector may place at most 7 calls in
    /// 7 days about a debt, and none within 7 days after a conversation about it. Purpose is
    /// every purpose: a collections policy governs everything its campaigns place.
    pub fn regulation_f() -> PolicyConfig {
        let limit = |name: &str, max_attempts: u32, outcomes: &[&str]| FrequencyLimitConfig {
            name: name.into(),
            citation: "12 CFR 1006.14(b)(2)".into(),
            channels: vec!["VOICE".into()],
            purposes: Vec::new(),
            subdivisions: Vec::new(),
            window_hours: 7 * 24,
            max_attempts,
            per: "person".into(),
            by_subject: true,
            outcomes: outcomes.iter().map(|o| o.to_string()).collect(),
        };
        PolicyConfig {
            frequency_limits: vec![
                limit("Regulation F: 7 calls in 7 days about a debt", 7, &[]),
                limit(
                    "Regulation F: no call within 7 days after a conversation about a debt",
                    1,
                    &["CONVERSATION"],
                ),
            ],
            ..PolicyConfig::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy `{policy}`: {key}: {message}")]
pub struct PolicyError {
    pub policy: String,
    pub key: String,
    pub message: String,
}

/// A validated policy, in the form the rules read on the hot path.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub block_dnc: DncTypeSet,
    /// Indexed by purpose: channels that need express consent.
    pub require_consent: [ChannelSet; 3],
    pub consent_ttl_ms: Option<Millis>,
    pub consent_overrides_registry: bool,
    pub block_inbound: bool,
    pub max_staleness_ms: Option<Millis>,
    pub calling: CallingHours,
    pub frequency: Vec<FrequencyLimit>,
}

pub(crate) const fn purpose_index(p: Purpose) -> usize {
    match p {
        Purpose::Marketing => 0,
        Purpose::Service => 1,
        Purpose::Security => 2,
    }
}

impl Policy {
    /// With the built-in calling rules; a calling-hours fault names its key in the policy.
    pub fn from_config(name: &str, c: &PolicyConfig) -> Result<Policy, PolicyError> {
        let calling = CallingContext::built_in()
            .compile(&c.calling_hours, &c.calling_windows, "", "", &[])
            .map_err(|e: RulesError| PolicyError {
                policy: name.to_string(),
                key: e.key,
                message: e.message,
            })?;
        Policy::with_calling_hours(name, c, calling)
    }

    /// With calling hours already compiled (by the config, which knows their file and lines).
    pub fn with_calling_hours(
        name: &str,
        c: &PolicyConfig,
        calling: CallingHours,
    ) -> Result<Policy, PolicyError> {
        let err = |key: &str, message: String| PolicyError {
            policy: name.to_string(),
            key: key.to_string(),
            message,
        };
        let block_dnc =
            DncTypeSet::parse_names(&c.block_dnc).map_err(|(_, m)| err("block_dnc", m))?;
        if !c.allow_registry_bypass {
            for t in [DncType::Federal, DncType::State] {
                if !block_dnc.contains(t) {
                    return Err(err(
                        "block_dnc",
                        format!(
                            "leaves out {t}, which would let MARKETING calls skip the {t} registry; \
                             add it, or set allow_registry_bypass = true if that is intended"
                        ),
                    ));
                }
            }
        }
        let mut require_consent = [ChannelSet::EMPTY; 3];
        for (purpose, channels) in &c.require_consent {
            let p = Purpose::parse_or_explain(purpose).map_err(|m| err("require_consent", m))?;
            for ch in channels {
                let ch = Channel::parse_or_explain(ch)
                    .map_err(|m| err(&format!("require_consent.{purpose}"), m))?;
                require_consent[purpose_index(p)].insert(ch);
            }
        }
        // A check counts at most this many limits (a bit each), so more is refused, not cut.
        if c.frequency_limits.len() > super::frequency::MAX_LIMITS {
            return Err(err(
                "frequency_limits",
                format!(
                    "{} limits, at most {}",
                    c.frequency_limits.len(),
                    super::frequency::MAX_LIMITS
                ),
            ));
        }
        let mut frequency = Vec::with_capacity(c.frequency_limits.len());
        for (i, l) in c.frequency_limits.iter().enumerate() {
            frequency.push(
                FrequencyLimit::compile(l)
                    .map_err(|e| err(&format!("frequency_limits.{i}.{}", e.key), e.message))?,
            );
        }
        Ok(Policy {
            name: name.to_string(),
            block_dnc,
            require_consent,
            consent_ttl_ms: (c.consent_ttl_days > 0)
                .then(|| Millis::from(c.consent_ttl_days) * DAY_MS),
            consent_overrides_registry: c.consent_overrides_registry,
            block_inbound: c.block_inbound,
            max_staleness_ms: (c.max_staleness_ms > 0).then_some(c.max_staleness_ms as Millis),
            calling,
            frequency,
        })
    }

    /// The longest window of the policy's frequency limits (0 without limits).
    pub fn longest_window_ms(&self) -> Millis {
        self.frequency
            .iter()
            .map(|l| l.window_ms)
            .max()
            .unwrap_or(0)
    }

    pub fn requires_consent(&self, channel: Channel, purpose: Purpose) -> bool {
        self.require_consent[purpose_index(purpose)].contains(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_policy_that_skips_the_federal_registry() {
        let c = PolicyConfig {
            block_dnc: vec!["CORPORATE".into(), "STATE".into()],
            ..PolicyConfig::default()
        };
        let e = Policy::from_config("lax", &c).unwrap_err();
        assert_eq!(e.key, "block_dnc");
        assert!(e.message.contains("FEDERAL"), "{e}");
        let ok = PolicyConfig {
            allow_registry_bypass: true,
            ..c
        };
        assert!(Policy::from_config("lax", &ok).is_ok());
    }

    #[test]
    fn names_unknown_values() {
        let c = PolicyConfig {
            require_consent: BTreeMap::from([("MARKETING".into(), vec!["FAX".into()])]),
            ..PolicyConfig::default()
        };
        let e = Policy::from_config("p", &c).unwrap_err();
        assert_eq!(e.key, "require_consent.MARKETING");
        assert!(e.message.contains("`FAX`"));
    }
}
