//! Table-driven tests, one table per decision rule, against an explicit clock value.
use super::*;
use crate::index::{ConsentFact, ContactFacts, DncFact};
use crate::model::{ChannelSet, DAY_MS, DncType, PurposeSet, Reason};
use crate::policy::{Policy, PolicyConfig};
use smallvec::SmallVec;

const NOW: Millis = 1_800_000_000_000;

fn policy() -> Policy {
    Policy::from_config("default", &PolicyConfig::default()).unwrap()
}

fn consent(
    seq: u64,
    status: ConsentStatus,
    ch: &[Channel],
    p: &[Purpose],
    at: Millis,
) -> ConsentFact {
    ConsentFact {
        seq,
        effective_at: at,
        expires_at: None,
        status,
        channels: if ch.is_empty() {
            ChannelSet::all()
        } else {
            ChannelSet::of(ch)
        },
        purposes: if p.is_empty() {
            PurposeSet::of(&[Purpose::Marketing, Purpose::Service])
        } else {
            PurposeSet::of(p)
        },
        category: None,
    }
}

fn dnc(seq: u64, t: DncType) -> DncFact {
    DncFact {
        seq,
        dnc_type: t,
        list: None,
        expires_at: None,
        removed: false,
    }
}

fn facts(consents: Vec<ConsentFact>, dnc: Vec<DncFact>) -> ContactFacts {
    ContactFacts {
        consents: SmallVec::from_vec(consents),
        dnc: SmallVec::from_vec(dnc),
        ..ContactFacts::default()
    }
}

fn input(channel: Channel, purpose: Purpose) -> CheckInput<'static> {
    CheckInput {
        channel,
        purpose,
        category: None,
        direction: Direction::Outbound,
        at: NOW,
        hours: Default::default(),
        frequency: Default::default(),
    }
}

fn reasons(d: &Decision) -> Vec<Reason> {
    d.reasons.iter().collect()
}

fn granted_sms_marketing() -> ConsentFact {
    consent(
        1,
        ConsentStatus::Granted,
        &[Channel::Sms, Channel::Voice],
        &[Purpose::Marketing],
        NOW - DAY_MS,
    )
}

