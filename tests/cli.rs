//! The command line as an operator uses it: client subcommands, bad flags, an unreachable
//! server, and start-up refusing a broken config.
mod common;

use common::*;
use std::process::{Command, Output};

fn preflight(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn client_subcommands_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    server.ready().await;
    let url = server.url();
    let s = ["--server", url.as_str()];

    let o = preflight(
        &[
            &[
                "dnc",
                "add",
                "(202) 555-0142",
                "--type",
                "corporate",
                "--actor",
                "ops",
            ][..],
            &s,
        ]
        .concat(),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("ACCEPTED") && out.contains("+12025550142"),
        "{out}"
    );

    let o = preflight(
        &[
            &[
                "check",
                "202-555-0142",
                "--channel",
                "voice",
                "--purpose",
                "service",
            ][..],
            &s,
        ]
        .concat(),
    );
    let (out, _) = text(&o);
    assert!(
        out.starts_with("BLOCK +12025550142") && out.contains("DNC_CORPORATE"),
        "{out}"
    );

    let o = preflight(
        &[
            &[
                "consent",
                "grant",
                "jo@example.com",
                "--channel",
                "email",
                "--purpose",
                "marketing",
            ][..],
            &s,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let o = preflight(&[&["check", "jo@example.com", "--channel", "email"][..], &s].concat());
    assert!(
        text(&o).0.starts_with("ALLOW jo@example.com"),
        "{}",
        text(&o).0
    );
    let o = preflight(&[&["consent", "withdraw", "JO@example.com"][..], &s].concat());
    assert!(o.status.success());
    let o = preflight(&[&["check", "jo@example.com", "--channel", "email"][..], &s].concat());
    assert!(text(&o).0.contains("CONSENT_WITHDRAWN"), "{}", text(&o).0);

    let o = preflight(
        &[
            &[
                "dnc",
                "remove",
                "2025550142",
                "--actor",
                "ops",
                "--reason",
                "customer request",
            ][..],
            &s,
        ]
        .concat(),
    );
    assert!(
        o.status.success() && text(&o).0.contains("ACCEPTED"),
        "{:?}",
        text(&o)
    );
    let o = preflight(&[&["dnc", "get", "2025550142", "--archived"][..], &s].concat());
    assert!(
        text(&o).0.contains("archived by ops: customer request"),
        "{}",
        text(&o).0
    );

    // Removal without a reason is refused by the CLI itself.
    let o = preflight(&[&["dnc", "remove", "2025550142", "--actor", "ops"][..], &s].concat());
    assert!(!o.status.success() && text(&o).1.contains("--reason"));
    // A server-side refusal names the field.
    let o = preflight(
        &[
            &[
                "consent",
                "grant",
                "12",
                "--channel",
                "sms",
                "--purpose",
                "marketing",
            ][..],
            &s,
        ]
        .concat(),
    );
    let (_, err) = text(&o);
    assert!(
        !o.status.success() && err.contains("InvalidArgument") && err.contains("contact"),
        "{err}"
    );
    server.kill();
}

#[test]
fn bad_flags_and_unreachable_server_have_clear_messages() {
    let o = preflight(&["check", "2025551234", "--channel", "fax"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("unknown channel `fax`") && err.contains("SMS"),
        "{err}"
    );

    let port = free_port();
    let o = preflight(&[
        "check",
        "2025551234",
        "--channel",
        "sms",
        "--server",
        &format!("http://127.0.0.1:{port}"),
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!(
            "cannot reach preflight at http://127.0.0.1:{port}"
        )),
        "{err}"
    );
}

#[test]
fn broken_config_stops_start_up_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("preflight.toml");
    std::fs::write(&cfg, "default_region = \"US\"\n[policies.default]\nblock_dnc = [\"FEDERAL\", \"STATE\"]\nconsent_tll_days = 30\n").unwrap();
    let o = preflight(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("preflight.toml")
            && err.contains("line 4")
            && err.contains("consent_tll_days"),
        "{err}"
    );

    std::fs::write(&cfg, "[policies.default]\nblock_dnc = [\"CORPORATE\"]\n").unwrap();
    let o = preflight(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("policies.default.block_dnc") && err.contains("allow_registry_bypass"),
        "{err}"
    );
}
