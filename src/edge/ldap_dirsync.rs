//! Active Directory's DirSync control (LDAP_SERVER_DIRSYNC_OID, MS-ADTS 3.1.1.3.4.1.3): the
//! objects of a naming context changed since a cookie, each with the attributes asked for
//! that changed (plus `objectGUID`), deleted objects included.
//!
//! ldap3 has no DirSync, so the request is encoded here and the response parsed by hand,
//! panic-free like the RFC 4533 parsers in `ldap_sync` (this binary aborts on panic):
//! - request value `SEQUENCE { flags INTEGER, maxBytes INTEGER, cookie OCTET STRING }`,
//!   always critical;
//! - response value `SEQUENCE { moreResults INTEGER, unused INTEGER, cookie OCTET STRING }`
//!   on the SearchResultDone; while moreResults is non-zero the search is sent again with
//!   the new cookie.
//!
//! What Samba 4.17 (Debian 12) does, observed against the test DC (tests/support/src/samba.rs)
//! with `ldapsearch -E '!dirSync=…'` and the tests in tests/integration/active_directory.rs:
//! - The control is listed in the root DSE's supportedControl. A base that is not a naming
//!   context's root is refused with rc=50 (observed; with flag 0x1, rc=53 by Samba's source,
//!   source4/dsdb/samdb/ldb_modules/dirsync.c, which also refuses a non-critical control).
//! - Flags 0 (what this module sends) need the "Replicating Directory Changes" right
//!   (DS-Replication-Get-Changes) on the naming context; without it rc=50 "insufficient
//!   access rights". Domain admins have it.
//! - Flag LDAP_DIRSYNC_OBJECT_SECURITY (0x1) works for a plain user, but then a deletion is
//!   **not reported at all** (a user deleted between two cookies did not come back), so it is
//!   never used here: a change tracker that misses deletions would keep a leaver's mailbox.
//!   ANCESTORS_FIRST_ORDER (0x800) and INCREMENTAL_VALUES (0x80000000, for linked values such
//!   as `member`) change nothing for users and are not sent.
//! - A changed object comes with only the changed attributes among those asked for, plus
//!   `objectGUID` and `instanceType`; an object none of whose asked-for attributes changed is
//!   not sent (with attributes `1.1`, nothing is sent). A removed attribute (e.g. `mail`
//!   deleted) still brings the entry, without that attribute. A move or rename comes only if
//!   `name` is asked for.
//! - A deleted object comes as its tombstone: DN `CN=…\0ADEL:guid,CN=Deleted Objects,…`,
//!   `isDeleted: TRUE`, its `objectGUID`, `name`. The filter is applied to the tombstone (AD
//!   strips `mail` and `objectCategory` from it), so the caller asks with `(objectClass=*)`.
//! - Samba ignores maxBytes and always answers moreResults 0. Its cookie is 108 bytes, laid
//!   out as MS-ADTS describes: `"MSDS"`, version 3, a FILETIME, 8 reserved bytes, the size of
//!   the up-to-dateness vector (40), the USN vector (highest object and property USN at
//!   offsets 28 and 44: the DC's highestCommittedUSN), the DC's invocationId at offset 52,
//!   then the vector. [`cookie_info`] reads the USN and the invocationId, which the caller
//!   compares with the DC's own: another DC's cookie, or one ahead of the DC (a restored
//!   backup), is a full pass. Samba answers a cookie it cannot unmarshal with rc=12; one of
//!   another invocationId it takes as "from the start" (everything again).
//! - With no cookie and a filter that matches nothing, the answer is no entry and a cookie
//!   at the DC's highestCommittedUSN: [`LdapConnection::dirsync_cookie`] takes the current
//!   cookie that way, for the cost of one empty search.
//!
//! Windows AD itself was not available to test; MS-ADTS says it may answer moreResults
//! non-zero (the loop below follows it) and uses its own default when maxBytes is 0.

use ldap3::asn1::Types;
use ldap3::controls::RawControl;
use ldap3::{Scope, SearchOptions};

use super::ldap::{LdapConnection, describe, parse_entry};
use super::ldap_sync::{MATCH_NOTHING, constructed, is_universal, parse_whole, primitive};
use crate::core::model::RawEntry;
use crate::error::{Error, Result};

