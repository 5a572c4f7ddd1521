//! The signing half of the fake name server: keys made at test time (ECDSAP256SHA256, one
//! key per zone, flags 257), the zones a test declares, and answers carrying RRSIGs and
//! NSEC denial proofs when the query sets DO.
//!
//! Layout: the root zone `.` holds every name not at or below a declared zone; a declared
//! zone is delegated from the closest declared zone above it, or from the root. Each apex
//! answers SOA, NS and (when it signs) DNSKEY; the parent answers DS at the delegation
//! point. Negative answers are proven with a real NSEC chain over the zone's names (no
//! wildcards, no NSEC3), computed from the data at each query.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Unbounded};
use std::time::Duration;

use hickory_proto::dnssec::crypto::EcdsaSigningKey;
use hickory_proto::dnssec::rdata::{DNSSECRData, DNSKEY, DS, NSEC, RRSIG};
use hickory_proto::dnssec::{Algorithm, DigestType, DnssecSigner, SigningKey};
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType};

use super::{behaviour, dnssec_ok, header, key, rdata, rtype, Behaviour, Zone};

/// How a declared zone looks to a validating resolver, so that a test can give each DNSSEC
/// verdict a domain of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneSecurity {
    /// Signed, and the parent's DS matches its key: its answers validate
    /// (`Proof::Secure`).
    Secure,
    /// Unsigned, and the parent proves with a signed NSEC that it has no DS for it: a
    /// validator takes its records as they are (`Proof::Insecure`).
    Insecure,
    /// Signed, but the parent's DS matches none of its keys: every validating resolver
    /// fails its answers.
    Bogus,
    /// Signed, and the DS matches, but every signature of the zone's own data expired
    /// weeks ago: validation fails too.
    Expired,
}

/// What a validating resolver would conclude about an answer, for
/// [`super::ServerMode::Validating`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Verdict {
    Secure,
    Insecure,
    Bogus,
}

/// One zone's key and what it signs with.
struct Keys {
    signer: DnssecSigner,
    dnskey: DNSKEY,
    /// Its signatures begin and end in the past.
    expired: bool,
}

impl Keys {
    fn new(apex: &Name, expired: bool) -> Keys {
        let algorithm = Algorithm::ECDSAP256SHA256;
        let pkcs8 = EcdsaSigningKey::generate_pkcs8(algorithm).expect("generate a zone key");
        let key = EcdsaSigningKey::from_pkcs8(&pkcs8, algorithm).expect("read the zone key");
        let dnskey = DNSKEY::with_flags(257, key.to_public_key().expect("the zone key's public half"));
        let validity = Duration::from_secs(if expired { 86_400 } else { 7 * 86_400 });
        let signer = DnssecSigner::new(dnskey.clone(), Box::new(key), apex.clone(), validity);
        Keys { signer, dnskey, expired }
    }

    /// The RRSIG of `records`, one RRset (same owner, type and TTL).
    fn sign(&self, records: &[Record]) -> Record {
        let first = &records[0];
        let mut set = RecordSet::with_ttl(first.name.clone(), first.record_type(), first.ttl);
        for record in records {
            set.insert(record.clone(), 0);
        }
        let now = time::OffsetDateTime::now_utc();
        let inception =
            if self.expired { now - time::Duration::days(30) } else { now - time::Duration::hours(1) };
        let rrsig = RRSIG::from_rrset(&set, DNSClass::IN, inception, &self.signer).expect("sign an RRset");
        Record::from_rdata(first.name.clone(), first.ttl, RData::DNSSEC(DNSSECRData::RRSIG(rrsig)))
    }
}

/// A zone the test declared.
struct Declared {
    security: ZoneSecurity,
    keys: Keys,
    /// What the parent publishes at the delegation (unused when insecure).
    ds: DS,
}

/// The keys and declared zones of a signed server.
pub(super) struct Signing {
    root: Keys,
    zones: BTreeMap<Name, Declared>,
}

/// The target of every NS record: nothing resolves it, validators only look for the NS.
fn ns_target() -> Name {
    Name::from_ascii("ns.invalid.").expect("a valid name")
}

impl Signing {
    pub(super) fn new() -> Signing {
        Signing { root: Keys::new(&Name::root(), false), zones: BTreeMap::new() }
    }

    /// Declares (or declares again, with new keys) the zone at `apex` (a zone key).
    pub(super) fn declare(&mut self, apex: &str, security: ZoneSecurity) {
        let apex = Name::from_ascii(format!("{apex}.")).expect("a valid zone name");
        assert!(!apex.is_root(), "the root zone is always there, signed");
        let keys = Keys::new(&apex, security == ZoneSecurity::Expired);
        let published = if security == ZoneSecurity::Bogus {
            // A key the zone never publishes nor signs with.
            Keys::new(&apex, false).dnskey
        } else {
            keys.dnskey.clone()
        };
        let ds = DS::from_key(published.public_key(), &apex, DigestType::SHA256).expect("a DS record");
        self.zones.insert(apex, Declared { security, keys, ds });
    }