#[test]
fn rule2_dnc_entries() {
    use Channel::*;
    use Purpose::*;
    struct Case {
        name: &'static str,
        dnc: Vec<DncFact>,
        consents: Vec<ConsentFact>,
        check: CheckInput<'static>,
        want: Vec<Reason>,
    }
    let inbound = CheckInput {
        direction: Direction::Inbound,
        ..input(Voice, Service)
    };
    let cases = vec![
        Case {
            name: "federal blocks marketing voice (no consent too)",
            dnc: vec![dnc(5, DncType::Federal)],
            consents: vec![],
            check: input(Voice, Marketing),
            want: vec![Reason::DncFederal, Reason::NoConsent],
        },
        Case {
            name: "federal ignored for service calls",
            dnc: vec![dnc(5, DncType::Federal)],
            consents: vec![],
            check: input(Voice, Service),
            want: vec![],
        },
        Case {
            name: "state ignored on email",
            dnc: vec![dnc(5, DncType::State)],
            consents: vec![],
            check: input(Email, Marketing),
            want: vec![],
        },
        Case {
            name: "express consent overrides federal",
            dnc: vec![dnc(5, DncType::Federal)],
            consents: vec![granted_sms_marketing()],
            check: input(Sms, Marketing),
            want: vec![],
        },
        Case {
            name: "consent does not override corporate",
            dnc: vec![dnc(5, DncType::Corporate)],
            consents: vec![granted_sms_marketing()],
            check: input(Sms, Marketing),
            want: vec![Reason::DncCorporate],
        },
        Case {
            name: "corporate blocks service email too",
            dnc: vec![dnc(5, DncType::Corporate)],
            consents: vec![],
            check: input(Email, Service),
            want: vec![Reason::DncCorporate],
        },
        Case {
            name: "every reason collected",
            dnc: vec![
                dnc(5, DncType::Litigator),
                dnc(6, DncType::Personal),
                dnc(7, DncType::State),
            ],
            consents: vec![],
            check: input(Voice, Marketing),
            want: vec![
                Reason::DncState,
                Reason::DncPersonal,
                Reason::DncLitigator,
                Reason::NoConsent,
            ],
        },
        Case {
            name: "inbound skips dnc by default",
            dnc: vec![dnc(5, DncType::Corporate)],
            consents: vec![],
            check: inbound,
            want: vec![],
        },
        Case {
            name: "expired entry ignored",
            dnc: vec![DncFact {
                expires_at: Some(NOW - 1),
                ..dnc(5, DncType::Corporate)
            }],
            consents: vec![],
            check: input(Email, Service),
            want: vec![],
        },
        Case {
            name: "entry expiring later still blocks",
            dnc: vec![DncFact {
                expires_at: Some(NOW + 1),
                ..dnc(5, DncType::Corporate)
            }],
            consents: vec![],
            check: input(Email, Service),
            want: vec![Reason::DncCorporate],
        },
        Case {
            name: "removed entry ignored",
            dnc: vec![DncFact {
                removed: true,
                ..dnc(5, DncType::Corporate)
            }],
            consents: vec![],
            check: input(Email, Service),
            want: vec![],
        },
    ];
    for c in cases {
        let f = facts(c.consents, c.dnc);
        let d = evaluate(&policy(), &c.check, &[&f], &[], 0, 42);
        assert_eq!(reasons(&d), c.want, "{}", c.name);
        assert_eq!(d.index_seq, 42);
        if c.want.iter().any(|r| r.as_str().starts_with("DNC_")) {
            assert!(
                d.matched
                    .as_slice()
                    .iter()
                    .any(|m| matches!(m, RecordId::Dnc(_))),
                "{}",
                c.name
            );
        }
    }
}

#[test]
fn rule2_policy_switches() {
    let f = facts(
        vec![granted_sms_marketing()],
        vec![dnc(5, DncType::Federal), dnc(6, DncType::Corporate)],
    );
    let strict = Policy {
        consent_overrides_registry: false,
        ..policy()
    };
    let d = evaluate(
        &strict,
        &input(Channel::Sms, Purpose::Marketing),
        &[&f],
        &[],
        0,
        1,
    );
    assert_eq!(reasons(&d), vec![Reason::DncFederal, Reason::DncCorporate]);
    assert_eq!(d.matched.as_slice(), &[RecordId::Dnc(5), RecordId::Dnc(6)]);
    let inbound_blocking = Policy {
        block_inbound: true,
        ..policy()
    };
    let check = CheckInput {
        direction: Direction::Inbound,
        ..input(Channel::Email, Purpose::Service)
    };
    assert_eq!(
        reasons(&evaluate(&inbound_blocking, &check, &[&f], &[], 0, 1)),
        vec![Reason::DncCorporate]
    );
    let no_corporate = Policy {
        block_dnc: crate::model::DncTypeSet::of(&[DncType::Federal, DncType::State]),
        ..policy()
    };
    assert!(
        evaluate(
            &no_corporate,
            &input(Channel::Email, Purpose::Service),
            &[&f],
            &[],
            0,
            1
        )
        .allowed()
    );
}

