//! The LDAP edge: connect (ldap://, ldaps://, StartTLS), bind, and stream a paged search.
//!
//! It makes no decisions about users: each entry goes, as raw bytes, to the caller's
//! callback (the directory builder), so memory stays flat however large the directory is.
//! What it does guarantee is completeness: a search that ends with anything but success
//! (size limit, referral, a cut connection) is an error, never a silently short list — a
//! short list would look like removed users.

use std::sync::Arc;

use ldap3::adapters::{Adapter, PagedResults};
use ldap3::asn1::StructureTag;
use ldap3::{LdapConn, LdapConnSettings, LdapError, Scope};

use crate::config::{LdapConfig, LdapTls};
use crate::core::model::RawEntry;
use crate::error::{Error, Result};

/// What a complete search returned besides its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchDone {
    pub entries: usize,
    /// Continuation references (RFC 4511 4.5.3): parts of the tree this server did not
    /// search. Entries behind them were not seen, so they must not be taken as gone. Active
    /// LdapConnection's configuration and DNS partitions, which every search from a domain's root
    /// is referred to and which hold no users or groups, are left out.
    pub references: Vec<String>,
}

/// Whether an LDAP URL names one of AD's `CN=Configuration`, `DC=DomainDnsZones` or
/// `DC=ForestDnsZones` naming contexts.
fn is_ad_service_partition(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let dn = rest.split_once('/').map_or("", |(_, dn)| dn);
    let dn = dn
        .split('?')
        .next()
        .unwrap_or("")
        .replace("%20", " ")
        .replace("%3D", "=")
        .replace("%3d", "=");
    let first = dn.split(',').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(
        first.as_str(),
        "cn=configuration" | "dc=domaindnszones" | "dc=forestdnszones"
    )
}

/// A bound connection.
pub struct LdapConnection {
    // pub(super): the RFC 4533 and uSNChanged readers in `ldap_sync` drive the same connection
    pub(super) conn: LdapConn,
    pub(super) server: String,
    pub(super) config: LdapConfig,
}

