//! Port state: what a probe's outcome says about the port itself, for operators asking
//! "is port 25 blocked, or is my server down?".
//!
//! Derived from a finished `ProbeReport` (no extra network work), and exported by `metrics`
//! as `smtp_port_state{state=...}` with every state present and 1 on the current one. The
//! connect error comes from the OS error code (see `sys::reason_of`), never from its text.

use super::{Phase, ProbeReport, Reason};

/// The reachability of a port, as seen from the exporter. `PortState::VARIANTS` lists the
/// states in documentation order, and decides which `smtp_port_state` series exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum PortState {
    /// An SMTP greeting came (whatever its code), or the TLS layer answered on an
    /// implicit-TLS port.
    Open,
    /// Connection refused: a TCP reset came back. Nothing listens, or a firewall REJECTs
    /// with a reset; the two look the same from outside.
    Refused,
    /// The connection attempt got no answer before the deadline: the SYN was silently
    /// dropped, as a filtering firewall does.
    Filtered,
    /// ICMP host/net unreachable or administratively prohibited came back (EHOSTUNREACH,
    /// ENETUNREACH): a firewall REJECT with ICMP, or a routing problem on the way.
    Unreachable,
    /// This machine has no route to the address (e.g. IPv6 on an IPv4-only host).
    NoRoute,
    /// The connection opened but no greeting came before the deadline: a tarpit, a
    /// postscreen-style delay, or a proxy that accepts and waits.
    Silent,
    /// The server accepted, then closed or reset the connection before a full greeting.
    ClosedEarly,
    /// The host name did not resolve, so no port was tried.
    Unresolved,
}

impl PortState {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The state a report implies.
    pub fn of(report: &ProbeReport) -> PortState {
        let Some(failure) = &report.failure else { return PortState::Open };
        match failure.phase {
            Phase::Resolve => PortState::Unresolved,
            Phase::Connect => match failure.reason {
                Reason::Refused | Reason::Reset => PortState::Refused,
                Reason::Timeout => PortState::Filtered,
                Reason::NoRoute => PortState::NoRoute,
                _ => PortState::Unreachable,
            },
            // Connected: whatever came later, the greeting decides.
            _ if report.banner_code.is_some() => PortState::Open,
            _ => match failure.reason {
                Reason::Timeout => PortState::Silent,
                Reason::Closed | Reason::Reset => PortState::ClosedEarly,
                // Garbage or a TLS error: something answered.
                _ => PortState::Open,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Failure;

    fn report(phase: Phase, reason: Reason, banner: Option<u16>) -> ProbeReport {
        let mut r = ProbeReport::new();
        r.failure = Some(Failure { phase, reason, detail: String::new() });
        r.banner_code = banner;
        r
    }

    #[test]
    fn states_from_outcomes() {
        use PortState as S;
        let cases = [
            (Phase::Resolve, Reason::DnsNxdomain, None, S::Unresolved),
            (Phase::Connect, Reason::Refused, None, S::Refused),
            (Phase::Connect, Reason::Reset, None, S::Refused),
            (Phase::Connect, Reason::Timeout, None, S::Filtered),
            (Phase::Connect, Reason::Unreachable, None, S::Unreachable),
            (Phase::Connect, Reason::NoRoute, None, S::NoRoute),
            (Phase::Banner, Reason::Timeout, None, S::Silent),
            (Phase::TlsHandshake, Reason::Timeout, None, S::Silent),
            (Phase::Banner, Reason::Closed, None, S::ClosedEarly),
            (Phase::Banner, Reason::Reset, None, S::ClosedEarly),
            (Phase::Banner, Reason::Protocol, None, S::Open),
            (Phase::Banner, Reason::Reply4xx, Some(421), S::Open),
            (Phase::Auth, Reason::AuthFailed, Some(220), S::Open),
            (Phase::Quit, Reason::Closed, Some(220), S::Open),
        ];
        for (phase, reason, banner, want) in cases {
            assert_eq!(PortState::of(&report(phase, reason, banner)), want, "{phase} {reason}");
        }
        assert_eq!(PortState::of(&ProbeReport::new()), S::Open);
    }
}