/// The DirSync control.
pub const DIRSYNC_OID: &str = "1.2.840.113556.1.4.841";

/// Rounds of one DirSync read at most (each returns moreResults or not): a server that keeps
/// saying "more" past this is an error, not a hang.
const MAX_ROUNDS: usize = 100_000;

/// What a DirSync cookie says about where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieInfo {
    /// The invocationId of the DC that made it.
    pub invocation_id: [u8; 16],
    /// The highest USN it covers.
    pub usn: u64,
}

/// The DC's identity and position in a cookie laid out as MS-ADTS's `Cookie` (see the module
/// header); `None` when it is not one.
pub fn cookie_info(cookie: &[u8]) -> Option<CookieInfo> {
    let u32_at = |at: usize| -> Option<u32> { Some(u32::from_le_bytes(cookie.get(at..at + 4)?.try_into().ok()?)) };
    let u64_at = |at: usize| -> Option<u64> { Some(u64::from_le_bytes(cookie.get(at..at + 8)?.try_into().ok()?)) };
    if cookie.get(..4)? != b"MSDS" {
        return None;
    }
    let vector = u32_at(24)? as usize;
    if cookie.len().checked_sub(68)? != vector {
        return None;
    }
    let invocation_id: [u8; 16] = cookie.get(52..68)?.try_into().ok()?;
    Some(CookieInfo {
        invocation_id,
        usn: u64_at(28)?.max(u64_at(44)?),
    })
}

/// The attribute names an LDAP filter tests (`(&(objectClass=user)(!(mail=x)))` → objectClass,
/// mail), without options; an extensible match's DN-only form has none.
pub fn filter_attributes(filter: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for part in filter.split('(').skip(1) {
        let end = part.find(['=', '~', '<', '>', ':', ')']).unwrap_or(part.len());
        let name = part[..end].split(';').next().unwrap_or("").trim();
        if name.is_empty() || name.starts_with(['&', '|', '!']) {
            continue;
        }
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.to_owned());
        }
    }
    names
}

/// The domain naming context `base` lies in: its trailing `DC=` components (DirSync only
/// searches from a naming context's root; users live in the domain's).
pub fn domain_root(base: &str) -> &str {
    let mut start = base.len();
    for (at, _) in base.rmatch_indices(',').chain([(0, "")]) {
        let rdn = base[at..start].trim_start_matches(',').trim_start();
        if !rdn.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("dc=")) {
            break;
        }
        start = at;
    }
    base[start..].trim_start_matches(',').trim_start()
}

/// BER INTEGER of a non-negative value, shortest form.
fn ber_integer(value: u32, out: &mut Vec<u8>) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take(3).take_while(|b| **b == 0).count();
    let mut content = bytes[skip..].to_vec();
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    ber_tlv(0x02, &content, out);
}

fn ber_tlv(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let len = (n as u32).to_be_bytes();
        let skip = len.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&len[skip..]);
    }
    out.extend_from_slice(content);
}

/// The request control's value.
fn encode_request(flags: u32, max_bytes: u32, cookie: &[u8]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(cookie.len() + 16);
    ber_integer(flags, &mut inner);
    ber_integer(max_bytes, &mut inner);
    ber_tlv(0x04, cookie, &mut inner);
    let mut out = Vec::with_capacity(inner.len() + 6);
    ber_tlv(0x30, &inner, &mut out);
    out
}

/// The response control's value.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    more: bool,
    cookie: Vec<u8>,
}

fn parse_response(value: Option<&[u8]>) -> Result<Response, String> {
    const WHAT: &str = "DirSync response control";
    let value = value.ok_or_else(|| format!("malformed {WHAT}: no value"))?;
    let tag = parse_whole(value, WHAT)?;
    if !is_universal(&tag, Types::Sequence) {
        return Err(format!("malformed {WHAT}: not a SEQUENCE"));
    }
    let mut parts = constructed(tag, WHAT)?.into_iter();
    let mut integer = |name: &str| -> Result<bool, String> {
        let t = parts
            .next()
            .filter(|t| is_universal(t, Types::Integer))
            .ok_or_else(|| format!("malformed {WHAT}: no {name} INTEGER"))?;
        let bytes = primitive(t, WHAT)?;
        if bytes.is_empty() || bytes.len() > 8 {
            return Err(format!("malformed {WHAT}: an INTEGER of {} bytes", bytes.len()));
        }
        Ok(bytes.iter().any(|b| *b != 0))
    };
    let more = integer("moreResults")?;
    integer("unused")?;
    let cookie = parts
        .next()
        .filter(|t| is_universal(t, Types::OctetString))
        .ok_or_else(|| format!("malformed {WHAT}: no cookie OCTET STRING"))?;
    let cookie = primitive(cookie, WHAT)?;
    if parts.next().is_some() {
        return Err(format!("malformed {WHAT}: unexpected elements after the cookie"));
    }
    Ok(Response { more, cookie })
}

