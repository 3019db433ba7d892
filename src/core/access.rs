//! Policy from the directory: which of mailcow's per-mailbox protocol flags a user gets
//! (`access` in config.json) and which mailbox template (`templates`), from rules on its
//! groups and attributes.
//!
//! A user's flags are one byte, bit `i` for [`Protocol::ALL`]`[i]`. Only the flags named in
//! `access.default` are managed: the others are never sent, whatever mailcow holds. For a
//! managed flag, the first rule that sets it and matches the user wins; no match, the default.
//!
//! Group conditions are decided on the group entry's member list (read by DN once per pass,
//! direct members only), not on the user's `memberOf`: OpenLDAP has `memberOf` only with its
//! overlay. `memberOf` is still usable as an attribute condition (any value matches).

use std::collections::{BTreeMap, BTreeSet};

use crate::core::directory::normalize_dn;
use crate::core::model::RawEntry;

/// One of mailcow's per-mailbox protocol access flags (`edit/mailbox` `<name>_access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Imap,
    Pop3,
    Smtp,
    Sieve,
    Sogo,
    Eas,
    Dav,
}

impl Protocol {
    pub const ALL: [Protocol; 7] = [
        Protocol::Imap,
        Protocol::Pop3,
        Protocol::Smtp,
        Protocol::Sieve,
        Protocol::Sogo,
        Protocol::Eas,
        Protocol::Dav,
    ];

    /// The name in config.json.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Smtp => "smtp",
            Protocol::Sieve => "sieve",
            Protocol::Sogo => "sogo",
            Protocol::Eas => "eas",
            Protocol::Dav => "dav",
        }
    }

    /// The key in mailcow's `attributes` and in `add/mailbox` / `edit/mailbox`.
    pub fn field(self) -> &'static str {
        match self {
            Protocol::Imap => "imap_access",
            Protocol::Pop3 => "pop3_access",
            Protocol::Smtp => "smtp_access",
            Protocol::Sieve => "sieve_access",
            Protocol::Sogo => "sogo_access",
            Protocol::Eas => "eas_access",
            Protocol::Dav => "dav_access",
        }
    }

    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub fn by_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Every flag on: mailcow's default for a mailbox (the Default template).
pub const ALL_ON: u8 = 0x7f;

/// When a rule applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The user's DN is a direct member of this group (DN normalised).
    Group(String),
    /// One of the attribute's values equals this one (ASCII case ignored, trimmed). The
    /// attribute name is lowercased.
    Attribute { name: String, value: String },
}

/// One rule: when it matches, the flags in `mask` take their bit of `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    pub when: Condition,
    pub mask: u8,
    pub value: u8,
}

/// `access` as the config validated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRules {
    /// The managed flags (the keys of `default`).
    pub managed: u8,
    /// Their values when no rule sets them.
    pub default: u8,
    pub rules: Vec<AccessRule>,
    /// The attribute listing a group's members (`member`; `uniqueMember` for
    /// groupOfUniqueNames).
    pub member: String,
}

impl AccessRules {
    /// The groups the rules name (normalised DNs), each once.
    pub fn groups(&self) -> BTreeSet<&str> {
        self.rules
            .iter()
            .filter_map(|r| match &r.when {
                Condition::Group(dn) => Some(dn.as_str()),
                Condition::Attribute { .. } => None,
            })
            .collect()
    }

    /// The attributes the rules read from user entries.
    pub fn attributes(&self) -> Vec<&str> {
        self.rules
            .iter()
            .filter_map(|r| match &r.when {
                Condition::Attribute { name, .. } => Some(name.as_str()),
                Condition::Group(_) => None,
            })
            .collect()
    }

    /// The flags of a user: its entry's attributes and its DN (normalised) against the
    /// members of the named groups. Only the managed bits mean anything.
    pub fn flags_of(&self, entry: &RawEntry, dn: &str, members: &Memberships) -> u8 {
        let mut decided = 0u8;
        let mut flags = 0u8;
        for rule in &self.rules {
            let open = rule.mask & self.managed & !decided;
            if open == 0 || !matches(&rule.when, entry, dn, members) {
                continue;
            }
            flags |= rule.value & open;
            decided |= open;
        }
        (flags | (self.default & !decided)) & self.managed
    }
}

fn matches(when: &Condition, entry: &RawEntry, dn: &str, members: &Memberships) -> bool {
    match when {
        Condition::Group(group) => members.0.get(group).is_some_and(|m| m.contains(dn)),
        // A DN value (memberOf) may differ in spacing and case from the config's.
        Condition::Attribute { name, value } => entry.attrs.get(name).is_some_and(|values| {
            values.iter().any(|v| {
                let v = String::from_utf8_lossy(v);
                let v = v.trim();
                v.eq_ignore_ascii_case(value) || (v.contains('=') && normalize_dn(v) == normalize_dn(value))
            })
        }),
    }
}

/// The rules and the memberships they are decided on, for reading entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessReading {
    pub rules: Option<AccessRules>,
    pub templates: Option<TemplateRules>,
    pub members: Memberships,
}

/// At most this many distinct template names (a user holds its template as a 5-bit index).
pub const MAX_TEMPLATES: usize = 31;

