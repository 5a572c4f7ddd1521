//! `check HOST` in-process against fake servers on ports of no known role: how a port's
//! role is found (a greeting, or silence and then TLS), and the hint for a port that is
//! silent in plain text but answers TLS. And `check DOMAIN` against the fake name server:
//! which arguments are walked as a mail domain, the rows' MX preferences, and the
//! delivery port's say over the result.

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

/// Runs `check` in-process with these arguments (after `check`) and returns its output.
async fn run_check(args: &[String]) -> smtp_exporter::check::CheckOutput {
    use clap::Parser as _;
    let argv = std::iter::once("check".to_owned()).chain(args.iter().cloned());
    let command = CheckCommand::try_parse_from(argv).unwrap();
    smtp_exporter::check::run(&command.args).await.unwrap()
}

/// The arguments that check `name` on `ports` (`PORT[:MODE]`) and ask `dns`.
fn domain_args(name: &str, ports: &[String], dns: &testkit::dns::FakeDns) -> Vec<String> {
    let mut args = vec![name.to_owned()];
    for port in ports {
        args.extend(["--port".to_owned(), port.clone()]);
    }
    args.extend(["--dns-server".to_owned(), dns.addr.to_string(), "--timeout".into(), "3s".into()]);
    args
}

/// The whitespace-separated cells of each row of the table under the `PREF` header.
fn table_rows(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .skip_while(|l| !l.starts_with("PREF "))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect()
}

/// Issue 17: an IP address or a single label is checked as a host even when the name
/// server holds MX records for it, and so is a name without MX records; a name with MX
/// records is walked as a mail domain, and `--mx` walks any of them (a name without MX
/// as its own implicit MX).
#[tokio::test]
async fn only_a_dotted_name_with_mx_records_is_walked_as_a_mail_domain_without_mx_flag() {
    use testkit::dns::{FakeDns, Rr};
    let pki = TestPki::new();
    let smtp = FakeSmtp::start(Behaviour::default(), &pki).await;
    let dns = FakeDns::start(60).await;
    let localhost = Rr::Addr("127.0.0.1".parse().unwrap());
    for name in ["127.0.0.1", "mailhost", "mail.example.test"] {
        dns.add(name, Rr::Mx(10, "mx.example.test".into()));
    }
    dns.add("mx.example.test", localhost.clone()).add("plain.example.test", localhost);
    let check = |name: &str, mx: bool| {
        let mut args = domain_args(name, &[format!("{}:starttls", smtp.port())], &dns);
        args.push("--json".into());
        if mx {
            args.push("--mx".into());
        }
        async move {
            let output = run_check(&args).await;
            let json: serde_json::Value = serde_json::from_str(&output.text).unwrap();
            json
        }
    };
    let keys = |json: &serde_json::Value| {
        let mut keys: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let host_keys = ["host", "ports", "recommendation", "working_ports"];
    let domain_keys = ["dns_failure", "domain", "implicit_mx", "mx", "null_mx", "policy", "verdict"];
    for name in ["127.0.0.1", "mailhost", "plain.example.test"] {
        let json = check(name, false).await;
        assert_eq!(keys(&json), host_keys, "{name}: {json:#}");
        assert_eq!(json["host"], name, "{json:#}");
    }
    // With --mx any of them is walked, so the name server does answer their MX lookups.
    for (name, mx) in
        [("mail.example.test", false), ("mail.example.test", true), ("127.0.0.1", true), ("mailhost", true)]
    {
        let json = check(name, mx).await;
        assert_eq!(keys(&json), domain_keys, "{name}: {json:#}");
        let hosts: Vec<&serde_json::Value> =
            json["mx"].as_array().unwrap().iter().map(|m| &m["host"]).collect();
        assert_eq!(
            (&json["domain"], &json["implicit_mx"]),
            (&serde_json::json!(name), &serde_json::json!(false)),
            "{json:#}"
        );
        assert_eq!(hosts, [&serde_json::json!("mx.example.test")], "{json:#}");
    }
    let json = check("plain.example.test", true).await;
    assert_eq!(
        (&json["implicit_mx"], &json["mx"][0]["host"], &json["mx"][0]["addresses"][0]["success"]),
        (&serde_json::json!(true), &serde_json::json!("plain.example.test"), &serde_json::json!(true)),
        "{json:#}"
    );
}

/// Issue 17: `check DOMAIN` lists every (MX, address, port) with its MX's own preference,
/// in preference order whatever order the name server gives the MX records in.
#[tokio::test]
async fn a_domains_addresses_are_listed_with_their_own_mx_preference() {
    use testkit::dns::{FakeDns, Rr};
    let pki = TestPki::new();
    let smtp = FakeSmtp::start(Behaviour::default(), &pki).await;
    let dns = FakeDns::start(60).await;
    let localhost = Rr::Addr("127.0.0.1".parse().unwrap());
    dns.add("pref.example.test", Rr::Mx(20, "mx2.example.test".into()))
        .add("pref.example.test", Rr::Mx(10, "mx1.example.test".into()))
        .add("mx1.example.test", localhost.clone())
        .add("mx2.example.test", localhost);
    // Without a mode, a port of no known role is probed as opportunistic STARTTLS.
    let output = run_check(&domain_args("pref.example.test", &[smtp.port().to_string()], &dns)).await;
    let port = smtp.port().to_string();
    let row =
        |preference, mx| vec![preference, mx, "127.0.0.1", "ip4", &port, "starttls", "open", "ok", "TLS1.3"];
    assert_eq!(
        table_rows(&output.text),
        [row("10", "mx1.example.test"), row("20", "mx2.example.test")],
        "{}",
        output.text
    );
    assert!(output.any_success, "{}", output.text);
    let lines: Vec<&str> = output.text.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "smtp_exporter check pref.example.test (mail domain)",
            "",
            "MX: 10 mx1.example.test, 20 mx2.example.test"
        ]
    );
    assert_eq!(
        lines.last(),
        Some(&"  mail to pref.example.test is delivered via mx1.example.test (IPv4 only)."),
        "{}",
        output.text
    );
}