#[test]
fn rule3_withdrawals() {
    use Channel::*;
    use Purpose::*;
    let withdraw_all = consent(2, ConsentStatus::Withdrawn, &[], &[], NOW - 10);
    let restore_sms = consent(3, ConsentStatus::Granted, &[Sms], &[Marketing], NOW - 5);
    let cases: Vec<(&str, Vec<ConsentFact>, CheckInput<'static>, Vec<Reason>)> = vec![
        (
            "unscoped withdrawal covers every channel",
            vec![withdraw_all.clone()],
            input(Email, Service),
            vec![Reason::ConsentWithdrawn],
        ),
        (
            "unscoped withdrawal spares security",
            vec![withdraw_all.clone()],
            input(Sms, Security),
            vec![],
        ),
        (
            "withdrawal after grant wins",
            vec![granted_sms_marketing(), withdraw_all.clone()],
            input(Sms, Marketing),
            vec![Reason::ConsentWithdrawn],
        ),
        (
            "grant after withdrawal restores",
            vec![withdraw_all.clone(), restore_sms.clone()],
            input(Sms, Marketing),
            vec![],
        ),
        (
            "restoring sms leaves voice withdrawn",
            vec![withdraw_all.clone(), restore_sms],
            input(Voice, Marketing),
            vec![Reason::ConsentWithdrawn],
        ),
        (
            "scoped withdrawal leaves other purposes",
            vec![consent(
                2,
                ConsentStatus::Withdrawn,
                &[Email],
                &[Marketing],
                NOW - 10,
            )],
            input(Email, Service),
            vec![],
        ),
        (
            "denied blocks its scope",
            vec![consent(
                2,
                ConsentStatus::Denied,
                &[Email],
                &[Marketing],
                NOW - 10,
            )],
            input(Email, Marketing),
            vec![Reason::ConsentDenied],
        ),
        (
            "future-dated withdrawal not yet in force",
            vec![
                granted_sms_marketing(),
                consent(4, ConsentStatus::Withdrawn, &[], &[], NOW + DAY_MS),
            ],
            input(Sms, Marketing),
            vec![],
        ),
        (
            "effective time orders, not seq",
            vec![
                consent(9, ConsentStatus::Withdrawn, &[], &[], NOW - 2 * DAY_MS),
                granted_sms_marketing(),
            ],
            input(Sms, Marketing),
            vec![],
        ),
    ];
    for (name, consents, check, want) in cases {
        let f = facts(consents, vec![]);
        let d = evaluate(&policy(), &check, &[&f], &[], 0, 7);
        assert_eq!(reasons(&d), want, "{name}");
        if !want.is_empty() {
            assert!(
                matches!(d.matched.as_slice(), [RecordId::Consent(_)]),
                "{name}"
            );
        }
    }
}

#[test]
fn rule3_categories_narrow_purposes() {
    let mut newsletter = consent(
        2,
        ConsentStatus::Withdrawn,
        &[Channel::Email],
        &[Purpose::Marketing],
        NOW - 10,
    );
    newsletter.category = Some("newsletter");
    let f = facts(vec![newsletter], vec![]);
    let general = input(Channel::Email, Purpose::Marketing);
    assert!(evaluate(&policy(), &general, &[&f], &[], 0, 1).allowed());
    let cat = CheckInput {
        category: Some("Newsletter"),
        ..general
    };
    assert_eq!(
        reasons(&evaluate(&policy(), &cat, &[&f], &[], 0, 1)),
        vec![Reason::ConsentWithdrawn]
    );
}

#[test]
fn rule4_express_consent() {
    use Channel::*;
    use Purpose::*;
    let mut expiring = granted_sms_marketing();
    expiring.expires_at = Some(NOW);
    let old = consent(
        1,
        ConsentStatus::Granted,
        &[Sms],
        &[Marketing],
        NOW - 366 * DAY_MS,
    );
    let cases: Vec<(&str, Vec<ConsentFact>, CheckInput<'static>, Vec<Reason>)> = vec![
        (
            "no consent for sms marketing",
            vec![],
            input(Sms, Marketing),
            vec![Reason::NoConsent],
        ),
        (
            "email marketing needs none by default",
            vec![],
            input(Email, Marketing),
            vec![],
        ),
        (
            "service sms needs none by default",
            vec![],
            input(Sms, Service),
            vec![],
        ),
        (
            "grant on another channel does not count",
            vec![granted_sms_marketing()],
            input(Whatsapp, Marketing),
            vec![Reason::NoConsent],
        ),
        (
            "grant counts",
            vec![granted_sms_marketing()],
            input(Sms, Marketing),
            vec![],
        ),
        (
            "past expiry",
            vec![expiring],
            input(Sms, Marketing),
            vec![Reason::ConsentExpired],
        ),
        (
            "older than ttl",
            vec![old.clone()],
            input(Sms, Marketing),
            vec![Reason::ConsentExpired],
        ),
    ];
    for (name, consents, check, want) in cases {
        let f = facts(consents, vec![]);
        assert_eq!(
            reasons(&evaluate(&policy(), &check, &[&f], &[], 0, 1)),
            want,
            "{name}"
        );
    }
    let f = facts(vec![old], vec![]);
    let no_ttl = Policy {
        consent_ttl_ms: None,
        ..policy()
    };
    assert!(evaluate(&no_ttl, &input(Sms, Marketing), &[&f], &[], 0, 1).allowed());
}

