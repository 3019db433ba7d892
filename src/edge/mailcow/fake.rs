//! An in-memory mailcow for unit tests of `apply`: it records every call in the order it
//! arrives and answers as scripted. Every item succeeds unless its address was given a
//! failure (mailcow's per-item message, the call itself goes on), and one call, the Nth,
//! can fail as a whole, as an unreachable or erroring mailcow makes the HTTP client fail.
//! Mailboxes can be given app passwords (`with_app_passwords`); `delete/app-passwd` and
//! `delete/eas_cache` answer per mailbox like the other writes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};

use super::{AliasResult, AppPasswordsResult, ItemResult, MailcowApi};
use crate::core::access::MailboxTemplate;
use crate::core::model::{Domain, Mailbox, Mailboxes, MailcowAlias, ManagedRows};
use crate::error::{Error, Result};

/// One call as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub endpoint: &'static str,
    /// The addresses it carries, in the order sent.
    pub items: Vec<String>,
    /// The attributes sent (the whole body for `add/mailbox`, the ids for `delete/alias`).
    pub attr: Value,
}

/// See the module doc. `add/alias` hands out the ids 1000 + 10 × its call number + the
/// address's place in the call.
#[derive(Debug, Default)]
pub struct FakeMailcow {
    calls: Mutex<Vec<Call>>,
    failures: BTreeMap<String, String>,
    /// Failures of one endpoint only, by (endpoint, lowercased address).
    endpoint_failures: BTreeMap<(&'static str, String), String>,
    fatal_at: Option<(usize, String)>,
    /// App password ids by lowercased mailbox.
    app_passwords: Mutex<BTreeMap<String, Vec<u64>>>,
}

impl FakeMailcow {
    pub fn new() -> FakeMailcow {
        FakeMailcow::default()
    }

    /// Every item for `address` fails with mailcow's `message`.
    pub fn failing(mut self, address: &str, message: &str) -> FakeMailcow {
        self.failures.insert(address.to_ascii_lowercase(), message.to_owned());
        self
    }

    /// Only `endpoint`'s items for `address` fail with `message` (for `delete/app-passwd`, the
    /// mailbox the ids belong to).
    pub fn failing_at(mut self, endpoint: &'static str, address: &str, message: &str) -> FakeMailcow {
        self.endpoint_failures
            .insert((endpoint, address.to_ascii_lowercase()), message.to_owned());
        self
    }

    /// `mailbox` has app passwords with these ids.
    pub fn with_app_passwords(self, mailbox: &str, ids: &[u64]) -> FakeMailcow {
        self.app_passwords
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(mailbox.to_ascii_lowercase(), ids.to_vec());
        self
    }

    /// The app password ids `mailbox` has now.
    pub fn app_passwords_of(&self, mailbox: &str) -> Vec<u64> {
        self.app_passwords
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&mailbox.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// The `n`th call (from 1) fails as a whole with `Error::Mailcow` and `message`, as
    /// the HTTP client fails on a 5xx or a connection error, after 50 ms. It is still
    /// recorded: it was sent.
    pub fn fatal_at(mut self, n: usize, message: &str) -> FakeMailcow {
        self.fatal_at = Some((n, message.to_owned()));
        self
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many calls went to `endpoint`.
    pub fn count_endpoint(&self, endpoint: &str) -> usize {
        self.calls().iter().filter(|c| c.endpoint == endpoint).count()
    }

    pub fn endpoints(&self) -> Vec<&'static str> {
        self.calls().iter().map(|c| c.endpoint).collect()
    }

    /// Record a call; `Err` if it is the one scripted to fail. Returns its number (from 1).
    fn call(&self, endpoint: &'static str, items: &[String], attr: Value) -> Result<usize> {
        let number = {
            let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
            calls.push(Call {
                endpoint,
                items: items.to_vec(),
                attr,
            });
            calls.len()
        };
        match &self.fatal_at {
            Some((n, message)) if *n == number => {
                // Slow, as a timeout is: the calls in flight beside it have time to go on.
                std::thread::sleep(std::time::Duration::from_millis(50));
                Err(Error::Mailcow {
                    endpoint: endpoint.to_owned(),
                    message: message.clone(),
                })
            }
            _ => Ok(number),
        }
    }

    fn result(&self, address: &str) -> ItemResult {
        match self.failures.get(&address.to_ascii_lowercase()) {
            Some(message) => Err(message.clone()),
            None => Ok(()),
        }
    }

    fn result_at(&self, endpoint: &'static str, address: &str) -> ItemResult {
        match self.endpoint_failures.get(&(endpoint, address.to_ascii_lowercase())) {
            Some(message) => Err(message.clone()),
            None => self.result(address),
        }
    }

    fn answer(&self, items: &[String]) -> BTreeMap<String, ItemResult> {
        items.iter().map(|i| (i.to_ascii_lowercase(), self.result(i))).collect()
    }
}

impl MailcowApi for FakeMailcow {
    fn mailboxes(&self, _tag: Option<&str>, state: Arc<ManagedRows>) -> Result<Mailboxes> {
        self.call("get/mailbox/reduced", &[], Value::Null)?;
        let mut mailboxes = Mailboxes::holding(state);
        mailboxes.finish();
        Ok(mailboxes)
    }

