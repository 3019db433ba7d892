//! Active Directory users and groups as plain data, and the LDIF that creates them in Samba.
//!
//! Tests describe the people and groups they need as data ([`AdUser`], [`AdGroup`]). This module
//! turns that data into LDIF for `ldapadd` against the running DC, so the same text serves the
//! initial bulk load and additions while the DC runs. It also holds the encodings AD needs and
//! a test must not get wrong by hand: `unicodePwd` (a quoted UTF-16LE string), LDIF safe
//! strings, and the canonical text form of a binary `objectGUID`.

use std::collections::BTreeSet;
use std::io;

use crate::encoding::{push_attr, push_base64};
use crate::slapd::{capitalized, escape_dn_value};

use super::{BASE_DN, REALM, USERS_DN};

/// `userAccountControl` of an enabled normal account (`NORMAL_ACCOUNT`).
pub const UAC_NORMAL: u32 = 0x200;
/// The `ACCOUNTDISABLE` bit of `userAccountControl`.
pub const UAC_DISABLED: u32 = 0x2;

/// One AD user, stored as `CN=<sam>,CN=Users,DC=example,DC=test` (or `CN=<sam>,OU=<ou>,…`).
///
/// The RDN is the `sAMAccountName`, not the display name, so DNs are predictable; the sync must
/// not derive anything from it anyway. `userPrincipalName` is always `<sam>@example.test`, so a
/// test can bind as `<sam>@example.test` once the user has a password. `None`, and an empty
/// string, leave an attribute out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdUser {
    /// `sAMAccountName` and the RDN value (`CN=<sam>`). At most 20 characters in AD.
    pub sam: String,
    /// `givenName`.
    pub given_name: String,
    /// `sn`.
    pub sn: String,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `mail`.
    pub mail: Option<String>,
    /// `proxyAddresses` values as stored, e.g. `SMTP:primary@x`, `smtp:alias@x`, `X500:/o=…`.
    pub proxy_addresses: Vec<String>,
    /// `userAccountControl` 514 (`NORMAL_ACCOUNT | ACCOUNTDISABLE`) instead of 512.
    pub disabled: bool,
    /// Clear-text password, set as `unicodePwd` (≈ 23 ms per user: set it only on users a test
    /// binds as). It must meet the domain's default policy: at least 7 characters, 3 of the 4
    /// classes (upper, lower, digit, symbol), and not contain the `sAMAccountName`.
    pub password: Option<String>,
    /// An OU directly below the base DN (`OU=<ou>,DC=example,DC=test`), created when missing.
    /// `None` means AD's default container `CN=Users`.
    pub ou: Option<String>,
}

impl AdUser {
    /// A complete, enabled user without a password: given name = `sam` with a capital first
    /// letter, sn `Tester`, display name `"<Given> Tester"`, mail `sam@domain`, and one
    /// `proxyAddresses` value `SMTP:sam@domain` (the primary address equal to `mail`, as
    /// Exchange writes it).
    pub fn new(sam: &str, domain: &str) -> AdUser {
        let given = capitalized(sam);
        let mail = format!("{sam}@{domain}");
        AdUser {
            sam: sam.to_string(),
            display_name: Some(format!("{given} Tester")),
            given_name: given,
            sn: "Tester".to_string(),
            proxy_addresses: vec![format!("SMTP:{mail}")],
            mail: Some(mail),
            disabled: false,
            password: None,
            ou: None,
        }
    }

    /// The DN this user is created at.
    pub fn dn(&self) -> String {
        format!("CN={},{}", escape_dn_value(&self.sam), container_dn(self.ou.as_deref()))
    }

    /// `<sam>@example.test`.
    pub fn upn(&self) -> String {
        format!("{}@{REALM}", self.sam)
    }

    /// The value written to `userAccountControl`: 512, or 514 when disabled.
    pub fn user_account_control(&self) -> u32 {
        if self.disabled {
            UAC_NORMAL | UAC_DISABLED
        } else {
            UAC_NORMAL
        }
    }

    /// The entry as an LDIF add record (no `changetype`), ending with a blank line.
    pub fn to_ldif(&self) -> String {
        let mut out = String::new();
        push_attr(&mut out, "dn", &self.dn());
        push_attr(&mut out, "objectClass", "user");
        push_attr(&mut out, "sAMAccountName", &self.sam);
        push_attr(&mut out, "userPrincipalName", &self.upn());
        let optional = [
            ("givenName", Some(&self.given_name)),
            ("sn", Some(&self.sn)),
            ("displayName", self.display_name.as_ref()),
            ("mail", self.mail.as_ref()),
        ];
        for (name, value) in optional {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                push_attr(&mut out, name, v);
            }
        }
        for p in self.proxy_addresses.iter().filter(|p| !p.is_empty()) {
            push_attr(&mut out, "proxyAddresses", p);
        }
        push_attr(&mut out, "userAccountControl", &self.user_account_control().to_string());
        if let Some(pw) = &self.password {
            push_base64(&mut out, "unicodePwd", &unicode_pwd(pw));
        }
        out.push('\n');
        out
    }
}

