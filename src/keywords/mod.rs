//! Inbound keyword classification (STOP / START / HELP) and the replies programs send back.
//!
//! The rule for ambiguity: a message is acted on only when every word in it is a keyword
//! or a courtesy word ("please", "me", "texting", "messages", ...). Any other word makes it
//! an ordinary sentence that merely mentions a keyword ("can you stop by tomorrow?"), and
//! the answer is NONE: such messages go to a person, not to an automatic opt-out. When
//! a message holds keywords of two kinds, opting out wins over help, and help over opting in.
mod replies;

pub use replies::{Program, ProgramConfig, Programs};

use crate::model::InboundAction;
use serde::Deserialize;
use std::collections::HashMap;

/// Inbound handling (`[inbound]` in the config file): keywords, opt-out scope, programs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordConfig {
    /// Channels an opt-out covers; empty: every channel.
    #[serde(default)]
    pub opt_out_channels: Vec<String>,
    /// Purposes an opt-out covers; empty: every purpose but SECURITY.
    #[serde(default)]
    pub opt_out_purposes: Vec<String>,
    /// Program answering numbers no program lists.
    #[serde(default = "default_program")]
    pub default_program: String,
    /// Built-in word lists to load: `en` (always sensible), `es`.
    #[serde(default = "default_languages")]
    pub languages: Vec<String>,
    #[serde(default)]
    pub extra_opt_out: Vec<String>,
    #[serde(default)]
    pub extra_opt_in: Vec<String>,
    #[serde(default)]
    pub extra_help: Vec<String>,
    #[serde(default)]
    pub extra_courtesy: Vec<String>,
}

fn default_program() -> String {
    "default".into()
}

fn default_languages() -> Vec<String> {
    vec!["en".into()]
}

impl Default for KeywordConfig {
    fn default() -> Self {
        KeywordConfig {
            opt_out_channels: vec![],
            opt_out_purposes: vec![],
            default_program: default_program(),
            languages: default_languages(),
            extra_opt_out: vec![],
            extra_opt_in: vec![],
            extra_help: vec![],
            extra_courtesy: vec![],
        }
    }
}

struct Language {
    opt_out: &'static [&'static str],
    opt_in: &'static [&'static str],
    help: &'static [&'static str],
    courtesy: &'static [&'static str],
}

const EN: Language = Language {
    // FCC per-se revocation words, CTIA's and carriers' (STOPALL, OPTOUT, OPT-OUT).
    opt_out: &[
        "stop",
        "stopall",
        "unsubscribe",
        "cancel",
        "end",
        "quit",
        "revoke",
        "optout",
        "opt out",
        "stop all",
    ],
    opt_in: &[
        "start",
        "unstop",
        "yes",
        "join",
        "subscribe",
        "optin",
        "opt in",
    ],
    help: &["help", "info"],
    courtesy: &[
        "please",
        "pls",
        "plz",
        "now",
        "me",
        "my",
        "i",
        "want",
        "to",
        "would",
        "like",
        "all",
        "the",
        "these",
        "this",
        "them",
        "it",
        "messages",
        "message",
        "msgs",
        "msg",
        "texts",
        "text",
        "texting",
        "sending",
        "send",
        "calls",
        "calling",
        "call",
        "emails",
        "email",
        "contacting",
        "from",
        "list",
        "number",
        "us",
        "you",
        "thanks",
        "thank",
        "thx",
        "ok",
        "okay",
        "immediately",
        "asap",
        "just",
        "right",
        "away",
        "more",
        "any",
        "a",
        "an",
        "your",
        "of",
        "for",
        "already",
        "again",
    ],
};

const ES: Language = Language {
    opt_out: &[
        "alto", "parar", "para", "cancelar", "baja", "detener", "no mas",
    ],
    opt_in: &["comenzar", "iniciar", "si", "alta", "suscribir"],
    help: &["ayuda"],
    courtesy: &[
        "por", "favor", "ya", "mas", "mensajes", "me", "envien", "quiero", "de", "los", "gracias",
        "no",
    ],
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    OptOut,
    OptIn,
    Help,
    Courtesy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub action: InboundAction,
    /// The keyword that decided, upper-case (`STOP`, `OPT OUT`); empty for NONE.
    pub keyword: String,
}

/// A compiled keyword table.
pub struct Keywords {
    words: HashMap<String, Class, foldhash::fast::RandomState>,
    /// Longest phrase in words, so scanning tries no longer ones.
    max_phrase: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("inbound.languages: unknown language `{0}` (built in: en, es)")]
pub struct UnknownLanguage(String);

