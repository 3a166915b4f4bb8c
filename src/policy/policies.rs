//! The validated set of named policies, and which one a check gets when it names none.
use super::Policy;
use std::collections::HashMap;
use std::sync::Arc;

/// Looked up by name on every check that names a policy: a fast hasher, not SipHash (which
/// was 4% of a check under `regulation_f`).
type Named = HashMap<String, Arc<Policy>, foldhash::fast::RandomState>;

/// The validated set of named policies.
#[derive(Debug, Clone)]
pub struct Policies {
    default: Arc<Policy>,
    named: Named,
}

impl Policies {
    pub fn new(default_name: &str, policies: Vec<Policy>) -> Result<Policies, String> {
        let named: Named = policies
            .into_iter()
            .map(|p| (p.name.clone(), Arc::new(p)))
            .collect();
        let default = named
            .get(default_name)
            .cloned()
            .ok_or_else(|| format!("default_policy `{default_name}` is not defined"))?;
        // Every index of this process keeps the attempts the longest window counts.
        let longest = named
            .values()
            .map(|p| p.longest_window_ms())
            .max()
            .unwrap_or(0);
        crate::index::keep_attempts_for(longest);
        Ok(Policies { default, named })
    }

    /// Every policy by name, sorted.
    pub fn all(&self) -> Vec<(&str, &Arc<Policy>)> {
        let mut v: Vec<(&str, &Arc<Policy>)> =
            self.named.iter().map(|(k, p)| (k.as_str(), p)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// The smallest `max_staleness_ms` any policy sets: past it, some policy's checks
    /// BLOCK with INDEX_STALE on this replica.
    pub fn strictest_staleness(&self) -> Option<crate::model::Millis> {
        self.named.values().filter_map(|p| p.max_staleness_ms).min()
    }

    pub fn default_name(&self) -> &str {
        &self.default.name
    }

    /// The policy by name; empty means the default.
    pub fn get(&self, name: &str) -> crate::error::Result<&Arc<Policy>> {
        if name.is_empty() {
            return Ok(&self.default);
        }
        self.named.get(name).ok_or_else(|| {
            let mut names: Vec<&str> = self.named.keys().map(|s| s.as_str()).collect();
            names.sort();
            crate::error::Error::invalid(
                "policy",
                format!(
                    "unknown policy `{}`, configured: {}",
                    crate::model::ids::quote(name),
                    names.join(", ")
                ),
            )
        })
    }
}