    /// The root's trust anchor line.
    pub(super) fn trust_anchor(&self) -> String {
        format!(". 3600 IN DNSKEY {}", self.root.dnskey)
    }

    /// The apex of the zone `name` is in.
    fn zone_of(&self, name: &Name) -> Name {
        self.zones
            .keys()
            .filter(|apex| apex.zone_of(name))
            .max_by_key(|apex| apex.num_labels())
            .cloned()
            .unwrap_or_else(Name::root)
    }

    /// The apex of the zone that delegates the declared zone `apex`.
    fn parent_of(&self, apex: &Name) -> Name {
        self.zone_of(&apex.base_name())
    }

    /// The keys that sign the zone at `apex`, if it signs.
    fn keys(&self, apex: &Name) -> Option<&Keys> {
        if apex.is_root() {
            return Some(&self.root);
        }
        let zone = self.zones.get(apex)?;
        (zone.security != ZoneSecurity::Insecure).then_some(&zone.keys)
    }

    /// What a validator concludes about data of the zone at `apex`: the first zone from the
    /// root down that is not secure decides.
    fn verdict(&self, apex: &Name) -> Verdict {
        let mut chain: Vec<(&Name, &Declared)> =
            self.zones.iter().filter(|(ancestor, _)| ancestor.zone_of(apex)).collect();
        chain.sort_by_key(|(ancestor, _)| ancestor.num_labels());
        for (_, zone) in chain {
            match zone.security {
                ZoneSecurity::Secure => {}
                ZoneSecurity::Insecure => return Verdict::Insecure,
                ZoneSecurity::Bogus | ZoneSecurity::Expired => return Verdict::Bogus,
            }
        }
        Verdict::Secure
    }

    /// Every RRset at `name` in the zone at `apex`, by type.
    fn rrsets(&self, zone: &Zone, apex: &Name, name: &Name) -> BTreeMap<RecordType, Vec<RData>> {
        let mut sets: BTreeMap<RecordType, Vec<RData>> = BTreeMap::new();
        if self.zone_of(name) == *apex {
            for rr in zone.records.get(&key(&name.to_ascii())).into_iter().flatten() {
                let Some(data) = rdata(rr, rtype(rr)) else { continue };
                let set = sets.entry(rtype(rr)).or_default();
                if !set.contains(&data) {
                    set.push(data);
                }
            }
            if name == apex {
                let ttl = zone.negative_ttl();
                let hostmaster = Name::from_ascii("hostmaster.invalid.").expect("a valid name");
                let soa = SOA::new(ns_target(), hostmaster, 1, 3600, 600, 86_400, ttl);
                sets.insert(RecordType::SOA, vec![RData::SOA(soa)]);
                sets.insert(RecordType::NS, vec![RData::NS(NS(ns_target()))]);
                if let Some(keys) = self.keys(apex) {
                    let dnskey = RData::DNSSEC(DNSSECRData::DNSKEY(keys.dnskey.clone()));
                    sets.insert(RecordType::DNSKEY, vec![dnskey]);
                }
            }
        } else if let Some(child) = self.zones.get(name).filter(|_| self.parent_of(name) == *apex) {
            sets.insert(RecordType::NS, vec![RData::NS(NS(ns_target()))]);
            if child.security != ZoneSecurity::Insecure {
                sets.insert(RecordType::DS, vec![RData::DNSSEC(DNSSECRData::DS(child.ds.clone()))]);
            }
        }
        sets
    }

    /// The owner names of the zone at `apex`, in canonical order: its apex, the names of
    /// its records, and its delegation points.
    fn names(&self, zone: &Zone, apex: &Name) -> BTreeSet<Name> {
        let mut names = BTreeSet::from([apex.clone()]);
        for record_key in zone.records.keys() {
            let Ok(name) = Name::from_ascii(format!("{record_key}.")) else { continue };
            if self.zone_of(&name) == *apex {
                names.insert(name);
            }
        }
        for child in self.zones.keys() {
            if self.parent_of(child) == *apex {
                names.insert(child.clone());
            }
        }
        names
    }

    /// The NSEC record at `name` (one of `names`), pointing at the next name of the chain.
    fn nsec(&self, zone: &Zone, apex: &Name, names: &BTreeSet<Name>, name: &Name) -> Record {
        let next = names.range((Excluded(name), Unbounded)).next().unwrap_or(apex).clone();
        let types: Vec<RecordType> = self.rrsets(zone, apex, name).into_keys().collect();
        let data = NSEC::new_cover_self(next, types);
        Record::from_rdata(name.clone(), zone.negative_ttl(), RData::DNSSEC(DNSSECRData::NSEC(data)))
    }

