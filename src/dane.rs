//! DANE for SMTP (RFC 7672, 7671, 6698): TLSA records, and whether the certificate chain a
//! server presented matches them.
//!
//! Pure functions, beside the data flow: the domain walk (`domains`) looks the TLSA records
//! of each MX up (with DNSSEC validation in `dns`, since DANE applies only to a secure
//! answer) and puts them on the specs of the domain's first port; the handshake (`tls`)
//! matches them against the chain the server presented, and a match decides the
//! certificate verdict there. For SMTP
//! only DANE-TA(2) and DANE-EE(3) are usable (RFC 7672 §3.1.3); PKIX-TA(0) and PKIX-EE(1)
//! records are counted as unusable. Under DANE-EE the certificate's names and dates do not
//! matter (RFC 7672 §3.1.1): a self-signed leaf that matches is valid.

use ring::digest;

/// One TLSA record; ordered by its fields, as written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tlsa {
    /// 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0 the whole certificate, 1 its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 the data itself, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    pub data: Vec<u8>,
}

impl Tlsa {
    /// Whether an SMTP client may use the record: DANE-TA or DANE-EE, with a known
    /// selector and matching type (RFC 7672 §3.1.3).
    pub fn usable(&self) -> bool {
        matches!(self.usage, 2 | 3) && self.selector <= 1 && self.matching <= 2
    }

    /// `3 1 1`, as the record is usually written.
    pub fn parameters(&self) -> String {
        format!("{} {} {}", self.usage, self.selector, self.matching)
    }

    /// Whether `cert` (DER) is what this record names, by its selector and matching type.
    fn names(&self, cert: &[u8]) -> bool {
        let selected: &[u8] = match self.selector {
            0 => cert,
            _ => match x509_parser::parse_x509_certificate(cert) {
                Ok((_, parsed)) => parsed.tbs_certificate.subject_pki.raw,
                Err(_) => return false,
            },
        };
        match self.matching {
            0 => selected == self.data.as_slice(),
            1 => digest::digest(&digest::SHA256, selected).as_ref() == self.data.as_slice(),
            2 => digest::digest(&digest::SHA512, selected).as_ref() == self.data.as_slice(),
            _ => false,
        }
    }
}

/// What the TLSA records say of a presented chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// How many records are usable for SMTP.
    pub usable: usize,
    /// The first usable record that matched, if any.
    pub matched: Option<Tlsa>,
    /// Where in the chain the matched certificate is: 0 for the leaf (DANE-EE), above it
    /// for DANE-TA.
    pub anchor: Option<usize>,
}

/// Matches the usable records against `chain` (DER, leaf first, as the server sent it):
/// DANE-EE against the leaf, DANE-TA against the certificates above it. A DANE-TA match
/// also needs the leaf to be issued under the matched certificate; this checks that the
/// leaf's issuer is that certificate's subject (the signature itself is rustls's business
/// in the handshake).
pub fn evaluate<C: AsRef<[u8]>>(records: &[Tlsa], chain: &[C]) -> Outcome {
    let usable: Vec<&Tlsa> = records.iter().filter(|r| r.usable()).collect();
    let found = chain.first().and_then(|leaf| {
        usable.iter().find_map(|record| {
            let at = match record.usage {
                3 => record.names(leaf.as_ref()).then_some(0),
                _ => (1..chain.len()).find(|&i| record.names(chain[i].as_ref()) && issued_under(chain, i)),
            };
            at.map(|at| ((*record).clone(), at))
        })
    });
    let (matched, anchor) = found.map_or((None, None), |(record, at)| (Some(record), Some(at)));
    Outcome { usable: usable.len(), matched, anchor }
}

/// Whether the certificates below `chain[anchor]` each name the next one up as their
/// issuer, down to the leaf.
fn issued_under<C: AsRef<[u8]>>(chain: &[C], anchor: usize) -> bool {
    let parsed: Vec<_> =
        chain[..=anchor].iter().map(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok()).collect();
    parsed.windows(2).all(|pair| match (&pair[0], &pair[1]) {
        (Some((_, child)), Some((_, parent))) => child.issuer() == parent.subject(),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    /// A CA and a leaf it issued, and an unrelated self-signed leaf, as DER.
    fn chain() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["mx1.example.test".into()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let other_key = KeyPair::generate().unwrap();
        let other =
            CertificateParams::new(vec!["mx9.example.test".into()]).unwrap().self_signed(&other_key).unwrap();
        (leaf.der().to_vec(), ca_cert.der().to_vec(), other.der().to_vec())
    }

    fn spki(der: &[u8]) -> Vec<u8> {
        x509_parser::parse_x509_certificate(der).unwrap().1.tbs_certificate.subject_pki.raw.to_vec()
    }

    fn record(usage: u8, selector: u8, matching: u8, of: &[u8]) -> Tlsa {
        let selected = if selector == 0 { of.to_vec() } else { spki(of) };
        let data = match matching {
            0 => selected,
            1 => digest::digest(&digest::SHA256, &selected).as_ref().to_vec(),
            _ => digest::digest(&digest::SHA512, &selected).as_ref().to_vec(),
        };
        Tlsa { usage, selector, matching, data }
    }

    #[test]
    fn every_selector_and_matching_type_of_dane_ee_and_dane_ta() {
        let (leaf, ca, _) = chain();
        let presented = vec![leaf.clone(), ca.clone()];
        for selector in 0..=1 {
            for matching in 0..=2 {
                let ee = record(3, selector, matching, &leaf);
                assert_eq!(
                    evaluate(std::slice::from_ref(&ee), &presented).matched,
                    Some(ee.clone()),
                    "3 {selector} {matching}"
                );
                let ta = record(2, selector, matching, &ca);
                let outcome = evaluate(std::slice::from_ref(&ta), &presented);
                assert_eq!(outcome.matched, Some(ta.clone()), "2 {selector} {matching}");
                assert_eq!(outcome.anchor, Some(1), "the CA is second in the chain");
                // DANE-EE names the leaf only; DANE-TA a certificate above it.
                assert_eq!(evaluate(&[record(3, selector, matching, &ca)], &presented).matched, None);
                assert_eq!(evaluate(&[record(2, selector, matching, &leaf)], &presented).matched, None);
            }
        }
    }

    #[test]
    fn a_stale_record_does_not_match_and_pkix_usages_are_unusable() {
        let (leaf, ca, other) = chain();
        let presented = vec![leaf.clone(), ca.clone()];
        // The record left behind after a renewal: another key.
        let stale = record(3, 1, 1, &other);
        assert_eq!(evaluate(&[stale], &presented), Outcome { usable: 1, matched: None, anchor: None });
        // PKIX-TA and PKIX-EE are not for SMTP (RFC 7672): not counted, not matched.
        let pkix = [record(0, 0, 1, &ca), record(1, 1, 1, &leaf)];
        assert_eq!(evaluate(&pkix, &presented), Outcome { usable: 0, matched: None, anchor: None });
        // A CA that is not the leaf's issuer does not match as DANE-TA.
        let unrelated = vec![leaf.clone(), other.clone()];
        assert_eq!(evaluate(&[record(2, 0, 1, &other)], &unrelated).matched, None);
        // A self-signed leaf that matches DANE-EE is valid, whatever its names.
        let self_signed = vec![other.clone()];
        assert!(evaluate(&[record(3, 1, 1, &other)], &self_signed).matched.is_some());
        assert_eq!(evaluate::<Vec<u8>>(&[record(3, 1, 1, &other)], &[]).matched, None);
    }
}
