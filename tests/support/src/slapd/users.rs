//! Test users and the LDIF that puts them into the directory.
//!
//! Tests describe the people they need as plain data (`TestUser`). This module turns that data
//! into LDIF, so the same text works for `slapadd` before start and `ldapmodify` while slapd runs.
//! It also holds the DN escaping rules (the LDIF ones are in `crate::encoding`), so that hostile
//! values (leading spaces, non-ASCII, `,` in a uid) reach the server as written instead of
//! breaking the file.

use super::hash::{sha1, ssha};
use crate::encoding::push_attr;

/// One person: an `inetOrgPerson` plus the test schema's auxiliary class `mailcowUser`, stored
/// as `uid=<uid>,ou=<ou>,dc=example,dc=org`.
///
/// `None`, and an empty string, leave the attribute out: LDAP cannot store an empty
/// directoryString. `cn` is not a field. It is `display_name` if set, else `"<given_name> <sn>"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestUser {
    /// RDN value and `uid` attribute.
    pub uid: String,
    /// `givenName`.
    pub given_name: String,
    /// `sn` (required by the `person` class).
    pub sn: String,
    /// `mail`.
    pub mail: Option<String>,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `userPassword` stored as given, e.g. `{SSHA}…` or `{CRYPT}$6$…`.
    pub password: Option<String>,
    /// `MailQuota`, a directoryString so tests can store `"abc"` or `"-5"`.
    pub quota_mib: Option<String>,
    /// `mailActive`, e.g. `"TRUE"` / `"FALSE"` / `"2"`.
    pub active: Option<String>,
    /// `mailTLSEnforceIn`.
    pub tls_in: Option<String>,
    /// `mailTLSEnforceOut`.
    pub tls_out: Option<String>,
    /// `mailAlternateAddress` values (multi-valued).
    pub aliases: Vec<String>,
    /// The OU below the base DN. `None` means `people`.
    pub ou: Option<String>,
}

impl TestUser {
    /// A complete user: given name = `uid` with a capital first letter, sn `Tester`,
    /// mail `uid@domain`, the `{SSHA}` of [`TestUser::default_password`] with a deterministic
    /// salt, and quota `"1024"`. No display name, active flag, TLS flags or aliases.
    pub fn new(uid: &str, domain: &str) -> TestUser {
        let salt = &sha1(uid.as_bytes())[..8];
        TestUser {
            uid: uid.to_string(),
            given_name: capitalized(uid),
            sn: "Tester".to_string(),
            mail: Some(format!("{uid}@{domain}")),
            display_name: None,
            password: Some(ssha(&Self::default_password(uid), salt)),
            quota_mib: Some("1024".to_string()),
            active: None,
            tls_in: None,
            tls_out: None,
            aliases: Vec::new(),
            ou: None,
        }
    }

    /// The clear text behind the `{SSHA}` that [`TestUser::new`] stores: `pw-<uid>`. A test can
    /// bind as the user with it.
    pub fn default_password(uid: &str) -> String {
        format!("pw-{uid}")
    }

    /// The OU this user lives in (`people` unless set).
    pub fn ou_name(&self) -> &str {
        self.ou.as_deref().unwrap_or("people")
    }

    /// The entry as an LDIF add record (no `changetype`, so it suits `slapadd` and `ldapmodify -a`),
    /// ending with a blank line.
    pub fn to_ldif(&self, base_dn: &str) -> String {
        let mut out = String::new();
        let dn = format!(
            "uid={},ou={},{base_dn}",
            escape_dn_value(&self.uid),
            escape_dn_value(self.ou_name())
        );
        push_attr(&mut out, "dn", &dn);
        push_attr(&mut out, "objectClass", "inetOrgPerson");
        push_attr(&mut out, "objectClass", "mailcowUser");
        push_attr(&mut out, "uid", &self.uid);
        let cn = match &self.display_name {
            Some(d) if !d.is_empty() => d.clone(),
            _ => format!("{} {}", self.given_name, self.sn).trim().to_string(),
        };
        push_attr(&mut out, "cn", &cn);
        push_attr(&mut out, "sn", &self.sn);
        let optional = [
            ("givenName", Some(&self.given_name)),
            ("displayName", self.display_name.as_ref()),
            ("mail", self.mail.as_ref()),
            ("userPassword", self.password.as_ref()),
            ("MailQuota", self.quota_mib.as_ref()),
            ("mailActive", self.active.as_ref()),
            ("mailTLSEnforceIn", self.tls_in.as_ref()),
            ("mailTLSEnforceOut", self.tls_out.as_ref()),
        ];
        for (name, value) in optional {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                push_attr(&mut out, name, v);
            }
        }
        for alias in self.aliases.iter().filter(|a| !a.is_empty()) {
            push_attr(&mut out, "mailAlternateAddress", alias);
        }
        out.push('\n');
        out
    }
}

/// `n` users `user00001` … in domain `domain`, each built by [`TestUser::new`]. The same `n`
/// always gives the same users, hashes included.
pub fn generate_users(n: usize, domain: &str) -> Vec<TestUser> {
    (1..=n).map(|i| TestUser::new(&format!("user{i:05}"), domain)).collect()
}

/// `s` with its first letter in upper case: the given name [`TestUser::new`] and
/// `AdUser::new` derive from the account name.
pub(crate) fn capitalized(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    if let Some(first) = chars.next() {
        out.extend(first.to_uppercase());
        out.push_str(chars.as_str());
    }
    out
}

/// Escapes one RDN value under RFC 4514 §2.4. It escapes `,+"\<>;=`, a leading `#` or space,
/// a trailing space, and NUL.
pub fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_escaping() {
        assert_eq!(escape_dn_value("a,b"), "a\\,b");
        assert_eq!(escape_dn_value("#x "), "\\#x\\ ");
        assert_eq!(escape_dn_value("plain"), "plain");
    }

    #[test]
    fn generated_users_are_deterministic() {
        let a = generate_users(3, "example.org");
        assert_eq!(a, generate_users(3, "example.org"));
        assert_eq!(a[0].uid, "user00001");
        assert_eq!(a[2].mail.as_deref(), Some("user00003@example.org"));
        assert_eq!(a[0].given_name, "User00001");
        let ldif = a[0].to_ldif("dc=example,dc=org");
        assert!(ldif.starts_with("dn: uid=user00001,ou=people,dc=example,dc=org\n"));
        assert!(ldif.contains("MailQuota: 1024\n"));
        assert!(ldif.ends_with("\n\n"));
    }
}