#[test]
fn rule5_staleness() {
    let p = Policy {
        max_staleness_ms: Some(5_000),
        ..policy()
    };
    let f = ContactFacts::default();
    let check = input(Channel::Email, Purpose::Service);
    for (age, want) in [
        (0, vec![]),
        (5_000, vec![]),
        (5_001, vec![Reason::IndexStale]),
    ] {
        assert_eq!(
            reasons(&evaluate(&p, &check, &[&f], &[], age, 1)),
            want,
            "age {age}"
        );
    }
    assert!(
        evaluate(&policy(), &check, &[&f], &[], 30 * 86_400_000, 1).allowed(),
        "no bound set"
    );
    // Millis::MAX: the replica never finished loading; no policy may allow on that.
    assert_eq!(
        reasons(&evaluate(&policy(), &check, &[&f], &[], Millis::MAX, 1)),
        vec![Reason::IndexStale]
    );
}

#[test]
fn linked_identifiers_do_not_share_grants() {
    let own = ContactFacts::default();
    let linked = facts(vec![granted_sms_marketing()], vec![]);
    let d = evaluate(
        &policy(),
        &input(Channel::Sms, Purpose::Marketing),
        &[&own, &linked],
        &[],
        0,
        1,
    );
    assert_eq!(reasons(&d), vec![Reason::NoConsent]);
}

#[test]
fn whatsapp_service_window() {
    let p = Policy {
        require_consent: [
            ChannelSet::of(&[Channel::Whatsapp]),
            ChannelSet::of(&[Channel::Whatsapp]),
            ChannelSet::EMPTY,
        ],
        ..policy()
    };
    let check = input(Channel::Whatsapp, Purpose::Service);
    let mut f = ContactFacts::default();
    assert_eq!(
        reasons(&evaluate(&p, &check, &[&f], &[], 0, 1)),
        vec![Reason::NoConsent],
        "no inbound message"
    );
    f.record_inbound(Channel::Whatsapp, NOW - WHATSAPP_WINDOW_MS + 1);
    assert!(
        evaluate(&p, &check, &[&f], &[], 0, 1).allowed(),
        "inside the window"
    );
    let later = CheckInput {
        at: NOW + 1,
        ..check
    };
    assert_eq!(
        reasons(&evaluate(&p, &later, &[&f], &[], 0, 1)),
        vec![Reason::NoConsent],
        "window closed"
    );
    let marketing = input(Channel::Whatsapp, Purpose::Marketing);
    assert_eq!(
        reasons(&evaluate(&p, &marketing, &[&f], &[], 0, 1)),
        vec![Reason::NoConsent],
        "marketing needs a template opt-in"
    );
    let mut sms = ContactFacts::default();
    sms.record_inbound(Channel::Sms, NOW - 5);
    assert_eq!(
        reasons(&evaluate(&p, &check, &[&sms], &[], 0, 1)),
        vec![Reason::NoConsent],
        "an SMS does not open a WhatsApp window"
    );
    f.consents
        .push(consent(9, ConsentStatus::Withdrawn, &[], &[], NOW - 10));
    let d = evaluate(&p, &check, &[&f], &[], 0, 1);
    assert_eq!(
        reasons(&d),
        vec![Reason::ConsentWithdrawn],
        "the window never overrides an opt-out"
    );
}

