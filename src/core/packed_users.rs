//! Directory users packed for large imports: every user's strings in one arena, each user a
//! fixed-size record. Held whole, the users of a 20k import took 3.4 MB for their `Vec` alone
//! (heaptrack), before each user's five or more strings allocated one by one; packed, a user
//! costs a 40-byte record (a test checks the size) and its strings. A user is
//! unpacked into a `DirUser` only while it is planned.

use std::cmp::Ordering;
use std::fmt;

use crate::core::model::DirUser;
use crate::core::policy::Secret;

/// Packed users, in the order they were pushed until [`PackedUsers::sort_by_uid`].
#[derive(Default, Clone)]
pub struct PackedUsers {
    arena: String,
    records: Vec<UserRecord>,
}

// The arena holds password hashes: never print it.
impl fmt::Debug for PackedUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PackedUsers({} users, {} bytes)",
            self.records.len(),
            self.arena.len()
        )
    }
}

/// Where a user's strings are (uid, dn, mail, name, password, aliases joined by `\n`) and
/// its other fields, with sentinels instead of `Option`s.
#[derive(Debug, Clone, Copy)]
struct UserRecord {
    at: u32,
    /// Lengths of the six strings; `ABSENT` for a `None` (name, password) or no aliases.
    lens: [u32; 6],
    /// `NO_QUOTA` for `None`.
    quota_mib: u64,
    /// `NONE_U8` for `None`.
    active: u8,
    /// `tls_enforce_in` in the low nibble, `tls_enforce_out` in the high one: 0, 1, or
    /// `NONE_NIBBLE`.
    tls: u8,
    /// The protocol access bits, `NONE_U8` for `None` (7 bits are used).
    access: u8,
    /// `PASSWORD_ELIDED` | `ALIASES_LISTED`.
    flags: u8,
}

const ABSENT: u32 = u32::MAX;
const NO_QUOTA: u64 = u64::MAX;
const NONE_U8: u8 = u8::MAX;
const NONE_NIBBLE: u8 = 0xf;
const PASSWORD_ELIDED: u8 = 1;
const ALIASES_LISTED: u8 = 2;
/// The uid is the DN (no uid attribute mapped, as the original tool): held once.
const UID_IS_DN: u8 = 4;
/// The template index sits in the flags' top five bits; this value there is `None`.
const TEMPLATE_SHIFT: u8 = 3;
const NO_TEMPLATE: u8 = 31;

const UID: usize = 0;
const DN: usize = 1;
const MAIL: usize = 2;
const NAME: usize = 3;
const PASSWORD: usize = 4;
const ALIASES: usize = 5;

impl PackedUsers {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Pack a user. Alias addresses never hold a `\n` (they are checked addresses).
    pub fn push(&mut self, user: &DirUser) {
        let at = u32::try_from(self.arena.len()).expect("directory arena below 4 GiB");
        let mut lens = [ABSENT; 6];
        let mut put = |slot: usize, text: Option<&str>, arena: &mut String| {
            if let Some(text) = text {
                arena.push_str(text);
                lens[slot] = u32::try_from(text.len()).unwrap_or(ABSENT - 1);
            }
        };
        let uid_is_dn = user.uid == user.dn;
        put(UID, (!uid_is_dn).then_some(user.uid.as_str()), &mut self.arena);
        put(DN, Some(&user.dn), &mut self.arena);
        put(MAIL, Some(&user.mail), &mut self.arena);
        put(NAME, user.name.as_deref(), &mut self.arena);
        put(PASSWORD, user.password.as_ref().map(Secret::expose), &mut self.arena);
        if !user.aliases.is_empty() {
            let start = self.arena.len();
            for (i, alias) in user.aliases.iter().enumerate() {
                if i > 0 {
                    self.arena.push('\n');
                }
                self.arena.push_str(alias);
            }
            lens[ALIASES] = u32::try_from(self.arena.len() - start).unwrap_or(ABSENT - 1);
        }
        let nibble = |v: Option<bool>| v.map_or(NONE_NIBBLE, u8::from);
        self.records.push(UserRecord {
            at,
            lens,
            quota_mib: user.quota_mib.unwrap_or(NO_QUOTA),
            active: user.active.unwrap_or(NONE_U8),
            tls: nibble(user.tls_in) | nibble(user.tls_out) << 4,
            access: user.access.unwrap_or(NONE_U8),
            flags: if user.password_elided { PASSWORD_ELIDED } else { 0 }
                | if user.aliases_listed { ALIASES_LISTED } else { 0 }
                | if uid_is_dn { UID_IS_DN } else { 0 }
                | user.template.filter(|&t| t < NO_TEMPLATE).unwrap_or(NO_TEMPLATE) << TEMPLATE_SHIFT,
        });
    }