impl LdapConnection {
    /// The objects under the naming context `root` that match `filter` and of which an
    /// attribute in `attrs` changed since `cookie` (empty: since the start), streamed to
    /// `each` with only those attributes; rounds are repeated while the server says there is
    /// more. `Ok(Ok(cookie))`: the cookie to store; `Ok(Err(why))`: the server refused
    /// (rc=50 no replication right, rc=12 control or cookie not accepted, rc=53, rc=1), and
    /// what was streamed must be dropped.
    pub fn dirsync(
        &mut self,
        root: &str,
        filter: &str,
        attrs: &[&str],
        cookie: &[u8],
        each: &mut dyn FnMut(RawEntry),
    ) -> Result<std::result::Result<Vec<u8>, String>> {
        let server = self.server.clone();
        let fail = |message: String| Error::Ldap {
            server: server.clone(),
            message: format!("DirSync `{filter}` under `{root}`: {message}"),
        };
        let mut cookie = cookie.to_vec();
        for _ in 0..MAX_ROUNDS {
            let control = RawControl {
                ctype: DIRSYNC_OID.to_owned(),
                crit: true,
                val: Some(encode_request(0, 0, &cookie)),
            };
            let mut stream = self
                .conn
                .with_controls(control)
                .with_timeout(self.config.timeout)
                .streaming_search(root, Scope::Subtree, filter, attrs.to_vec())
                .map_err(|e| fail(format!("failed: {}", describe(&e))))?;
            loop {
                match stream.next() {
                    // references to the configuration and DNS partitions hold no users
                    Ok(Some(entry)) if entry.is_intermediate() || entry.is_ref() => {}
                    Ok(Some(entry)) => {
                        each(parse_entry(entry.0).ok_or_else(|| fail("a malformed entry".to_owned()))?);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(fail(format!("failed: {}", describe(&e)))),
                }
            }
            let result = stream.result();
            match result.rc {
                0 => {}
                1 | 12 | 50 | 53 => return Ok(Err(format!("rc={} {}", result.rc, result.text.trim()))),
                rc => return Err(fail(format!("ended with rc={rc} {}", result.text))),
            }
            let response = result
                .ctrls
                .iter()
                .find(|c| c.1.ctype == DIRSYNC_OID)
                .ok_or_else(|| fail("the result came without a DirSync control".to_owned()))?;
            let response = parse_response(response.1.val.as_deref()).map_err(fail)?;
            if !response.more {
                return Ok(Ok(response.cookie));
            }
            if response.cookie == cookie {
                return Err(fail(
                    "the server said there is more but sent the same cookie".to_owned(),
                ));
            }
            cookie = response.cookie;
        }
        Err(fail(format!("still more after {MAX_ROUNDS} rounds")))
    }

    /// The DC's current DirSync cookie, without reading the directory: a DirSync from no
    /// cookie with a filter that matches nothing (see the module header). Take it *before*
    /// the full pass it is meant to follow.
    pub fn dirsync_cookie(&mut self, root: &str) -> Result<std::result::Result<Vec<u8>, String>> {
        let mut entries = 0usize;
        let cookie = self.dirsync(root, MATCH_NOTHING, &["objectGUID"], &[], &mut |_| entries += 1)?;
        if entries > 0 {
            return Err(Error::Ldap {
                server: self.server.clone(),
                message: "DirSync sent entries for a filter that matches nothing".into(),
            });
        }
        Ok(cookie)
    }

    /// Whether any entry under `base` matches `filter` (a search for one entry).
    pub fn has_entry(&mut self, base: &str, filter: &str) -> Result<bool> {
        let server = self.server.clone();
        let fail = |message: String| Error::Ldap {
            server: server.clone(),
            message: format!("search `{filter}` under `{base}`: {message}"),
        };
        let mut stream = self
            .conn
            .with_search_options(SearchOptions::new().sizelimit(1))
            .with_timeout(self.config.timeout)
            .streaming_search(base, Scope::Subtree, filter, vec!["1.1"])
            .map_err(|e| fail(format!("failed: {}", describe(&e))))?;
        let mut found = false;
        loop {
            match stream.next() {
                Ok(Some(entry)) if entry.is_intermediate() || entry.is_ref() => {}
                Ok(Some(_)) => found = true,
                Ok(None) => break,
                Err(e) => return Err(fail(format!("failed: {}", describe(&e)))),
            }
        }
        let result = stream.result();
        match result.rc {
            0 | 4 => Ok(found),
            rc => Err(fail(format!("ended with rc={rc} {}", result.text))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        ber_tlv(tag, content, &mut out);
        out
    }

    /// A cookie as Samba 4.17 sent it (the test DC, 108 bytes).
    fn samba_cookie() -> Vec<u8> {
        let mut c = b"MSDS".to_vec();
        c.extend(3u32.to_le_bytes());
        c.extend(0x01dd_8438_0fda_9080u64.to_le_bytes());
        c.extend([0; 8]);
        c.extend(40u32.to_le_bytes());
        c.extend(4012u64.to_le_bytes());
        c.extend(0u64.to_le_bytes());
        c.extend(4012u64.to_le_bytes());
        c.extend([0xf8; 16]);
        c.extend(1u32.to_le_bytes());
        c.extend([0; 4]);
        c.extend(1u32.to_le_bytes());
        c.extend([0; 4]);
        c.extend([0xf8; 16]);
        c.extend(4012u64.to_le_bytes());
        c
    }

    #[test]
    fn the_request_is_encoded_as_ms_adts_says() {
        assert_eq!(
            encode_request(0, 0, b""),
            [0x30, 0x08, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x04, 0x00]
        );
        assert_eq!(
            encode_request(0x8000_0801, 0x10_0000, b"ck"),
            [
                0x30, 0x10, 0x02, 0x05, 0x00, 0x80, 0x00, 0x08, 0x01, 0x02, 0x03, 0x10, 0x00, 0x00, 0x04, 0x02, b'c',
                b'k'
            ]
        );
        // a long cookie takes a long length, and the whole parses back as BER
        let cookie = vec![7u8; 300];
        let value = encode_request(0, 0, &cookie);
        assert_eq!(&value[..4], [0x30, 0x82, 0x01, 0x36]);
        let tag = parse_whole(&value, "t").unwrap();
        let parts = constructed(tag, "t").unwrap();
        assert_eq!(primitive(parts[2].clone(), "t").unwrap(), cookie);
    }

    #[test]
    fn the_response_gives_more_and_the_cookie() {
        let value =
            |more: &[u8], cookie: &[u8]| tlv(0x30, &[tlv(0x02, more), tlv(0x02, &[0]), tlv(0x04, cookie)].concat());
        assert_eq!(
            parse_response(Some(&value(&[0], b"c1"))),
            Ok(Response {
                more: false,
                cookie: b"c1".to_vec()
            })
        );
        assert!(parse_response(Some(&value(&[1], b""))).unwrap().more);
        assert!(parse_response(Some(&value(&[0, 0, 1, 0], b"x"))).unwrap().more);
        // as Samba sent it: 30 74 02 01 00 02 01 00 04 6c MSDS…
        let samba = value(&[0], &samba_cookie());
        assert_eq!(
            &samba[..10],
            [0x30, 0x74, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x04, 0x6c]
        );
        assert_eq!(parse_response(Some(&samba)).unwrap().cookie, samba_cookie());
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        let good = tlv(0x30, &[tlv(0x02, &[1]), tlv(0x02, &[0]), tlv(0x04, b"cookie")].concat());
        for cut in 0..good.len() {
            assert!(parse_response(Some(&good[..cut])).is_err(), "cut at {cut}");
        }
        for (value, expected) in [
            (tlv(0x31, &[]), "not a SEQUENCE"),
            (tlv(0x30, &[]), "no moreResults"),
            (tlv(0x30, &tlv(0x02, &[0])), "no unused"),
            (tlv(0x30, &[tlv(0x02, &[0]), tlv(0x02, &[0])].concat()), "no cookie"),
            (
                tlv(0x30, &[tlv(0x02, &[]), tlv(0x02, &[0]), tlv(0x04, b"")].concat()),
                "INTEGER of 0 bytes",
            ),
            (
                tlv(0x30, &[tlv(0x02, &[1; 9]), tlv(0x02, &[0]), tlv(0x04, b"")].concat()),
                "INTEGER of 9 bytes",
            ),
            (
                tlv(0x30, &[tlv(0x01, &[0xff]), tlv(0x02, &[0]), tlv(0x04, b"")].concat()),
                "no moreResults",
            ),
            (
                tlv(0x30, &[tlv(0x02, &[0]), tlv(0x02, &[0]), tlv(0x24, &[])].concat()),
                "a constructed value",
            ),
            (
                tlv(
                    0x30,
                    &[tlv(0x02, &[0]), tlv(0x02, &[0]), tlv(0x04, b""), tlv(0x04, b"")].concat(),
                ),
                "unexpected elements",
            ),
            ([good.clone(), vec![0]].concat(), "bytes after"),
            (vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff], "not valid BER"),
        ] {
            let err = parse_response(Some(&value)).unwrap_err();
            assert!(err.contains(expected), "{value:02x?}: {err}");
            assert!(err.starts_with("malformed DirSync response control"), "{err}");
        }
        assert!(parse_response(None).unwrap_err().contains("no value"));
    }

    #[test]
    fn cookies_tell_their_dc_and_usn_and_anything_else_is_unreadable() {
        let cookie = samba_cookie();
        assert_eq!(
            cookie_info(&cookie),
            Some(CookieInfo {
                invocation_id: [0xf8; 16],
                usn: 4012
            })
        );
        // every truncation, a wrong signature, a vector size that does not fit
        for cut in 0..cookie.len() {
            assert_eq!(cookie_info(&cookie[..cut]), None, "cut at {cut}");
        }
        let mut wrong = cookie.clone();
        wrong[0] = b'X';
        assert_eq!(cookie_info(&wrong), None);
        let mut longer = cookie.clone();
        longer.push(0);
        assert_eq!(cookie_info(&longer), None);
        assert_eq!(cookie_info(b"garbage"), None);
        // the larger of the two USNs counts
        let mut newer = cookie;
        newer[44..52].copy_from_slice(&5000u64.to_le_bytes());
        assert_eq!(cookie_info(&newer).map(|c| c.usn), Some(5000));
    }

    #[test]
    fn the_domain_root_is_the_trailing_dc_components() {
        assert_eq!(domain_root("OU=People, DC=example,DC=test"), "DC=example,DC=test");
        assert_eq!(domain_root("dc=example,dc=test"), "dc=example,dc=test");
        assert_eq!(domain_root("CN=Users,DC=example,DC=test"), "DC=example,DC=test");
        assert_eq!(domain_root("DC=x,OU=a,DC=example"), "DC=example");
        assert_eq!(domain_root("OU=a"), "");
        assert_eq!(domain_root(""), "");
    }

    #[test]
    fn filter_attributes_are_found_in_every_kind_of_item() {
        assert_eq!(
            filter_attributes("(&(objectCategory=person)(objectClass=user)(mail=*))"),
            ["objectCategory", "objectClass", "mail"]
        );
        assert_eq!(
            filter_attributes(
                "(&(!(userAccountControl:1.2.840.113556.1.4.803:=2))(cn~=x)(uSNChanged>=5)(age<=3)(Mail;binary=x)(MAIL=y))"
            ),
            ["userAccountControl", "cn", "uSNChanged", "age", "Mail"]
        );
        assert_eq!(filter_attributes("(:dn:2.4.6.8.10:=Dino)"), Vec::<String>::new());
        assert_eq!(filter_attributes("mail=*"), Vec::<String>::new());
        assert_eq!(filter_attributes("(|(a=\\28x\\29)(b=1))"), ["a", "b"]);
    }
}
