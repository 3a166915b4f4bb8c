//! Who made a change and through what: the actor and request metadata of an audit record.
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The token name once tokens are configured; otherwise the caller's own `x-actor`
    /// header, or the transport and peer.
    pub actor: String,
    /// Transport, peer address, user agent, request id: never a secret.
    pub metadata: BTreeMap<String, String>,
}

impl Caller {
    /// The service acting on its own (start-up, request processing).
    pub fn system(what: &str) -> Caller {
        let mut metadata = BTreeMap::new();
        metadata.insert("transport".into(), "internal".into());
        Caller {
            actor: format!("system:{what}"),
            metadata,
        }
    }

    /// A transport's caller: the token's name when one authenticated the call (the claimed
    /// `x-actor` then only goes on record as `on_behalf_of`), else the claim, else the peer.
    pub fn identify(
        principal: Option<&crate::auth::Principal>,
        claimed: &str,
        transport: &str,
        peer: &str,
    ) -> Caller {
        let base = |actor: String| Caller {
            actor,
            metadata: BTreeMap::new(),
        };
        match principal {
            Some(p) => base(p.name.clone())
                .with("role", p.role.as_str())
                .with("on_behalf_of", claimed),
            None if !claimed.is_empty() => base(claimed.to_string()),
            None if !peer.is_empty() => base(format!("{transport}:{peer}")),
            None => base(transport.to_string()),
        }
    }

    /// `identify`, plus the request metadata every transport records.
    pub fn from_request(
        principal: Option<&crate::auth::Principal>,
        claimed: &str,
        transport: &str,
        peer: &str,
        user_agent: &str,
        request_id: &str,
    ) -> Caller {
        Self::identify(principal, claimed, transport, peer)
            .with("transport", transport)
            .with("peer", peer)
            .with("user_agent", user_agent)
            .with("request_id", request_id)
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Caller {
        let v: String = value.into();
        if !v.is_empty() {
            self.metadata.insert(key.into(), v);
        }
        self
    }
}