impl Keywords {
    pub fn new(c: &KeywordConfig) -> Result<Keywords, UnknownLanguage> {
        let mut k = Keywords {
            words: HashMap::default(),
            max_phrase: 1,
        };
        for lang in &c.languages {
            let l = match lang.to_ascii_lowercase().as_str() {
                "en" => &EN,
                "es" => &ES,
                other => return Err(UnknownLanguage(other.to_string())),
            };
            // Courtesy words first, so a word that is both ("no" in Spanish) stays a keyword.
            k.add(l.courtesy.iter().copied(), Class::Courtesy);
            k.add(l.opt_in.iter().copied(), Class::OptIn);
            k.add(l.help.iter().copied(), Class::Help);
            k.add(l.opt_out.iter().copied(), Class::OptOut);
        }
        k.add(c.extra_courtesy.iter().map(String::as_str), Class::Courtesy);
        k.add(c.extra_opt_in.iter().map(String::as_str), Class::OptIn);
        k.add(c.extra_help.iter().map(String::as_str), Class::Help);
        k.add(c.extra_opt_out.iter().map(String::as_str), Class::OptOut);
        Ok(k)
    }

    fn add<'a>(&mut self, words: impl Iterator<Item = &'a str>, class: Class) {
        for w in words {
            let tokens = tokenize(w);
            if tokens.is_empty() {
                continue;
            }
            self.max_phrase = self.max_phrase.max(tokens.len());
            self.words.insert(tokens.join(" "), class);
        }
    }

    pub fn classify(&self, text: &str) -> Classified {
        let tokens = tokenize(strip_signature(text));
        let none = Classified {
            action: InboundAction::None,
            keyword: String::new(),
        };
        if tokens.is_empty() || tokens.len() > 12 {
            return none;
        }
        let mut best: Option<(Class, String)> = None;
        let mut i = 0;
        let mut phrase = String::new();
        while i < tokens.len() {
            // Longest phrase first: "opt out" before "opt".
            let mut matched = None;
            for n in (1..=self.max_phrase.min(tokens.len() - i)).rev() {
                phrase.clear();
                for (j, t) in tokens[i..i + n].iter().enumerate() {
                    if j > 0 {
                        phrase.push(' ');
                    }
                    phrase.push_str(t);
                }
                if let Some(c) = self.words.get(phrase.as_str()) {
                    matched = Some((*c, n));
                    break;
                }
            }
            let Some((class, n)) = matched else {
                return none;
            };
            if class != Class::Courtesy && best.as_ref().is_none_or(|(b, _)| rank(class) > rank(*b))
            {
                best = Some((class, phrase.to_uppercase()));
            }
            i += n;
        }
        match best {
            Some((Class::OptOut, k)) => Classified {
                action: InboundAction::OptOut,
                keyword: k,
            },
            Some((Class::OptIn, k)) => Classified {
                action: InboundAction::OptIn,
                keyword: k,
            },
            Some((Class::Help, k)) => Classified {
                action: InboundAction::Help,
                keyword: k,
            },
            _ => none,
        }
    }
}

fn rank(c: Class) -> u8 {
    match c {
        Class::OptOut => 3,
        Class::Help => 2,
        Class::OptIn => 1,
        Class::Courtesy => 0,
    }
}

/// Drops what follows the first line, and a trailing ` - Name` or `-- sig` signature.
fn strip_signature(text: &str) -> &str {
    let first = text.trim_start().lines().next().unwrap_or("");
    let cut = [" - ", " -- ", " — ", " – ", " -"]
        .iter()
        .filter_map(|sep| first.find(sep))
        .min()
        .unwrap_or(first.len());
    &first[..cut]
}

/// Folds a character: full-width forms to ASCII, common Latin accents off, lower case.
fn fold(c: char) -> Option<char> {
    let c = match c as u32 {
        0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        0x3000 => ' ',
        _ => c,
    };
    let c = match c {
        'á' | 'à' | 'ä' | 'â' | 'Á' | 'À' | 'Ä' | 'Â' => 'a',
        'é' | 'è' | 'ë' | 'ê' | 'É' | 'È' | 'Ë' | 'Ê' => 'e',
        'í' | 'ì' | 'ï' | 'î' | 'Í' | 'Ì' | 'Ï' | 'Î' => 'i',
        'ó' | 'ò' | 'ö' | 'ô' | 'Ó' | 'Ò' | 'Ö' | 'Ô' => 'o',
        'ú' | 'ù' | 'ü' | 'û' | 'Ú' | 'Ù' | 'Ü' | 'Û' => 'u',
        'ñ' | 'Ñ' => 'n',
        _ => c,
    };
    if c.is_alphanumeric() {
        c.to_lowercase().next()
    } else {
        None
    }
}

/// Lower-case words, with punctuation, quotes and emoji treated as separators.
/// An apostrophe joins (`don't` stays one word, so it never reads as a keyword).
fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        match fold(c) {
            Some(f) => cur.push(f),
            None if matches!(c, '\'' | '’') && !cur.is_empty() => {}
            None => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests;

/// How inbound messages are understood and answered.
pub struct Inbound {
    pub keywords: Keywords,
    pub programs: Programs,
    pub opt_out_channels: crate::model::ChannelSet,
    pub opt_out_purposes: crate::model::PurposeSet,
}