#[test]
fn linked_identifiers_share_withdrawals_and_company_dnc_not_registries() {
    let own = ContactFacts::default();
    let linked = facts(
        vec![consent(3, ConsentStatus::Withdrawn, &[], &[], NOW - 10)],
        vec![dnc(4, DncType::Federal), dnc(5, DncType::Personal)],
    );
    let d = evaluate(
        &policy(),
        &input(Channel::Voice, Purpose::Marketing),
        &[&own, &linked],
        &[],
        0,
        1,
    );
    assert_eq!(
        reasons(&d),
        vec![Reason::DncPersonal, Reason::ConsentWithdrawn]
    );
}

#[test]
fn registry_hits_follow_rule_2() {
    use crate::registry::RegistryHit;
    let federal = RegistryHit {
        dnc_type: DncType::Federal,
        list: crate::registry::list_version("FEDERAL", 3),
    };
    let tx = RegistryHit {
        dnc_type: DncType::State,
        list: crate::registry::list_version("STATE:TX", 1),
    };
    let lit = RegistryHit {
        dnc_type: DncType::Litigator,
        list: crate::registry::list_version("LITIGATOR", 2),
    };
    let none = ContactFacts::default();
    let d = evaluate(
        &policy(),
        &input(Channel::Voice, Purpose::Marketing),
        &[&none],
        &[federal, tx, lit],
        0,
        1,
    );
    assert_eq!(
        reasons(&d),
        vec![
            Reason::DncFederal,
            Reason::DncState,
            Reason::DncLitigator,
            Reason::NoConsent
        ]
    );
    let ids: Vec<String> = d.matched.as_slice().iter().map(|m| m.to_string()).collect();
    assert_eq!(
        ids,
        vec![
            "registry:FEDERAL@v3",
            "registry:STATE:TX@v1",
            "registry:LITIGATOR@v2"
        ]
    );
    // Registries govern only marketing on voice and SMS; litigators block everywhere.
    let d = evaluate(
        &policy(),
        &input(Channel::Email, Purpose::Marketing),
        &[&none],
        &[federal, lit],
        0,
        1,
    );
    assert_eq!(reasons(&d), vec![Reason::DncLitigator]);
    // Express consent overrides the registries, not the litigator list.
    let consented = facts(vec![granted_sms_marketing()], vec![]);
    let d = evaluate(
        &policy(),
        &input(Channel::Sms, Purpose::Marketing),
        &[&consented],
        &[federal, lit],
        0,
        1,
    );
    assert_eq!(reasons(&d), vec![Reason::DncLitigator]);
    let strict = Policy {
        consent_overrides_registry: false,
        ..policy()
    };
    let d = evaluate(
        &strict,
        &input(Channel::Sms, Purpose::Marketing),
        &[&consented],
        &[federal],
        0,
        1,
    );
    assert_eq!(reasons(&d), vec![Reason::DncFederal]);
    let inbound = CheckInput {
        direction: Direction::Inbound,
        ..input(Channel::Voice, Purpose::Marketing)
    };
    assert!(
        !reasons(&evaluate(&policy(), &inbound, &[&none], &[federal], 0, 1))
            .contains(&Reason::DncFederal)
    );
}

#[test]
fn record_ids_read_as_the_api_documents() {
    for (id, text) in [
        (RecordId::Consent(0), "cn-0"),
        (RecordId::Consent(u64::MAX), "cn-18446744073709551615"),
        (RecordId::Dnc(42), "dnc-42"),
        (
            RecordId::Registry(crate::registry::list_version("STATE:TX", 12)),
            "registry:STATE:TX@v12",
        ),
    ] {
        assert_eq!(id.text(), text);
        assert_eq!(id.to_string(), text);
    }
}
