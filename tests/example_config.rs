//! The example config shipped in the repository is valid and means what its comments say.
use preflight::config::Config;
use preflight::model::{Channel, Purpose};

#[test]
fn example_config_loads_and_validates() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/preflight.example.toml"
    ))
    .unwrap();
    let c = Config::parse(&text, "preflight.example.toml").unwrap();
    let policies = c.compiled_policies("preflight.example.toml").unwrap();
    let strict = policies.iter().find(|p| p.name == "strict").unwrap();
    assert!(!strict.consent_overrides_registry);
    assert!(strict.requires_consent(Channel::Email, Purpose::Marketing));
    assert!(strict.requires_consent(Channel::Whatsapp, Purpose::Service));
    let default = policies.iter().find(|p| p.name == "default").unwrap();
    assert!(!default.requires_consent(Channel::Email, Purpose::Marketing));
    assert_eq!(c.listen, "127.0.0.1:50051");
    let inbound = c.compiled_inbound("preflight.example.toml").unwrap();
    let help = inbound
        .programs
        .for_number("")
        .reply(preflight::model::InboundAction::Help);
    assert!(
        help.starts_with("Acme: Help at help@acme.example"),
        "{help}"
    );
}