/// `templates` as the config validated it: the first rule that matches names the user's
/// template, else `default`; names are indices into `names`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateRules {
    pub rules: Vec<(Condition, u8)>,
    pub default: Option<u8>,
    /// Distinct, in the order the config first names them.
    pub names: Vec<String>,
}

impl TemplateRules {
    pub fn groups(&self) -> BTreeSet<&str> {
        self.rules
            .iter()
            .filter_map(|(when, _)| match when {
                Condition::Group(dn) => Some(dn.as_str()),
                Condition::Attribute { .. } => None,
            })
            .collect()
    }

    pub fn attributes(&self) -> Vec<&str> {
        self.rules
            .iter()
            .filter_map(|(when, _)| match when {
                Condition::Attribute { name, .. } => Some(name.as_str()),
                Condition::Group(_) => None,
            })
            .collect()
    }

    /// The template (index into `names`) of a user.
    pub fn pick(&self, entry: &RawEntry, dn: &str, members: &Memberships) -> Option<u8> {
        self.rules
            .iter()
            .find(|(when, _)| matches(when, entry, dn, members))
            .map(|(_, t)| *t)
            .or(self.default)
    }
}

/// A mailbox template of mailcow, as `get/mailbox/template/all` lists it: what re-applying
/// it sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxTemplate {
    pub id: u64,
    pub name: String,
    /// MiB (mailcow stores bytes); 0 = unlimited.
    pub quota_mib: u64,
    /// The seven `*_access` flags.
    pub access: u8,
    pub tags: Vec<String>,
    /// The user ACLs that are on (`acl_<name>` = 1), by name.
    pub acl: Vec<String>,
    /// `rl_value` (0 = none) and `rl_frame` (`s`, `m`, `h`, `d`).
    pub rl_value: u64,
    pub rl_frame: String,
}

/// The direct members (normalised DNs) of each group the rules name, as read this pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memberships(pub BTreeMap<String, BTreeSet<String>>);

/// The managed flags of `flags`, by protocol, in [`Protocol::ALL`] order.
pub fn flag_list(managed: u8, flags: u8) -> impl Iterator<Item = (Protocol, bool)> {
    Protocol::ALL
        .into_iter()
        .filter(move |p| managed & p.bit() != 0)
        .map(move |p| (p, flags & p.bit() != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(attrs: &[(&str, &[&str])]) -> RawEntry {
        RawEntry {
            dn: "uid=a,dc=x".into(),
            attrs: attrs
                .iter()
                .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.as_bytes().to_vec()).collect()))
                .collect(),
            ranged: Vec::new(),
        }
    }

    fn rules() -> AccessRules {
        let pop3 = Protocol::Pop3.bit();
        let eas = Protocol::Eas.bit();
        AccessRules {
            managed: pop3 | eas,
            default: pop3 | eas,
            rules: vec![
                AccessRule {
                    when: Condition::Group("cn=nopop,dc=x".into()),
                    mask: pop3,
                    value: 0,
                },
                AccessRule {
                    when: Condition::Attribute {
                        name: "employeetype".into(),
                        value: "contractor".into(),
                    },
                    mask: pop3 | eas,
                    value: pop3,
                },
            ],
            member: "member".into(),
        }
    }

    #[test]
    fn first_matching_rule_wins_per_flag_and_the_default_fills_the_rest() {
        let r = rules();
        let pop3 = Protocol::Pop3.bit();
        let eas = Protocol::Eas.bit();
        let mut members = Memberships::default();
        assert_eq!(r.flags_of(&entry(&[]), "uid=a,dc=x", &members), pop3 | eas);
        members
            .0
            .insert("cn=nopop,dc=x".into(), ["uid=a,dc=x".to_owned()].into_iter().collect());
        assert_eq!(r.flags_of(&entry(&[]), "uid=a,dc=x", &members), eas);
        // The group rule decided pop3 first; the attribute rule still decides eas.
        let contractor = entry(&[("employeetype", &["staff", " Contractor "])]);
        assert_eq!(r.flags_of(&contractor, "uid=a,dc=x", &members), 0);
        assert_eq!(r.flags_of(&contractor, "uid=b,dc=x", &members), pop3);
        // A DN value matches with other spacing and case.
        let dn_rule = AccessRules {
            rules: vec![AccessRule {
                when: Condition::Attribute {
                    name: "memberof".into(),
                    value: "CN=Staff, CN=Users,DC=x".into(),
                },
                mask: pop3,
                value: 0,
            }],
            ..rules()
        };
        let member = entry(&[("memberof", &["cn=other,dc=x", "cn=staff,cn=users, dc=x"])]);
        assert_eq!(dn_rule.flags_of(&member, "uid=a,dc=x", &Memberships::default()), eas);
        // Unmanaged flags are never on in the result.
        assert_eq!(
            r.flags_of(&entry(&[]), "uid=b,dc=x", &Memberships::default()) & !(pop3 | eas),
            0
        );
    }

    #[test]
    fn flags_list_only_the_managed_ones_in_order() {
        let listed: Vec<_> = flag_list(Protocol::Imap.bit() | Protocol::Dav.bit(), Protocol::Dav.bit()).collect();
        assert_eq!(listed, vec![(Protocol::Imap, false), (Protocol::Dav, true)]);
        assert_eq!(Protocol::by_name("sieve"), Some(Protocol::Sieve));
        assert_eq!(Protocol::Sogo.field(), "sogo_access");
    }
}