    fn mailbox(&self, address: &str, _tag: Option<&str>) -> Result<Option<Mailbox>> {
        self.call("get/mailbox/{address}", &[address.to_owned()], Value::Null)?;
        Ok(None)
    }

    fn domains(&self) -> Result<Vec<Domain>> {
        self.call("get/domain/all", &[], Value::Null)?;
        Ok(Vec::new())
    }

    fn aliases(&self) -> Result<Vec<MailcowAlias>> {
        self.call("get/alias/all", &[], Value::Null)?;
        Ok(Vec::new())
    }

    fn add_domain(&self, attrs: &Value) -> Result<ItemResult> {
        let domain = attrs["domain"].as_str().unwrap_or_default().to_owned();
        self.call("add/domain", std::slice::from_ref(&domain), attrs.clone())?;
        Ok(self.result(&domain))
    }

    fn add_mailbox(&self, attrs: &Value) -> Result<ItemResult> {
        let part = |key: &str| attrs[key].as_str().unwrap_or_default().to_owned();
        let address = format!("{}@{}", part("local_part"), part("domain"));
        self.call("add/mailbox", std::slice::from_ref(&address), attrs.clone())?;
        Ok(self.result(&address))
    }

    fn edit_mailbox(&self, items: &[String], attr: &Value) -> Result<BTreeMap<String, ItemResult>> {
        self.call("edit/mailbox", items, attr.clone())?;
        Ok(items
            .iter()
            .map(|i| (i.to_ascii_lowercase(), self.result_at("edit/mailbox", i)))
            .collect())
    }

    fn edit_tls_policy(&self, items: &[String], tls_in: bool, tls_out: bool) -> Result<BTreeMap<String, ItemResult>> {
        self.call(
            "edit/tls_policy",
            items,
            json!({ "tls_in": tls_in, "tls_out": tls_out }),
        )?;
        Ok(self.answer(items))
    }

    fn rename_mailbox(&self, old: &str, new: &str) -> Result<ItemResult> {
        self.call("edit/rename-mbox", &[old.to_owned()], json!({ "new": new }))?;
        Ok(self.result(old))
    }

    fn delete_mailboxes(&self, items: &[String]) -> Result<BTreeMap<String, ItemResult>> {
        self.call("delete/mailbox", items, Value::Null)?;
        Ok(self.answer(items))
    }

    fn add_aliases(
        &self,
        addresses: &[String],
        goto: &str,
        sender_allowed: bool,
    ) -> Result<BTreeMap<String, AliasResult>> {
        let n = self.call(
            "add/alias",
            addresses,
            json!({ "goto": goto, "sender_allowed": sender_allowed }),
        )?;
        Ok(addresses
            .iter()
            .zip(0u64..)
            .map(|(a, k)| {
                (
                    a.to_ascii_lowercase(),
                    self.result(a).map(|()| 1000 + 10 * n as u64 + k),
                )
            })
            .collect())
    }

    fn edit_alias(&self, id: u64, address: &str, goto: &str) -> Result<ItemResult> {
        self.call("edit/alias", &[address.to_owned()], json!({ "id": id, "goto": goto }))?;
        Ok(self.result(address))
    }