/// rustls client config trusting exactly the CA certificates of `ca_file`.
fn tls_config_with_ca(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(ca_file).map_err(|e| Error::io(ca_file, "read ldap.ca_file", e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| Error::config(ca_file, Some("ldap.ca_file"), format!("not a valid PEM file: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Error::config(ca_file, Some("ldap.ca_file"), format!("unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::config(ca_file, Some("ldap.ca_file"), "holds no certificate"));
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::edge::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(ca_file, Some("ldap.ca_file"), format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Turn an ldap3 error into one line an admin can act on.
pub(super) fn describe(e: &LdapError) -> String {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") || lower.contains("invalid peer") {
        format!(
            "TLS certificate not accepted ({text}); set ldap.ca_file to the CA that signed the server's certificate"
        )
    } else if matches!(e, LdapError::Timeout { .. }) {
        "no answer in time (ldap.timeout_secs)".to_owned()
    } else if matches!(e, LdapError::Io { .. }) {
        format!("connection failed: {text}")
    } else {
        text
    }
}

impl LdapConnection {
    /// Connect and bind as `bind_dn` (anonymous when empty).
    pub fn connect(config: &LdapConfig) -> Result<LdapConnection> {
        let server = config.uri.clone();
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(config.timeout)
            .set_starttls(config.tls == LdapTls::StartTls);
        if config.tls != LdapTls::None {
            // also the process default, which ldap3 uses for the config it builds itself
            crate::edge::tls::provider();
            if config.allow_self_signed {
                settings = settings.set_no_tls_verify(true);
            } else if let Some(ca_file) = &config.ca_file {
                settings = settings.set_config(tls_config_with_ca(ca_file)?);
            }
        }
        let mut conn = LdapConn::with_settings(settings, &config.uri).map_err(|e| Error::Ldap {
            server: server.clone(),
            message: describe(&e),
        })?;
        let result = conn
            .with_timeout(config.timeout)
            .simple_bind(&config.bind_dn, config.bind_pw.expose())
            .map_err(|e| Error::Ldap {
                server: server.clone(),
                message: format!("bind failed: {}", describe(&e)),
            })?;
        if result.rc != 0 {
            let hint = if result.rc == 49 {
                " (wrong bind_dn or bind_pw)"
            } else {
                ""
            };
            return Err(Error::Ldap {
                server,
                message: format!(
                    "bind as `{}` refused: rc={} {}{hint}",
                    config.bind_dn, result.rc, result.text
                ),
            });
        }
        Ok(LdapConnection {
            conn,
            server,
            config: config.clone(),
        })
    }

    /// Stream every entry under `base` matching `filter` to `each`, page by page.
    /// Returns the number of entries and the continuation references met on the way (the
    /// caller decides what an incomplete view means). Any other incomplete result is an error.
    pub fn search(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[&str],
        mut each: impl FnMut(RawEntry),
    ) -> Result<SearchDone> {
        let mut adapters: Vec<Box<dyn Adapter<'_, &str, Vec<&str>>>> = Vec::new();
        if self.config.page_size > 0 {
            adapters.push(Box::new(PagedResults::new(self.config.page_size as i32)));
        }
        let server = self.server.clone();
        let fail = |what: &str, e: LdapError| Error::Ldap {
            server: server.clone(),
            message: format!("{what} `{filter}` under `{base}` failed: {}", describe(&e)),
        };
        let attrs: Vec<&str> = attrs.to_vec();
        let mut stream = self
            .conn
            .with_timeout(self.config.timeout)
            .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs)
            .map_err(|e| fail("search", e))?;
        let mut count = 0usize;
        let mut references = Vec::new();
        loop {
            match stream.next() {
                Ok(Some(entry)) if entry.is_intermediate() => {}
                Ok(Some(entry)) if entry.is_ref() => references.extend(
                    parse_reference(entry.0)
                        .into_iter()
                        .filter(|url| !is_ad_service_partition(url)),
                ),
                Ok(Some(entry)) => {
                    let raw = parse_entry(entry.0).ok_or_else(|| Error::Ldap {
                        server: self.server.clone(),
                        message: format!("search under `{base}`: the server sent a malformed entry"),
                    })?;
                    count += 1;
                    each(raw);
                }
                Ok(None) => break,
                Err(e) => return Err(fail("search", e)),
            }
        }
        let result = stream.result();
        match result.rc {
            0 => Ok(SearchDone {
                entries: count,
                references,
            }),
            4 => Err(Error::Ldap {
                server: self.server.clone(),
                message: format!(
                    "search under `{base}` hit the server's size limit after {count} entries (rc=4); \
                     set ldap.page_size (paging is off when 0) or raise the limit for the bind account"
                ),
            }),
            3 => Err(Error::Ldap {
                server: self.server.clone(),
                message: format!("search under `{base}` hit the server's time limit after {count} entries (rc=3)"),
            }),
            10 => Err(Error::Ldap {
                server: self.server.clone(),
                message: format!(
                    "search base `{base}` is a referral to {}; point user_search_base at the server that holds it",
                    result.refs.join(", ")
                ),
            }),
            32 => Err(Error::Ldap {
                server: self.server.clone(),
                message: format!("search base `{base}` does not exist (rc=32)"),
            }),
            rc => Err(Error::Ldap {
                server: self.server.clone(),
                message: format!(
                    "search under `{base}` ended with rc={rc} {} after {count} entries",
                    result.text
                ),
            }),
        }
    }

    /// The entry at `dn` itself (a base-scope search), or `None` when it does not exist.
    /// `dn` may be empty for the root DSE. Operational attributes must be named in `attrs`.
    pub fn read_entry(&mut self, dn: &str, attrs: &[&str]) -> Result<Option<RawEntry>> {
        self.read_entry_matching(dn, "(objectClass=*)", attrs)
    }

    /// The entry at `dn` if it matches `filter` (`None` when it does not, or does not exist).
    pub fn read_entry_matching(&mut self, dn: &str, filter: &str, attrs: &[&str]) -> Result<Option<RawEntry>> {
        let server = self.server.clone();
        let fail = |message: String| Error::Ldap {
            server: server.clone(),
            message,
        };
        let mut stream = self
            .conn
            .with_timeout(self.config.timeout)
            .streaming_search(dn, Scope::Base, filter, attrs.to_vec())
            .map_err(|e| fail(format!("reading `{dn}` failed: {}", describe(&e))))?;
        let mut found = None;
        loop {
            match stream.next() {
                Ok(Some(entry)) if entry.is_intermediate() || entry.is_ref() => {}
                Ok(Some(entry)) => {
                    let raw = parse_entry(entry.0)
                        .ok_or_else(|| fail(format!("reading `{dn}`: the server sent a malformed entry")))?;
                    found = Some(raw);
                }
                Ok(None) => break,
                Err(e) => return Err(fail(format!("reading `{dn}` failed: {}", describe(&e)))),
            }
        }
        let result = stream.result();
        match result.rc {
            0 => Ok(found),
            32 => Ok(None),
            rc => Err(fail(format!("reading `{dn}` ended with rc={rc} {}", result.text))),
        }
    }

    /// Close politely; errors here do not matter any more.
    pub fn close(mut self) {
        let _ = self.conn.unbind();
    }
}

/// The URLs of a SearchResultReference ([APPLICATION 19] SEQUENCE OF URI). A malformed one
/// still counts as a reference (its URL unreadable), never as nothing.
fn parse_reference(reference: StructureTag) -> Vec<String> {
    let urls: Vec<String> = reference
        .expect_constructed()
        .unwrap_or_default()
        .into_iter()
        .filter_map(StructureTag::expect_primitive)
        .map(|url| String::from_utf8_lossy(&url).into_owned())
        .collect();
    if urls.is_empty() {
        vec!["(a reference without a readable URL)".to_owned()]
    } else {
        urls
    }
}

/// A SearchResultEntry ([APPLICATION 4] { objectName, attributes }) as raw bytes, without
/// panicking on a malformed one (ldap3's `SearchEntry::construct` would).
pub(super) fn parse_entry(entry: StructureTag) -> Option<RawEntry> {
    let mut parts = entry.match_id(4)?.expect_constructed()?.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let mut raw = RawEntry {
        dn,
        ..RawEntry::default()
    };
    // Every entry passes here: names are lowercased and cut in place, and values move into
    // the map as they are (no copies; this runs 100k times in a large pass).
    for attr in parts.next()?.expect_constructed()? {
        let mut pieces = attr.expect_constructed()?.into_iter();
        let mut name = String::from_utf8(pieces.next()?.expect_primitive()?).ok()?;
        name.make_ascii_lowercase();
        // `objectGUID;binary` and similar options name the same attribute; a `;range=`
        // option means the server sent only part of the values (AD, > 1500 members).
        if let Some(cut) = name.find(';') {
            if name[cut..].split(';').any(|o| o.starts_with("range=")) {
                raw.ranged.push(name[..cut].to_owned());
            }
            name.truncate(cut);
        }
        let values: Vec<Vec<u8>> = pieces
            .next()?
            .expect_constructed()?
            .into_iter()
            .map(StructureTag::expect_primitive)
            .collect::<Option<_>>()?;
        match raw.attrs.entry(name) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(values);
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => slot.get_mut().extend(values),
        }
    }
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::{PL, TagClass};

    fn primitive(bytes: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id: 4,
            payload: PL::P(bytes.to_vec()),
        }
    }

    fn constructed(id: u64, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::C(inner),
        }
    }

    /// A SearchResultEntry as the server sends it: DN, then (name, values) pairs.
    fn entry(dn: &str, attrs: &[(&str, &[&[u8]])]) -> StructureTag {
        let attrs = attrs
            .iter()
            .map(|(name, values)| {
                let values = values.iter().map(|v| primitive(v)).collect();
                constructed(16, vec![primitive(name.as_bytes()), constructed(17, values)])
            })
            .collect();
        let mut tag = constructed(4, vec![primitive(dn.as_bytes()), constructed(16, attrs)]);
        tag.class = TagClass::Application;
        tag
    }

    #[test]
    fn attribute_names_are_lowercased_and_options_cut_with_ranges_noted() {
        let raw = parse_entry(entry(
            "CN=Group,DC=example,DC=test",
            &[
                ("Mail", &[b"g@example.test"]),
                ("objectGUID;binary", &[b"\x01\x02"]),
                ("member;range=0-1499", &[b"CN=a", b"CN=b"]),
                ("MEMBER", &[b"CN=c"]),
            ],
        ))
        .expect("a well-formed entry");
        assert_eq!(raw.dn, "CN=Group,DC=example,DC=test");
        assert_eq!(raw.attrs["mail"], [b"g@example.test".to_vec()]);
        assert_eq!(raw.attrs["objectguid"], [vec![1, 2]]);
        assert_eq!(
            raw.attrs["member"],
            [b"CN=a".to_vec(), b"CN=b".to_vec(), b"CN=c".to_vec()]
        );
        assert_eq!(raw.ranged, ["member"]);
        assert_eq!(raw.attrs.len(), 3);
    }

    #[test]
    fn references_give_their_urls_and_a_malformed_one_still_counts() {
        let mut reference = constructed(19, vec![primitive(b"ldap://other.example/ou=x,dc=example,dc=org")]);
        reference.class = TagClass::Application;
        assert_eq!(
            parse_reference(reference),
            ["ldap://other.example/ou=x,dc=example,dc=org"]
        );
        assert_eq!(parse_reference(primitive(b"junk")).len(), 1);
    }

    #[test]
    fn ad_service_partitions_are_not_data() {
        let urls = [
            "ldaps://example.test/CN=Configuration,DC=example,DC=test",
            "ldap://example.test/DC=DomainDnsZones,DC=example,DC=test",
            "ldap://example.test/DC=ForestDnsZones,DC=example,DC=test??sub",
            "ldap://child.example.test/DC=child,DC=example,DC=test",
            "ldap://127.0.0.1:1/ou=remote,dc=example,dc=org",
            "not a url",
        ];
        let data: Vec<&str> = urls.into_iter().filter(|url| !is_ad_service_partition(url)).collect();
        assert_eq!(
            data,
            [
                "ldap://child.example.test/DC=child,DC=example,DC=test",
                "ldap://127.0.0.1:1/ou=remote,dc=example,dc=org",
                "not a url"
            ]
        );
    }

    #[test]
    fn a_malformed_entry_is_refused() {
        let mut wrong = entry("cn=x", &[("mail", &[b"x@example.org"])]);
        wrong.id = 5;
        assert!(parse_entry(wrong).is_none());
    }
}