    /// One string of record `i`.
    fn text(&self, i: usize, slot: usize) -> Option<&str> {
        self.text_of(&self.records[i], slot)
    }

    fn text_of(&self, record: &UserRecord, slot: usize) -> Option<&str> {
        let slot = if slot == UID && record.flags & UID_IS_DN != 0 {
            DN
        } else {
            slot
        };
        if record.lens[slot] == ABSENT {
            return None;
        }
        let start = record.at as usize + record.lens[..slot].iter().filter(|&&l| l != ABSENT).sum::<u32>() as usize;
        Some(&self.arena[start..start + record.lens[slot] as usize])
    }

    pub fn uid(&self, i: usize) -> &str {
        self.text(i, UID).unwrap_or_default()
    }

    pub fn mail(&self, i: usize) -> &str {
        self.text(i, MAIL).unwrap_or_default()
    }

    pub fn dn(&self, i: usize) -> &str {
        self.text(i, DN).unwrap_or_default()
    }

    /// User `i`, unpacked.
    pub fn get(&self, i: usize) -> DirUser {
        let record = self.records[i];
        let flag = |v: u8| (v != NONE_NIBBLE).then_some(v == 1);
        DirUser {
            uid: self.uid(i).to_owned(),
            dn: self.dn(i).to_owned(),
            mail: self.mail(i).to_owned(),
            name: self.text(i, NAME).map(str::to_owned),
            password: self.text(i, PASSWORD).map(Secret::new),
            password_elided: record.flags & PASSWORD_ELIDED != 0,
            quota_mib: (record.quota_mib != NO_QUOTA).then_some(record.quota_mib),
            active: (record.active != NONE_U8).then_some(record.active),
            tls_in: flag(record.tls & 0xf),
            tls_out: flag(record.tls >> 4),
            aliases: self
                .text(i, ALIASES)
                .map(|joined| joined.split('\n').map(str::to_owned).collect())
                .unwrap_or_default(),
            aliases_listed: record.flags & ALIASES_LISTED != 0,
            access: (record.access != NONE_U8).then_some(record.access),
            template: Some(record.flags >> TEMPLATE_SHIFT).filter(|&t| t != NO_TEMPLATE),
        }
    }

    /// Sort the records by uid (the arena stays as it is).
    pub fn sort_by_uid(&mut self) {
        let mut records = std::mem::take(&mut self.records);
        records.sort_by(|a, b| self.text_of(a, UID).cmp(&self.text_of(b, UID)));
        self.records = records;
    }

