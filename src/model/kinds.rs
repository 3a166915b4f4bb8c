//! The closed vocabularies of the domain (channels, purposes, DNC types, reasons) and bit sets of them.
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident, $set:ident, $label:literal { $($variant:ident = $bit:literal => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn bit(self) -> u16 {
                match self { $($name::$variant => 1 << $bit),+ }
            }

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Case-insensitive parse of the upper-case name (`sms`, `SMS`).
            pub fn parse(s: &str) -> Option<Self> {
                $(if s.eq_ignore_ascii_case($text) { return Some($name::$variant); })+
                None
            }

            /// Parse, or an error text naming what was expected.
            pub fn parse_or_explain(s: &str) -> Result<Self, String> {
                Self::parse(s).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    format!("unknown {} `{}`, expected one of {}", $label, s, names.join(", "))
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        /// A set of values stored as bits; serialised as a list of names.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $set(pub u16);

        impl $set {
            pub const EMPTY: $set = $set(0);
            pub const fn all() -> Self { $set(0 $(| (1 << $bit))+) }
            pub const fn contains(self, v: $name) -> bool { self.0 & v.bit() != 0 }
            pub fn insert(&mut self, v: $name) { self.0 |= v.bit(); }
            pub fn remove(&mut self, v: $name) { self.0 &= !v.bit(); }
            pub const fn is_empty(self) -> bool { self.0 == 0 }
            pub fn iter(self) -> impl Iterator<Item = $name> {
                $name::ALL.iter().copied().filter(move |v| self.contains(*v))
            }
            pub fn of(items: &[$name]) -> Self {
                let mut s = $set(0);
                for i in items { s.insert(*i); }
                s
            }
        }

        impl $set {
            /// The set of names as a config writes them; a bad one is refused with its
            /// position, for the caller to name its key (`channels.1`), and why.
            pub fn parse_names<S: AsRef<str>>(names: &[S]) -> Result<Self, (usize, String)> {
                let mut s = $set(0);
                for (i, n) in names.iter().enumerate() {
                    s.insert($name::parse_or_explain(n.as_ref()).map_err(|m| (i, m))?);
                }
                Ok(s)
            }
        }

        impl FromIterator<$name> for $set {
            fn from_iter<I: IntoIterator<Item = $name>>(iter: I) -> Self {
                let mut s = $set(0);
                for i in iter { s.insert(i); }
                s
            }
        }

        impl Serialize for $set {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.iter())
            }
        }

        impl<'de> Deserialize<'de> for $set {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let items: Vec<$name> = Vec::deserialize(d)?;
                Ok(items.into_iter().collect())
            }
        }
    };
}

vocabulary!(
    /// The medium of a contact attempt.
    Channel, ChannelSet, "channel" {
        Voice = 0 => "VOICE",
        Sms = 1 => "SMS",
        Whatsapp = 2 => "WHATSAPP",
        Email = 3 => "EMAIL",
        Chat = 4 => "CHAT",
        Social = 5 => "SOCIAL",
    }
);

vocabulary!(
    /// Why a contact is made.
    Purpose, PurposeSet, "purpose" {
        Marketing = 0 => "MARKETING",
        Service = 1 => "SERVICE",
        Security = 2 => "SECURITY",
    }
);

vocabulary!(
    /// Kinds of Do-Not-Call entry. FEDERAL and STATE are registries; the rest are company lists.
    DncType, DncTypeSet, "DNC type" {
        Federal = 0 => "FEDERAL",
        State = 1 => "STATE",
        Corporate = 2 => "CORPORATE",
        Personal = 3 => "PERSONAL",
        Litigator = 4 => "LITIGATOR",
    }
);

vocabulary!(
    /// Why a check came out BLOCK.
    Reason, ReasonSet, "reason" {
        InvalidContact = 0 => "INVALID_CONTACT",
        DncFederal = 1 => "DNC_FEDERAL",
        DncState = 2 => "DNC_STATE",
        DncCorporate = 3 => "DNC_CORPORATE",
        DncPersonal = 4 => "DNC_PERSONAL",
        DncLitigator = 5 => "DNC_LITIGATOR",
        ConsentWithdrawn = 6 => "CONSENT_WITHDRAWN",
        NoConsent = 7 => "NO_CONSENT",
        ConsentExpired = 8 => "CONSENT_EXPIRED",
        IndexStale = 9 => "INDEX_STALE",
        ConsentDenied = 10 => "CONSENT_DENIED",
        InvalidRequest = 11 => "INVALID_REQUEST",
        OutsideCallingHours = 12 => "OUTSIDE_CALLING_HOURS",
        FrequencyLimit = 13 => "FREQUENCY_LIMIT",
    }
);

vocabulary!(
    /// How a contact attempt ended.
    AttemptOutcome, OutcomeSet, "attempt outcome" {
        NoAnswer = 0 => "NO_ANSWER",
        Busy = 1 => "BUSY",
        Voicemail = 2 => "VOICEMAIL",
        Connected = 3 => "CONNECTED",
        Conversation = 4 => "CONVERSATION",
        Delivered = 5 => "DELIVERED",
        Failed = 6 => "FAILED",
    }
);

impl DncType {
    /// Registry lists govern only MARKETING on VOICE and SMS, and may be overridden by express consent.
    pub const fn is_registry(self) -> bool {
        matches!(self, DncType::Federal | DncType::State)
    }

    pub const fn reason(self) -> Reason {
        match self {
            DncType::Federal => Reason::DncFederal,
            DncType::State => Reason::DncState,
            DncType::Corporate => Reason::DncCorporate,
            DncType::Personal => Reason::DncPersonal,
            DncType::Litigator => Reason::DncLitigator,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Direction {
    Outbound,
    Inbound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsentStatus {
    Granted,
    Withdrawn,
    Denied,
}

impl Direction {
    pub fn parse(s: &str) -> Option<Self> {
        [Direction::Outbound, Direction::Inbound]
            .into_iter()
            .find(|d| s.eq_ignore_ascii_case(d.as_str()))
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "OUTBOUND",
            Direction::Inbound => "INBOUND",
        }
    }
}

impl ConsentStatus {
    pub fn parse(s: &str) -> Option<Self> {
        [
            ConsentStatus::Granted,
            ConsentStatus::Withdrawn,
            ConsentStatus::Denied,
        ]
        .into_iter()
        .find(|c| s.eq_ignore_ascii_case(c.as_str()))
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Granted => "GRANTED",
            ConsentStatus::Withdrawn => "WITHDRAWN",
            ConsentStatus::Denied => "DENIED",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_round_trip_through_serde_as_names() {
        let s = ChannelSet::of(&[Channel::Sms, Channel::Email]);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"["SMS","EMAIL"]"#);
        assert_eq!(serde_json::from_str::<ChannelSet>(&json).unwrap(), s);
    }

    #[test]
    fn parse_is_case_insensitive_and_explains_failures() {
        assert_eq!(Channel::parse("whatsapp"), Some(Channel::Whatsapp));
        let err = Purpose::parse_or_explain("sales").unwrap_err();
        assert!(
            err.contains("`sales`") && err.contains("MARKETING"),
            "{err}"
        );
    }

    #[test]
    fn purposes_all_includes_security() {
        assert!(PurposeSet::all().contains(Purpose::Security));
        assert_eq!(PurposeSet::all().iter().count(), 3);
    }
}
