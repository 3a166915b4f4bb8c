//! Classification tables: what must fire, what must not, and configured extras.
use super::*;

fn en() -> Keywords {
    Keywords::new(&KeywordConfig::default()).unwrap()
}

#[test]
fn opt_outs() {
    let k = en();
    for text in [
        "STOP",
        "stop",
        "Stop.",
        "STOP!!",
        " stop ",
        "\"Stop\"",
        "«STOP»",
        "stop please",
        "Please stop",
        "please unsubscribe me",
        "UNSUBSCRIBE",
        "Cancel",
        "END",
        "quit",
        "revoke",
        "OPT OUT",
        "opt-out",
        "OptOut",
        "STOPALL",
        "stop all",
        "Stop 🛑",
        "🙅 STOP 🙅",
        "ＳＴＯＰ",
        "ｓｔｏｐ",
        "Stop texting me",
        "stop sending me messages",
        "STOP\nSent from my iPhone",
        "Stop - John",
        "stop -- Mike",
        "I want to stop",
        "stop now please",
        "Stop, thanks",
        "stop help",
        "yes stop",
    ] {
        let c = k.classify(text);
        assert_eq!(c.action, InboundAction::OptOut, "{text:?} -> {c:?}");
    }
    assert_eq!(k.classify("opt-out").keyword, "OPT OUT");
    assert_eq!(k.classify("please STOP!").keyword, "STOP");
}

#[test]
fn ordinary_sentences_do_not_fire() {
    let k = en();
    for text in [
        "can you stop by tomorrow?",
        "don't stop",
        "I'll be at the bus stop",
        "what time does the sale end",
        "cancel my 3pm appointment and rebook",
        "hello",
        "",
        "   ",
        "🙂",
        "Is this the helpdesk",
        "yes I'd like to know more about the offer before it ends",
    ] {
        assert_eq!(k.classify(text).action, InboundAction::None, "{text:?}");
    }
}

#[test]
fn opt_ins_and_help() {
    let k = en();
    for text in [
        "START",
        "start",
        "Unstop",
        "YES",
        "yes please",
        "JOIN",
        "subscribe",
        "Start!",
    ] {
        assert_eq!(k.classify(text).action, InboundAction::OptIn, "{text:?}");
    }
    for text in [
        "HELP",
        "help me",
        "info",
        "INFO please",
        "help?",
        "start help",
    ] {
        assert_eq!(k.classify(text).action, InboundAction::Help, "{text:?}");
    }
}

#[test]
fn spanish_is_an_option() {
    assert_eq!(en().classify("ALTO").action, InboundAction::None);
    let k = Keywords::new(&KeywordConfig {
        languages: vec!["en".into(), "es".into()],
        ..Default::default()
    })
    .unwrap();
    for text in [
        "ALTO",
        "alto por favor",
        "Baja",
        "cancelar",
        "No más mensajes",
        "PARAR",
    ] {
        assert_eq!(k.classify(text).action, InboundAction::OptOut, "{text:?}");
    }
    assert_eq!(k.classify("Sí").action, InboundAction::OptIn);
    assert_eq!(k.classify("AYUDA").action, InboundAction::Help);
    assert!(
        Keywords::new(&KeywordConfig {
            languages: vec!["xx".into()],
            ..Default::default()
        })
        .is_err()
    );
}

#[test]
fn extra_keywords_are_configurable() {
    let k = Keywords::new(&KeywordConfig {
        extra_opt_out: vec!["remove me".into(), "arret".into()],
        extra_courtesy: vec!["kindly".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(k.classify("Remove me").action, InboundAction::OptOut);
    assert_eq!(k.classify("kindly remove me").keyword, "REMOVE ME");
    assert_eq!(k.classify("ARRÊT").action, InboundAction::OptOut);
}