/// One AD group (`objectClass: group`, a global security group), stored as
/// `CN=<name>,CN=Users,DC=example,DC=test` with `sAMAccountName` = `name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdGroup {
    /// `sAMAccountName` and the RDN value.
    pub name: String,
    /// `mail`: a group with an address is what the sync turns into a distribution alias.
    pub mail: Option<String>,
    /// `sAMAccountName`s of the direct members: users or other groups (nesting is allowed, in
    /// any order). Names not in the same `SambaOptions` are looked up on the server, so
    /// built-in accounts such as `Administrator` work too.
    pub members: Vec<String>,
}

impl AdGroup {
    /// A group without mail and members.
    pub fn new(name: &str) -> AdGroup {
        AdGroup {
            name: name.to_string(),
            ..AdGroup::default()
        }
    }

    /// The DN this group is created at.
    pub fn dn(&self) -> String {
        format!("CN={},{USERS_DN}", escape_dn_value(&self.name))
    }
}

/// `n` users `user00001` … in mail domain `domain`, each built by [`AdUser::new`]. The same `n`
/// always gives the same users.
pub fn generate_ad_users(n: usize, domain: &str) -> Vec<AdUser> {
    (1..=n).map(|i| AdUser::new(&format!("user{i:05}"), domain)).collect()
}

/// `CN=Users,DC=…` for `None`, else `OU=<ou>,DC=…`.
pub(super) fn container_dn(ou: Option<&str>) -> String {
    match ou {
        None => USERS_DN.to_string(),
        Some(ou) => ou_dn(ou),
    }
}

/// `OU=<ou>,DC=example,DC=test`.
pub(super) fn ou_dn(ou: &str) -> String {
    format!("OU={},{BASE_DN}", escape_dn_value(ou))
}

/// LDIF that creates the OUs the users need (except those in `existing`), the users, and the
/// groups. Groups are created without members first, then filled by modify records, so nested
/// groups can name each other in any order. `resolve` maps a member name that is neither one of
/// `users` nor one of `groups` to a DN (a lookup on the server).
pub(super) fn bulk_ldif(
    users: &[AdUser],
    groups: &[AdGroup],
    existing_ous: &BTreeSet<String>,
    resolve: &dyn Fn(&str) -> io::Result<String>,
) -> io::Result<String> {
    let mut out = String::new();
    let ous: BTreeSet<&str> = users.iter().filter_map(|u| u.ou.as_deref()).collect();
    for ou in ous.into_iter().filter(|ou| !existing_ous.contains(*ou)) {
        out.push_str(&ou_ldif(ou));
    }
    for u in users {
        out.push_str(&u.to_ldif());
    }
    for g in groups {
        push_attr(&mut out, "dn", &g.dn());
        push_attr(&mut out, "objectClass", "group");
        push_attr(&mut out, "sAMAccountName", &g.name);
        if let Some(m) = g.mail.as_ref().filter(|m| !m.is_empty()) {
            push_attr(&mut out, "mail", m);
        }
        out.push('\n');
    }
    for g in groups.iter().filter(|g| !g.members.is_empty()) {
        let mut dns = Vec::with_capacity(g.members.len());
        for m in &g.members {
            let dn = if let Some(u) = users.iter().find(|u| u.sam.eq_ignore_ascii_case(m)) {
                u.dn()
            } else if let Some(other) = groups.iter().find(|o| o.name.eq_ignore_ascii_case(m)) {
                other.dn()
            } else {
                resolve(m).map_err(|e| io::Error::new(e.kind(), format!("group {}: member {m}: {e}", g.name)))?
            };
            dns.push(dn);
        }
        out.push_str(&member_change(&g.dn(), "add", &dns));
    }
    Ok(out)
}

/// An add record for `OU=<ou>` below the base.
pub(super) fn ou_ldif(ou: &str) -> String {
    let mut out = String::new();
    push_attr(&mut out, "dn", &ou_dn(ou));
    push_attr(&mut out, "objectClass", "organizationalUnit");
    push_attr(&mut out, "ou", ou);
    out.push('\n');
    out
}

/// A modify record that adds (`op` = `add`) or deletes (`delete`) `member` values.
pub(super) fn member_change(group_dn: &str, op: &str, member_dns: &[String]) -> String {
    let mut out = String::new();
    push_attr(&mut out, "dn", group_dn);
    out.push_str("changetype: modify\n");
    out.push_str(&format!("{op}: member\n"));
    for dn in member_dns {
        push_attr(&mut out, "member", dn);
    }
    out.push_str("-\n\n");
    out
}