/// Issue 17: whether mail is delivered (and the exit status with it) is decided on the
/// delivery port, the first one given: an MX that refuses there is not rescued by
/// another port that works.
#[tokio::test]
async fn only_the_delivery_port_decides_whether_the_domain_gets_mail() {
    use testkit::dns::{FakeDns, Rr};
    let pki = TestPki::new();
    let smtp = FakeSmtp::start(Behaviour::default(), &pki).await;
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dns = FakeDns::start(60).await;
    dns.add("down.example.test", Rr::Mx(10, "mx1.example.test".into()))
        .add("mx1.example.test", Rr::Addr("127.0.0.1".parse().unwrap()));
    let ports = [format!("{refused}:starttls"), format!("{}:starttls", smtp.port())];
    let output = run_check(&domain_args("down.example.test", &ports, &dns)).await;
    assert!(!output.any_success, "{}", output.text);
    let (refused, working) = (refused.to_string(), smtp.port().to_string());
    let mut want = vec![
        vec![
            "10",
            "mx1.example.test",
            "127.0.0.1",
            "ip4",
            &refused,
            "starttls",
            "refused",
            "connect:",
            "refused",
            "-",
        ],
        vec!["10", "mx1.example.test", "127.0.0.1", "ip4", &working, "starttls", "open", "ok", "TLS1.3"],
    ];
    want.sort_by_key(|row| row[4].parse::<u16>().unwrap());
    assert_eq!(table_rows(&output.text), want, "{}", output.text);
    assert_eq!(
        output.text.lines().last(),
        Some("  mail to down.example.test is NOT delivered from here: mx1.example.test refuses."),
        "{}",
        output.text
    );
}

/// Issue 27: `check` reads its password files the way the configuration reads
/// `password_file`: a FIFO (which a plain read would block on) is refused by both, with the
/// same words.
#[tokio::test]
async fn check_refuses_a_fifo_password_file_as_the_configuration_does() {
    let dir = std::env::temp_dir().join(format!("smtp-exporter-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("pw");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let refused = format!("{}: not a regular file", fifo.display());
    // A reader that opened the FIFO would get a password (and the test would fail rather
    // than hang); a writer no reader ever meets stays blocked until the test ends.
    let writer = fifo.clone();
    std::thread::spawn(move || std::fs::write(writer, "pw\n"));

    let yaml = format!(
        "modules:\n  m:\n    tls: implicit\n    auth: {{ username: u, password_file: {} }}\ntargets:\n  - host: mx.example.test\n    ports: [{{ port: 465, module: m }}]\n",
        fifo.display()
    );
    let config = smtp_exporter::config::parse(&yaml, "t.yml").expect_err("the configuration refuses it");
    assert!(config.to_string().ends_with(&format!("password_file: {refused}")), "{config}");

    for flags in [
        vec!["--user", "u", "--password-file"],
        vec![
            "--deliver",
            "inbox@example.test",
            "--mail-from",
            "m@example.test",
            "--imap-user",
            "u",
            "--imap-password-file",
        ],
    ] {
        let mut argv = vec!["check".to_owned(), "127.0.0.1".to_owned()];
        argv.extend(flags.iter().map(|s| s.to_string()));
        argv.push(fifo.display().to_string());
        let command = <CheckCommand as clap::Parser>::try_parse_from(&argv).unwrap();
        let run = tokio::time::timeout(Duration::from_secs(10), smtp_exporter::check::run(&command.args));
        let Err(error) = run.await.expect("no read blocks on the FIFO") else { panic!("check refuses it") };
        assert!(error.to_string().ends_with(&refused), "{argv:?}: {error}");
    }
}