    fn sender_acl(&self, address: &str) -> Result<Option<Option<Vec<String>>>> {
        self.call("get/mailbox/{address}", &[address.to_owned()], Value::Null)?;
        Ok(Some(Some(Vec::new())))
    }

    fn edit_sender_acl(&self, mailbox: &str, list: &[String]) -> Result<std::result::Result<Vec<String>, String>> {
        self.call("edit/mailbox", &[mailbox.to_owned()], json!({ "sender_acl": list }))?;
        Ok(self.result(mailbox).map(|()| Vec::new()))
    }

    fn delete_aliases(&self, ids: &[u64], addresses: &[String]) -> Result<BTreeMap<String, ItemResult>> {
        self.call("delete/alias", addresses, json!(ids))?;
        Ok(self.answer(addresses))
    }

    fn app_passwords(&self, mailbox: &str) -> Result<AppPasswordsResult> {
        self.call("get/app-passwd/all", &[mailbox.to_owned()], Value::Null)?;
        Ok(Ok(self.app_passwords_of(mailbox)))
    }

    fn delete_app_passwords(&self, ids: &[u64]) -> Result<ItemResult> {
        let owner = {
            let all = self.app_passwords.lock().unwrap_or_else(PoisonError::into_inner);
            all.iter()
                .find(|(_, have)| ids.iter().any(|id| have.contains(id)))
                .map(|(mailbox, _)| mailbox.clone())
                .unwrap_or_default()
        };
        self.call("delete/app-passwd", std::slice::from_ref(&owner), json!(ids))?;
        let result = self.result_at("delete/app-passwd", &owner);
        if result.is_ok() {
            let mut all = self.app_passwords.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(have) = all.get_mut(&owner) {
                have.retain(|id| !ids.contains(id));
            }
        }
        Ok(result)
    }

    fn reset_eas_cache(&self, mailbox: &str) -> Result<ItemResult> {
        self.call("delete/eas_cache", &[mailbox.to_owned()], Value::Null)?;
        Ok(self.result_at("delete/eas_cache", mailbox))
    }

    fn identity_provider(&self) -> Result<Option<crate::core::model::IdentityProvider>> {
        self.call("get/identity-provider", &[], Value::Null)?;
        Ok(None)
    }

    fn domain_admins(&self) -> Result<Vec<crate::core::admins::MailcowAdmin>> {
        self.call("get/domain-admin/all", &[], Value::Null)?;
        Ok(Vec::new())
    }

    fn add_domain_admin(&self, attrs: &Value) -> Result<ItemResult> {
        let name = attrs["username"].as_str().unwrap_or_default().to_owned();
        self.call("add/domain-admin", std::slice::from_ref(&name), attrs.clone())?;
        Ok(Ok(()))
    }

    fn edit_domain_admin(&self, username: &str, domains: &[String]) -> Result<ItemResult> {
        self.call(
            "edit/domain-admin",
            &[username.to_owned()],
            json!({ "domains": domains }),
        )?;
        Ok(Ok(()))
    }

    fn delete_domain_admins(&self, usernames: &[String]) -> Result<BTreeMap<String, ItemResult>> {
        self.call("delete/domain-admin", usernames, Value::Null)?;
        Ok(usernames.iter().map(|u| (u.clone(), Ok(()))).collect())
    }

    fn check_write_access(&self) -> Result<()> {
        self.call("edit/mailbox", &[], json!({}))?;
        Ok(())
    }

    fn templates(&self) -> Result<Vec<MailboxTemplate>> {
        self.call("get/mailbox/template/all", &[], json!({}))?;
        Ok(Vec::new())
    }

    fn edit_user_acl(&self, items: &[String], acl: &[String]) -> Result<BTreeMap<String, ItemResult>> {
        self.call("edit/user-acl", items, json!({ "user_acl": acl }))?;
        Ok(items
            .iter()
            .map(|i| (i.to_ascii_lowercase(), self.result_at("edit/user-acl", i)))
            .collect())
    }

    fn edit_ratelimit(&self, items: &[String], value: u64, frame: &str) -> Result<BTreeMap<String, ItemResult>> {
        self.call("edit/rl-mbox", items, json!({ "rl_value": value, "rl_frame": frame }))?;
        Ok(items
            .iter()
            .map(|i| (i.to_ascii_lowercase(), self.result_at("edit/rl-mbox", i)))
            .collect())
    }
}
