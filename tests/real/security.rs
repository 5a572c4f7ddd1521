//! The web configuration with real clients (issue 12 finding 6): a real Prometheus
//! scraping over HTTPS with basic authentication, a wrong password, a client certificate
//! required, the file re-read when it changes, and the status page in headless Chromium
//! behind TLS and a password. Hashes are made by `htpasswd` (apache2-utils).

use super::*;

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-secret";

/// `htpasswd -nbBC 10 USER PASSWORD`: the bcrypt hash alone.
fn htpasswd(user: &str, password: &str) -> Result<String, String> {
    let line = run("htpasswd", &["-nbBC", "10", user, password])?;
    let hash =
        line.trim().split_once(':').map(|(_, h)| h.to_owned()).ok_or(format!("htpasswd printed {line:?}"))?;
    if !hash.starts_with("$2y$10$") {
        return Err(format!("htpasswd made {hash:?}"));
    }
    Ok(hash)
}

/// The test PKI's files: the CA, the server certificate for localhost, its key.
struct Pki {
    ca: String,
    cert: String,
    key: String,
    dir: PathBuf,
}

impl Pki {
    fn of(mta: &Mta) -> Pki {
        let dir = mta.state_dir.join("pki");
        let path = |f: &str| dir.join(f).display().to_string();
        Pki { ca: mta.get("CA_FILE").to_owned(), cert: path("server.pem"), key: path("server.key"), dir }
    }

    /// A client certificate and key signed by the test CA (made once).
    fn client(&self) -> Result<(String, String), String> {
        let (cert, key, csr) =
            (self.dir.join("client.pem"), self.dir.join("client.key"), self.dir.join("client.csr"));
        if !cert.exists() {
            let s = |p: &Path| p.display().to_string();
            // A version 3 certificate for client authentication: webpki accepts no other.
            let ext = self.dir.join("client.ext");
            std::fs::write(
                &ext,
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
            )
            .map_err(|e| e.to_string())?;
            run(
                "openssl",
                &[
                    "req",
                    "-new",
                    "-nodes",
                    "-newkey",
                    "rsa:2048",
                    "-subj",
                    "/CN=prometheus-client",
                    "-keyout",
                    &s(&key),
                    "-out",
                    &s(&csr),
                ],
            )?;
            run(
                "openssl",
                &[
                    "x509",
                    "-req",
                    "-sha256",
                    "-days",
                    "30",
                    "-in",
                    &s(&csr),
                    "-CA",
                    &self.ca,
                    "-CAkey",
                    &s(&self.dir.join("ca.key")),
                    "-set_serial",
                    "0x4242",
                    "-extfile",
                    &s(&ext),
                    "-out",
                    &s(&cert),
                ],
            )?;
        }
        Ok((cert.display().to_string(), key.display().to_string()))
    }
}

/// `curl` over HTTPS to the exporter: the HTTP status, or the failure's exit code as an
/// error. `args` adds credentials or a client certificate.
fn curl(addr: SocketAddr, path: &str, pki: &Pki, args: &[&str]) -> Result<u16, String> {
    let url = format!("https://localhost:{}{path}", addr.port());
    let mut all =
        vec!["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "--cacert", &pki.ca];
    all.extend_from_slice(args);
    all.push(&url);
    let out = Command::new("curl").args(&all).output().map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| format!("curl status: {e}"))
}

fn write_web(mta: &Mta, pki: &Pki, hash: &str, client_ca: bool) -> Result<PathBuf, String> {
    let client = if client_ca {
        format!("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n", pki.ca)
    } else {
        String::new()
    };
    let path = mta.state_dir.join("web.yml");
    let yaml = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n{client}http_server_config:\n  headers:\n    X-Frame-Options: deny\nbasic_auth_users:\n  {USER}: {hash}\n",
        pki.cert, pki.key
    );
    std::fs::write(&path, yaml).map_err(|e| e.to_string())?;
    Ok(path)
}

/// An exporter behind TLS and a password, ready.
fn secured_exporter(mta: &Mta, name: &str, web: &Path, pki: &Pki) -> Result<Exporter, String> {
    let targets = format!(
        "  - name: postfix\n    host: localhost\n    ports:\n      - {{ port: {}, module: relay }}\n",
        mta.get("RELAY_PORT")
    );
    let config = write_config(mta, name, &targets);
    let exporter = Exporter::spawn(
        &config,
        &[format!("--web.config.file={}", web.display()), "--web.enable-lifecycle".into()],
        None,
    )?;
    let credentials = format!("{USER}:{PASSWORD}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if curl(exporter.addr, "/-/ready", pki, &["-u", &credentials]) == Ok(200) {
            return Ok(exporter);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("the exporter behind TLS is not ready; log in {}", config.with_extension("log").display()))
}