/// A modify record that replaces all values of `attr` (no values: removes the attribute).
pub(super) fn replace_record(dn: &str, attr: &str, values: &[&str]) -> String {
    let mut out = String::new();
    push_attr(&mut out, "dn", dn);
    out.push_str("changetype: modify\n");
    out.push_str(&format!("replace: {attr}\n"));
    for v in values {
        push_attr(&mut out, attr, v);
    }
    out.push_str("-\n\n");
    out
}

/// A modify record that sets the password (`unicodePwd`).
pub(super) fn password_record(dn: &str, password: &str) -> String {
    let mut out = String::new();
    push_attr(&mut out, "dn", dn);
    out.push_str("changetype: modify\nreplace: unicodePwd\n");
    push_base64(&mut out, "unicodePwd", &unicode_pwd(password));
    out.push_str("-\n\n");
    out
}

/// A delete record.
pub(super) fn delete_record(dn: &str) -> String {
    let mut out = String::new();
    push_attr(&mut out, "dn", dn);
    out.push_str("changetype: delete\n\n");
    out
}

/// AD's `unicodePwd` value: the password in double quotes, encoded as UTF-16LE.
fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// The canonical text of a binary `objectGUID` as AD tools print it: the first three groups
/// are little-endian in the 16 bytes, the last two big-endian, e.g. bytes
/// `64 cc 5d 52 ca ca ec 43 a1 c3 81 e0 9e b0 e1 4f` → `525dcc64-caca-43ec-a1c3-81e09eb0e14f`.
/// `None` unless `bytes` has exactly 16 bytes.
pub fn guid_to_string(bytes: &[u8]) -> Option<String> {
    let b: &[u8; 16] = bytes.try_into().ok()?;
    let hex = |s: &[u8]| s.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Some(format!(
        "{}-{}-{}-{}-{}",
        hex(&[b[3], b[2], b[1], b[0]]),
        hex(&[b[5], b[4]]),
        hex(&[b[7], b[6]]),
        hex(&b[8..10]),
        hex(&b[10..16])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::base64;

    #[test]
    fn guid_text_is_mixed_endian() {
        let bytes = [
            0x64, 0xcc, 0x5d, 0x52, 0xca, 0xca, 0xec, 0x43, 0xa1, 0xc3, 0x81, 0xe0, 0x9e, 0xb0, 0xe1, 0x4f,
        ];
        assert_eq!(
            guid_to_string(&bytes).as_deref(),
            Some("525dcc64-caca-43ec-a1c3-81e09eb0e14f")
        );
        assert_eq!(guid_to_string(&bytes[..15]), None);
    }

    #[test]
    fn unicode_pwd_is_quoted_utf16le() {
        assert_eq!(unicode_pwd("Ab1"), b"\"\0A\0b\x001\0\"\0".to_vec());
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"fo"), "Zm8=");
    }

    #[test]
    fn user_ldif() {
        let mut u = AdUser::new("alice", "example.org");
        u.disabled = true;
        u.ou = Some("Staff".into());
        u.given_name = "Jürgen".into();
        let l = u.to_ldif();
        assert!(l.starts_with("dn: CN=alice,OU=Staff,DC=example,DC=test\n"), "{l}");
        assert!(l.contains("userAccountControl: 514\n"));
        assert!(l.contains("givenName:: SsO8cmdlbg==\n"));
        assert!(l.contains("proxyAddresses: SMTP:alice@example.org\n"));
        assert!(l.contains("userPrincipalName: alice@example.test\n"));
        assert!(!l.contains("unicodePwd"));
        assert!(l.ends_with("\n\n"));
    }

    #[test]
    fn groups_are_filled_after_creation() {
        let users = generate_ad_users(1, "example.org");
        let mut outer = AdGroup::new("outer");
        outer.members = vec!["inner".into(), "Administrator".into()];
        let mut inner = AdGroup::new("inner");
        inner.members = vec!["user00001".into()];
        let resolve = |m: &str| Ok(format!("CN={m},{USERS_DN}"));
        let l = bulk_ldif(&users, &[outer, inner], &BTreeSet::new(), &resolve).expect("ldif");
        let create_inner = l
            .find("dn: CN=inner,CN=Users,DC=example,DC=test\nobjectClass")
            .expect("inner");
        let fill_outer = l.find("member: CN=inner,").expect("outer gets inner");
        assert!(create_inner < fill_outer, "{l}");
        assert!(l.contains("member: CN=Administrator,CN=Users,DC=example,DC=test\n"));
        assert!(l.contains("member: CN=user00001,CN=Users,DC=example,DC=test\n"));
    }
}
