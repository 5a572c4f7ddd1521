//! `check HOST` in-process against fake servers on ports of no known role: how a port's
//! role is found (a greeting, or silence and then TLS), and the hint for a port that is
//! silent in plain text but answers TLS.

use std::time::Duration;

use testkit::pki::TestPki;
use testkit::smtp::{Behaviour, FakeSmtp};
use tokio::io::AsyncReadExt;

/// The check subcommand's arguments, parsed as the binary parses them.
#[derive(clap::Parser)]
struct CheckCommand {
    #[command(flatten)]
    args: smtp_exporter::check::CheckArgs,
}

/// A listener that never greets and closes a connection as soon as anything arrives (so
/// a ClientHello gets no TLS answer).
async fn mute_listener() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                let _ = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await;
            });
        }
    });
    port
}

/// Issue 17: a port of no known role is sniffed (a greeting means STARTTLS, silence and
/// a TLS answer mean implicit TLS) and probed in the mode found; a port probed in plain
/// text that stays silent is called an implicit-TLS port only when it answers TLS.
#[tokio::test]
async fn unknown_ports_are_sniffed_and_silent_tls_ports_are_named() {
    let pki = TestPki::new();
    let plain = FakeSmtp::start(Behaviour::default(), &pki).await;
    let implicit = FakeSmtp::start(Behaviour { implicit_tls: true, ..Behaviour::default() }, &pki).await;
    let mute = mute_listener().await;
    let ca = pki.ca_file.display().to_string();
    let argv = [
        "check".to_owned(),
        "127.0.0.1".into(),
        "--port".into(),
        plain.port().to_string(),
        "--port".into(),
        implicit.port().to_string(),
        "--port".into(),
        format!("{}:starttls", implicit.port()),
        "--port".into(),
        format!("{mute}:starttls"),
        "--ca-file".into(),
        ca,
        "--timeout".into(),
        "3s".into(),
        "--json".into(),
    ];
    use clap::Parser as _;
    let command = CheckCommand::try_parse_from(argv).unwrap();
    let output = smtp_exporter::check::run(&command.args).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&output.text).unwrap();
    let ports = json["ports"].as_array().unwrap();
    let row = |i: usize| {
        let p = &ports[i];
        (p["mode"].as_str(), p["mode_detected_by"].as_str(), p["state"].as_str(), p["success"].as_bool())
    };
    assert_eq!(row(0), (Some("starttls"), Some("greeting"), Some("open"), Some(true)), "{}", output.text);
    assert_eq!(row(1), (Some("implicit"), Some("tls"), Some("open"), Some(true)), "{}", output.text);
    assert_eq!(row(2), (Some("starttls"), None, Some("silent"), Some(false)), "{}", output.text);
    assert_eq!(row(3), (Some("starttls"), None, Some("silent"), Some(false)), "{}", output.text);
    // What a mail admin reads off a working TLS port: its AUTH mechanisms and when its
    // certificate expires, in the JSON and in the table.
    let tls_port = &ports[1];
    assert_eq!(tls_port["auth_mechanisms"], serde_json::json!(["PLAIN", "LOGIN"]), "{}", output.text);
    let expires = tls_port["cert_expiry"].as_str().unwrap().to_owned();
    let not_after = tls_port["cert_expiry_timestamp_seconds"].as_i64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(expires.len() == 10 && not_after > now, "{}", output.text);
    let argv = [
        "check",
        "127.0.0.1",
        "--port",
        &format!("{}:implicit", implicit.port()),
        "--ca-file",
        &pki.ca_file.display().to_string(),
        "--timeout",
        "3s",
    ];
    let table =
        smtp_exporter::check::run(&CheckCommand::try_parse_from(argv).unwrap().args).await.unwrap().text;
    let row = table
        .lines()
        .find(|l| l.starts_with(&implicit.port().to_string()))
        .unwrap_or_else(|| panic!("{table}"));
    let days = (not_after - now).div_euclid(86_400);
    assert!(row.contains(&format!("{expires} ({days} d)")) && row.ends_with("PLAIN LOGIN"), "{row}");

    let advice = json["recommendation"].as_array().unwrap();
    let greeted = format!(
        "Port {p} greeted in plain text: probed with opportunistic STARTTLS (--port {p}:starttls_required insists on it).",
        p = plain.port()
    );
    assert!(advice.iter().any(|a| a.as_str() == Some(greeted.as_str())), "{}", output.text);
    assert_eq!(
        advice[0].as_str(),
        Some(
            format!(
                "Use {} (implicit TLS, RFC 8314); {} (STARTTLS) works too.",
                implicit.port(),
                plain.port()
            )
            .as_str()
        ),
        "a sniffed port that negotiated STARTTLS counts as submission with STARTTLS"
    );
    let hints: Vec<&str> =
        advice.iter().filter_map(|a| a.as_str()).filter(|a| a.contains("answers TLS")).collect();
    assert_eq!(
        hints,
        [format!(
            "Port {} sends no greeting but answers TLS: it is an implicit-TLS port; use --port {}:implicit.",
            implicit.port(),
            implicit.port()
        )],
        "{}",
        output.text
    );
}

/// Issue 17: a certificate that does not verify gets advice that fits why: an issuer this
/// machine does not trust, or a name that does not match.
#[tokio::test]
async fn certificate_failures_get_the_advice_that_fits() {
    let pki = TestPki::new();
    let untrusted = FakeSmtp::start(Behaviour { implicit_tls: true, ..Behaviour::default() }, &pki).await;
    let other = TestPki::with_names(&["other.example.test"]);
    let misnamed = FakeSmtp::start(Behaviour { implicit_tls: true, ..Behaviour::default() }, &other).await;
    let check = |port: u16, ca: Option<&std::path::Path>| {
        let mut argv =
            vec!["check".to_owned(), "127.0.0.1".into(), "--port".into(), format!("{port}:implicit")];
        if let Some(ca) = ca {
            argv.extend(["--ca-file".to_owned(), ca.display().to_string()]);
        }
        argv.extend(["--timeout".to_owned(), "3s".into()]);
        async move {
            use clap::Parser as _;
            smtp_exporter::check::run(&CheckCommand::try_parse_from(argv).unwrap().args).await.unwrap().text
        }
    };
    let text = check(untrusted.port(), None).await;
    assert!(
        text.contains(&format!("Port {}: ", untrusted.port()))
            && text.contains("; if you trust it, pass its (CA) certificate with --ca-file, or skip verification with --insecure."),
        "{text}"
    );
    let text = check(misnamed.port(), Some(&other.ca_file)).await;
    assert!(text.contains("; check the name you gave, or skip verification with --insecure."), "{text}");
}