/// A real Prometheus scrapes over HTTPS with basic_auth and tls_config.ca_file: the target
/// is up; with a wrong password it is down with 401; with a client certificate required
/// (the file changed under the running exporter), a client without one is refused.
pub fn web_config_tls_and_basic_auth_with_prometheus(mta: &Mta) -> Check {
    let pki = Pki::of(mta);
    let hash = htpasswd(USER, PASSWORD)?;
    let web = write_web(mta, &pki, &hash, false)?;
    let exporter = secured_exporter(mta, "tls-auth.yml", &web, &pki)?;
    let credentials = format!("{USER}:{PASSWORD}");
    for (args, want) in [
        (vec![], 401),
        (vec!["-u", "prometheus:wrong"], 401),
        (vec!["-u", "nobody:scrape-secret"], 401),
        (vec!["-u", credentials.as_str()], 200),
    ] {
        let got = curl(exporter.addr, "/metrics", &pki, &args)?;
        if got != want {
            return Err(format!("/metrics with {args:?}: {got}, want {want}"));
        }
    }
    // Plain HTTP gets no answer from a TLS port.
    if http_get(exporter.addr, "/metrics").is_ok_and(|(status, _)| status == 200) {
        return Err("the TLS port answered plain HTTP".into());
    }

    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config: {{ ca_file: {ca}, server_name: localhost }}\n    basic_auth: {{ username: {USER}, password: {password} }}\n    static_configs: [{{ targets: ['{addr}'] }}]\n",
            ca = pki.ca,
            addr = exporter.addr
        )
    };
    let config = format!(
        "global: {{ scrape_interval: 1s }}\nscrape_configs:\n{}{}",
        job("smtp_exporter", PASSWORD),
        job("wrong_password", "not-it")
    );
    let (_prometheus, prom, prom_dir) = start_prometheus(mta, "prometheus-tls", &config)?;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let (_, targets) = http_get(prom, "/api/v1/targets")?;
        let targets: serde_json::Value = serde_json::from_str(&targets).map_err(|e| e.to_string())?;
        let of = |job: &str| {
            targets["data"]["activeTargets"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["labels"]["job"] == job))
                .map(|t| {
                    (
                        t["health"].as_str().unwrap_or("").to_owned(),
                        t["lastError"].as_str().unwrap_or("").to_owned(),
                    )
                })
        };
        if let (Some((good, _)), Some((bad, bad_error))) = (of("smtp_exporter"), of("wrong_password")) {
            if good == "up" && bad == "down" && bad_error.contains("401") {
                println!("    prometheus over HTTPS with basic auth: up; wrong password: {bad_error}");
                break;
            }
            last = format!("smtp_exporter {good}, wrong_password {bad} ({bad_error})");
        }
        if Instant::now() > deadline {
            return Err(format!(
                "prometheus did not see the expected health within 40 s: {last} (log: {})",
                prom_dir.display()
            ));
        }
    }

    // The file changes under the running exporter: a client certificate is now required.
    write_web(mta, &pki, &hash, true)?;
    std::thread::sleep(Duration::from_millis(1500));
    let (cert, key) = pki.client()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let without = curl(exporter.addr, "/metrics", &pki, &["-u", &credentials]);
        let with =
            curl(exporter.addr, "/metrics", &pki, &["-u", &credentials, "--cert", &cert, "--key", &key]);
        if let (Err(refused), Ok(200)) = (&without, &with) {
            println!("    client certificate required: without one, {refused}");
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("after requiring client certificates: without {without:?}, with {with:?}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The status page in headless Chromium, over HTTPS with basic authentication: rendered
/// with the password (screenshot in target/test-artifacts), and the configured header is
/// on the response. (Without the password Chromium would wait on its login prompt; the
/// refusal is checked with curl in the test above.)
pub fn status_page_in_chromium_over_https_with_basic_auth(mta: &Mta) -> Check {
    let pki = Pki::of(mta);
    let web = write_web(mta, &pki, &htpasswd(USER, PASSWORD)?, false)?;
    let exporter = secured_exporter(mta, "tls-chromium.yml", &web, &pki)?;
    let url = format!("https://localhost:{}/", exporter.addr.port());
    let mut browser = Browser::start_with(1200, 800, &["--ignore-certificate-errors"])?;
    browser.call("Network.enable", serde_json::json!({}))?;
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    browser.call(
        "Network.setExtraHTTPHeaders",
        serde_json::json!({ "headers": { "Authorization": format!("Basic {token}") } }),
    )?;
    browser.open(&url)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let rows = browser.eval("document.querySelectorAll('tr.spec').length")?;
        if rows == serde_json::json!(1) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the page with credentials shows {rows} rows"));
        }
    }
    let shot = artefact_dir().join("status-page-https.png");
    let size = browser.screenshot(&shot)?;
    println!("    screenshot over HTTPS with basic auth: {} ({size} bytes)", shot.display());
    let head = Command::new("curl")
        .args([
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--cacert",
            &pki.ca,
            "-u",
            &format!("{USER}:{PASSWORD}"),
            &url,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    if !head.contains("x-frame-options: deny") {
        return Err(format!("the configured header is missing: {head}"));
    }
    Ok(())
}

/// `curl` over HTTPS with the password: the body of `path`.
fn curl_body(addr: SocketAddr, path: &str, pki: &Pki) -> Result<String, String> {
    let url = format!("https://localhost:{}{path}", addr.port());
    let credentials = format!("{USER}:{PASSWORD}");
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", "--cacert", &pki.ca, "-u", &credentials, &url])
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!("curl {path}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Issue 26 finding "emptying the web config turns TLS and auth off": behind TLS and a
/// password, the web configuration file is truncated to 0 bytes, then holds `---`, then
/// comments only. Each time, a request without the password over TLS still gets 401, plain
/// HTTP still gets no answer, `smtp_exporter_web_config_last_reload_successful` is 0 and
/// the log says why; the first file written back is taken again (gauge 1).
pub fn an_emptied_web_config_keeps_tls_and_the_password(mta: &Mta) -> Check {
    let pki = Pki::of(mta);
    let hash = htpasswd(USER, PASSWORD)?;
    let web = mta.state_dir.join("web-emptied.yml");
    let secured = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  {USER}: {hash}\n",
        pki.cert, pki.key
    );
    std::fs::write(&web, &secured).map_err(|e| e.to_string())?;
    let exporter = secured_exporter(mta, "web-emptied-exporter.yml", &web, &pki)?;
    let gauge = || -> Result<f64, String> {
        let body = curl_body(exporter.addr, "/metrics", &pki)?;
        Ok(one(&parse_exposition(&body), "smtp_exporter_web_config_last_reload_successful", &[])?.value)
    };
    if gauge()? != 1.0 {
        return Err("the web config's reload gauge is not 1 at start".into());
    }
    let mut seen = Vec::new();
    for (what, text) in [
        ("0 bytes", ""),
        ("---", "---\n"),
        ("comments only", "# being rewritten by the configuration tool\n# nothing yet\n"),
    ] {
        std::fs::write(&web, text).map_err(|e| e.to_string())?;
        // The file is looked at again at most once a second, as connections come.
        std::thread::sleep(Duration::from_millis(1100));
        let _ = curl(exporter.addr, "/-/healthy", &pki, &[]);
        std::thread::sleep(Duration::from_millis(1100));
        let without = curl(exporter.addr, "/metrics", &pki, &[]);
        let plain = http_get(exporter.addr, "/metrics");
        let reloaded = gauge()?;
        seen.push(format!(
            "{what}: without a password {}, plain HTTP {}, gauge {reloaded}",
            without.as_ref().map(|s| s.to_string()).unwrap_or_else(|e| e.clone()),
            plain.as_ref().map(|(s, _)| s.to_string()).unwrap_or_else(|e| e.chars().take(40).collect())
        ));
        if without != Ok(401) {
            return Err(format!("{what}: a request without the password over TLS: {without:?}"));
        }
        if plain.as_ref().is_ok_and(|(status, _)| *status < 400) {
            return Err(format!("{what}: plain HTTP answered {:?}", plain.map(|(s, _)| s)));
        }
        if reloaded != 0.0 {
            return Err(format!("{what}: smtp_exporter_web_config_last_reload_successful is {reloaded}"));
        }
    }
    let log_path = mta.state_dir.join("web-emptied-exporter.log");
    let log = std::fs::read_to_string(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    if !log.contains("would turn off TLS and basic authentication") {
        return Err(format!(
            "the log does not say why the emptied file was refused ({})",
            log_path.display()
        ));
    }
    std::fs::write(&web, &secured).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(1100));
    let _ = curl(exporter.addr, "/-/healthy", &pki, &[]);
    std::thread::sleep(Duration::from_millis(200));
    let back = gauge()?;
    println!("    {}; the secured file written back: gauge {back}", seen.join("; "));
    if back != 1.0 {
        return Err(format!("the secured file written back: gauge {back}"));
    }
    Ok(())
}
