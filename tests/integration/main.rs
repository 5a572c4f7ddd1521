//! The integration tests: one binary, hermetic (fake servers on 127.0.0.1:0, certificates
//! generated at test time).

/// Shared fixtures: PKI, fake SMTP server, config helpers.
mod support;

/// The probe against the fake server: every TLS mode, failures and their classification.
mod probe;

/// The exporter in-process: scheduler, /metrics and the other HTTP endpoints.
mod exporter;

/// Mail domains and every-address hosts against the fake name server.
mod domains;

/// DNSSEC verdicts behind each kind of name server, against the signed fake one.
mod dnssec;

/// MTA-STS and TLS-RPT against the fake name server and an HTTPS server.
mod policy;

/// Delivery probes against the fake SMTP and IMAP servers: submit, read back, clean up.
mod delivery;

/// `check HOST` and `check DOMAIN` in-process: port roles sniffed, the implicit-TLS hint,
/// mail domains walked against the fake name server.
mod check;

/// The web surface's guards against their attacks (issue 26), in-process.
mod hardening;

/// The binary as a user starts it: exit codes, `--config.check`, log lines.
mod cli;

/// The web configuration's TLS settings (versions, suites, groups, client certificates
/// and their names) against the exporter in-process.
mod web_tls;

/// The shape of `src/`: no import circle between its modules, one map in `lib.rs`.
mod layout;