    /// Positions sorted by mail (ties by position).
    pub fn positions_by_mail(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.records.len() as u32).collect();
        order.sort_by(|&a, &b| self.mail(a as usize).cmp(self.mail(b as usize)).then(a.cmp(&b)));
        order
    }

    /// Positions sorted by uid (ties by position).
    pub fn positions_by_uid(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.records.len() as u32).collect();
        order.sort_by(|&a, &b| self.uid(a as usize).cmp(self.uid(b as usize)).then(a.cmp(&b)));
        order
    }

    /// The position of the user with this uid, when sorted by uid.
    pub fn find_uid(&self, uid: &str) -> Option<usize> {
        self.records
            .binary_search_by(|r| self.text_of(r, UID).unwrap_or_default().cmp(uid))
            .ok()
    }

    /// Compare user `i`'s mail with `mail`.
    pub fn cmp_mail(&self, i: usize, mail: &str) -> Ordering {
        self.mail(i).cmp(mail)
    }

    /// Keep only the users for which `keep(position)` holds; the arena is packed again.
    pub fn retain(&mut self, keep: impl Fn(usize) -> bool) {
        let mut packed = PackedUsers::default();
        for i in 0..self.records.len() {
            if keep(i) {
                packed.push(&self.get(i));
            }
        }
        *self = packed;
    }

    pub fn shrink_to_fit(&mut self) {
        self.arena.shrink_to_fit();
        self.records.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: &str) -> DirUser {
        DirUser {
            uid: uid.into(),
            dn: format!("uid={uid},dc=example,dc=org"),
            mail: format!("{uid}@example.org"),
            ..DirUser::default()
        }
    }

    #[test]
    fn every_field_survives_packing() {
        let full = DirUser {
            name: Some("Ann Ämsel".into()),
            password: Some(Secret::new("{SSHA}abc")),
            password_elided: true,
            quota_mib: Some(0),
            active: Some(2),
            tls_in: Some(false),
            tls_out: Some(true),
            aliases: vec!["a@example.org".into(), "b@example.org".into()],
            aliases_listed: true,
            access: Some(0x55),
            template: Some(30),
            ..user("ann")
        };
        let bare = DirUser {
            name: Some(String::new()),
            tls_in: Some(true),
            access: Some(0),
            template: Some(0),
            ..user("bob")
        };
        let mut packed = PackedUsers::default();
        packed.push(&full);
        packed.push(&bare);
        packed.push(&user("cid"));
        assert_eq!(packed.get(0), full);
        assert_eq!(packed.get(1), bare);
        assert_eq!(packed.get(2), user("cid"));
        assert_eq!(packed.len(), 3);
    }

    #[test]
    fn a_uid_that_is_the_dn_is_held_once() {
        let by_dn = DirUser {
            uid: "uid=ann,dc=example,dc=org".into(),
            ..user("ann")
        };
        let mut packed = PackedUsers::default();
        packed.push(&by_dn);
        assert_eq!(packed.get(0), by_dn);
        assert_eq!(packed.uid(0), "uid=ann,dc=example,dc=org");
        assert_eq!(packed.find_uid("uid=ann,dc=example,dc=org"), Some(0));
        assert_eq!(packed.arena.len(), by_dn.dn.len() + by_dn.mail.len());
    }

    #[test]
    fn sorted_by_uid_and_found() {
        let mut packed = PackedUsers::default();
        for uid in ["m", "c", "x", "a"] {
            packed.push(&user(uid));
        }
        assert_eq!(packed.positions_by_uid(), [3, 1, 0, 2]);
        packed.sort_by_uid();
        let uids: Vec<&str> = (0..packed.len()).map(|i| packed.uid(i)).collect();
        assert_eq!(uids, ["a", "c", "m", "x"]);
        assert_eq!(packed.find_uid("m"), Some(2));
        assert_eq!(packed.find_uid("b"), None);
        packed.retain(|i| i != 1);
        assert_eq!(packed.get(1), user("m"));
        assert_eq!(packed.len(), 3);
    }

    #[test]
    fn a_record_is_40_bytes() {
        assert_eq!(std::mem::size_of::<UserRecord>(), 40);
    }

    #[test]
    fn debug_shows_no_hash() {
        let mut packed = PackedUsers::default();
        packed.push(&DirUser {
            password: Some(Secret::new("{SSHA}secret-hash")),
            ..user("ann")
        });
        assert!(!format!("{packed:?}").contains("secret-hash"));
    }
}
