//! Reply templates per messaging program, with the disclosures CTIA asks for.
use crate::model::InboundAction;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A program as written in the config file (`[programs.<name>]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramConfig {
    /// Shown at the start of every reply.
    pub brand: String,
    /// Where to get help: a phone number, email or URL.
    pub help_contact: String,
    #[serde(default = "default_frequency")]
    pub frequency: String,
    /// The numbers or short codes this program sends from; inbound `to` picks the program.
    #[serde(default)]
    pub numbers: Vec<String>,
    #[serde(default = "default_opt_out")]
    pub opt_out_reply: String,
    #[serde(default = "default_opt_in")]
    pub opt_in_reply: String,
    #[serde(default = "default_help")]
    pub help_reply: String,
}

fn default_frequency() -> String {
    "Msg frequency varies".into()
}
fn default_opt_out() -> String {
    "{brand}: You are unsubscribed and will receive no more messages. Reply START to resubscribe."
        .into()
}
fn default_opt_in() -> String {
    "{brand}: You are subscribed again. {frequency}. Msg & data rates may apply. Reply HELP for help, STOP to cancel.".into()
}
fn default_help() -> String {
    "{brand}: Help at {help_contact}. {frequency}. Msg & data rates may apply. Reply STOP to cancel.".into()
}

impl Default for ProgramConfig {
    fn default() -> Self {
        ProgramConfig {
            brand: "preflight".into(),
            help_contact: "your account team".into(),
            frequency: default_frequency(),
            numbers: vec![],
            opt_out_reply: default_opt_out(),
            opt_in_reply: default_opt_in(),
            help_reply: default_help(),
        }
    }
}

/// A program with its replies rendered once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub name: String,
    opt_out: String,
    opt_in: String,
    help: String,
}

impl Program {
    pub fn reply(&self, action: InboundAction) -> &str {
        match action {
            InboundAction::OptOut => &self.opt_out,
            InboundAction::OptIn => &self.opt_in,
            InboundAction::Help => &self.help,
            InboundAction::None => "",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("programs.{program}.{key}: {message}")]
pub struct ProgramError {
    pub program: String,
    pub key: String,
    pub message: String,
}

fn render(
    name: &str,
    key: &str,
    template: &str,
    c: &ProgramConfig,
) -> Result<String, ProgramError> {
    let out = template
        .replace("{brand}", &c.brand)
        .replace("{help_contact}", &c.help_contact)
        .replace("{frequency}", &c.frequency);
    if let Some(start) = out.find('{') {
        let tail: String = out[start..].chars().take(20).collect();
        return Err(ProgramError {
            program: name.into(),
            key: key.into(),
            message: format!(
                "unknown placeholder near `{tail}` (use {{brand}}, {{help_contact}}, {{frequency}})"
            ),
        });
    }
    Ok(out)
}

/// Every configured program and which receiving number belongs to which.
#[derive(Debug, Clone)]
pub struct Programs {
    default: Program,
    by_number: BTreeMap<String, Program>,
}

impl Programs {
    pub fn new(
        configs: &BTreeMap<String, ProgramConfig>,
        default_name: &str,
    ) -> Result<Programs, ProgramError> {
        let mut compiled = BTreeMap::new();
        let mut by_number = BTreeMap::new();
        for (name, c) in configs {
            let p = Program {
                name: name.clone(),
                opt_out: render(name, "opt_out_reply", &c.opt_out_reply, c)?,
                opt_in: render(name, "opt_in_reply", &c.opt_in_reply, c)?,
                help: render(name, "help_reply", &c.help_reply, c)?,
            };
            // CTIA: the HELP reply names who sends and how to get help; STOP must be honoured.
            if !p.help.contains(&c.help_contact) {
                return Err(ProgramError {
                    program: name.clone(),
                    key: "help_reply".into(),
                    message: "must include {help_contact}".into(),
                });
            }
            for n in &c.numbers {
                by_number.insert(number_key(n), p.clone());
            }
            compiled.insert(name.clone(), p);
        }
        let default = match compiled.get(default_name) {
            Some(p) => p.clone(),
            None if configs.is_empty() => {
                let c = ProgramConfig::default();
                Program {
                    name: "default".into(),
                    opt_out: render("default", "opt_out_reply", &c.opt_out_reply, &c)?,
                    opt_in: render("default", "opt_in_reply", &c.opt_in_reply, &c)?,
                    help: render("default", "help_reply", &c.help_reply, &c)?,
                }
            }
            None => {
                return Err(ProgramError {
                    program: default_name.into(),
                    key: "(inbound.default_program)".into(),
                    message: "is not defined".into(),
                });
            }
        };
        Ok(Programs { default, by_number })
    }

    /// The program answering messages sent to `to`.
    pub fn for_number(&self, to: &str) -> &Program {
        self.by_number.get(&number_key(to)).unwrap_or(&self.default)
    }
}

/// Digits only, so `+1 (202) 555-0100`, `12025550100` and short code `12345` compare.
fn number_key(n: &str) -> String {
    let digits: String = n.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() == 10 {
        format!("1{digits}")
    } else {
        digits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_programs_pick_by_number() {
        let mut configs = BTreeMap::new();
        configs.insert(
            "alerts".to_string(),
            ProgramConfig {
                brand: "Acme Alerts".into(),
                help_contact: "1-800-555-0100".into(),
                numbers: vec!["+1 (202) 555-0100".into()],
                ..Default::default()
            },
        );
        configs.insert(
            "default".to_string(),
            ProgramConfig {
                brand: "Acme".into(),
                ..Default::default()
            },
        );
        let p = Programs::new(&configs, "default").unwrap();
        let alerts = p.for_number("12025550100");
        assert_eq!(alerts.name, "alerts");
        let help = alerts.reply(InboundAction::Help);
        assert!(
            help.starts_with("Acme Alerts: Help at 1-800-555-0100."),
            "{help}"
        );
        assert!(
            help.contains("Msg & data rates may apply") && help.contains("Reply STOP to cancel")
        );
        assert!(
            alerts
                .reply(InboundAction::OptOut)
                .contains("Reply START to resubscribe")
        );
        assert_eq!(p.for_number("55555").name, "default");
        assert_eq!(alerts.reply(InboundAction::None), "");
    }

    #[test]
    fn bad_templates_are_refused() {
        let mut configs = BTreeMap::new();
        configs.insert(
            "x".to_string(),
            ProgramConfig {
                help_reply: "{brand} {oops}".into(),
                ..Default::default()
            },
        );
        let e = Programs::new(&configs, "x").unwrap_err().to_string();
        assert!(
            e.contains("programs.x.help_reply") && e.contains("{oops}"),
            "{e}"
        );
    }
}