    /// The signed server's reply to `query` and what a validator would make of it, or
    /// `None` to stay silent.
    pub(super) fn answer(&self, query: &Message, zone: &Zone) -> Option<(Message, Verdict)> {
        let question = query.queries.first()?.clone();
        let mut reply = header(query);
        let wants_dnssec = dnssec_ok(query);
        if query.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(1232).set_dnssec_ok(wants_dnssec);
            reply.set_edns(edns);
        }
        let mut name = question.name().to_lowercase();
        match behaviour(zone, &key(&name.to_ascii())) {
            Behaviour::Silent => return None,
            Behaviour::Servfail => {
                reply.metadata.response_code = ResponseCode::ServFail;
                return Some((reply, Verdict::Insecure));
            }
            Behaviour::Answer => {}
        }
        let wanted = question.query_type();
        let mut verdict = Verdict::Secure;
        // One RRset with its signature when the query asked for signatures.
        let rrset = |name: &Name, ttl: u32, data: Vec<RData>, keys: Option<&Keys>| -> Vec<Record> {
            let mut records: Vec<Record> =
                data.into_iter().map(|data| Record::from_rdata(name.clone(), ttl, data)).collect();
            if let Some(keys) = keys.filter(|_| wants_dnssec && !records.is_empty()) {
                let rrsig = keys.sign(&records);
                records.push(rrsig);
            }
            records
        };
        // Follows CNAMEs inside the data, as an authoritative server does for its own names.
        for _ in 0..8 {
            // The parent answers DS at a delegation point; the zone itself everything else.
            let apex = if wanted == RecordType::DS && self.zones.contains_key(&name) {
                self.parent_of(&name)
            } else {
                self.zone_of(&name)
            };
            verdict = verdict.max(self.verdict(&apex));
            let keys = self.keys(&apex);
            let mut sets = self.rrsets(zone, &apex, &name);
            if wanted != RecordType::CNAME {
                if let Some(alias) = sets.remove(&RecordType::CNAME) {
                    let target = match &alias[0] {
                        RData::CNAME(target) => target.0.to_lowercase(),
                        _ => unreachable!("a CNAME RRset holds CNAMEs"),
                    };
                    reply.add_answers(rrset(&name, zone.ttl, alias, keys));
                    name = target;
                    continue;
                }
            }
            if let Some(data) = sets.remove(&wanted) {
                let ttl = if wanted == RecordType::SOA { zone.negative_ttl() } else { zone.ttl };
                reply.add_answers(rrset(&name, ttl, data, keys));
                return Some((reply, verdict));
            }
            if !reply.answers.is_empty() {
                // The end of a CNAME chain that holds nothing of the type: the chain alone.
                return Some((reply, verdict));
            }
            let names = self.names(zone, &apex);
            let exists = names.iter().any(|owner| name.zone_of(owner));
            if !exists {
                reply.metadata.response_code = ResponseCode::NXDomain;
            }
            let soa = self.rrsets(zone, &apex, &apex).remove(&RecordType::SOA).unwrap_or_default();
            reply.add_authorities(rrset(&apex, zone.negative_ttl(), soa, keys));
            if keys.is_none() || !wants_dnssec {
                return Some((reply, verdict));
            }
            let before = |target: &Name| names.range(..target.clone()).next_back().unwrap_or(&apex).clone();
            let after =
                |owner: &Name| names.range((Excluded(owner), Unbounded)).next().unwrap_or(&apex).clone();
            let mut owners = Vec::new();
            if names.contains(&name) {
                // NODATA at a name that holds other types.
                owners.push(name.clone());
            } else {
                // An empty non-terminal (the next name is below it), or NXDOMAIN.
                let covering = before(&name);
                owners.push(covering.clone());
                if !exists {
                    // And no wildcard at the closest encloser could have answered.
                    let next = after(&covering);
                    let mut encloser = name.base_name();
                    while encloser.num_labels() > apex.num_labels()
                        && !encloser.zone_of(&covering)
                        && !encloser.zone_of(&next)
                    {
                        encloser = encloser.base_name();
                    }
                    if let Ok(wildcard) = encloser.prepend_label("*") {
                        let covering = before(&wildcard);
                        if !owners.contains(&covering) {
                            owners.push(covering);
                        }
                    }
                }
            }
            for owner in owners {
                let nsec = self.nsec(zone, &apex, &names, &owner);
                let rrsig = keys.map(|keys| keys.sign(std::slice::from_ref(&nsec)));
                reply.add_authority(nsec);
                reply.add_authorities(rrsig);
            }
            return Some((reply, verdict));
        }
        Some((reply, verdict))
    }
}
