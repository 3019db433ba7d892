//! User aliases (mailAlternateAddress) and group distribution aliases (groupOfNames, nested)
//! against slapd and the emulator.

use serde_json::{Value, json};

use crate::util::{Env, group_ldif, users};

const ADD_ALIAS: &str = "/api/v1/add/alias";

fn alias<'a>(aliases: &'a [Value], address: &str) -> Option<&'a Value> {
    aliases.iter().find(|a| a["address"] == address)
}

fn with_aliases() -> Env {
    let mut list = users(3);
    list[0].aliases = vec!["Alice.Alt@example.org".into(), "a2@example.org".into()];
    list[1].aliases = vec!["taken@example.org".into(), "user00003@example.org".into()];
    let mut env = Env::start(list);
    env.set("/ldap/user_mapping/aliases", json!("mailAlternateAddress"));
    env
}

#[test]
fn user_aliases_are_created_owned_updated_and_removed() {
    let env = with_aliases();
    // An alias the admin made by hand, at an address LDAP also claims.
    env.emu.add_alias("taken@example.org", "user00003@example.org", true);
    let run = env.run(&["-v"]);
    run.expect(0);
    assert!(
        run.stderr.contains("taken@example.org") && run.stderr.contains("not made by this tool"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("user00003@example.org") && run.stderr.contains("is a mailbox address"),
        "{}",
        run.stderr
    );
    let aliases = env.emu.aliases();
    let alt = alias(&aliases, "alice.alt@example.org").expect("alias created");
    assert_eq!(alt["goto"], "user00001@example.org");
    assert_eq!(alt["active"], json!(1));
    assert_eq!(
        alt["sender_allowed"],
        json!(1),
        "the user may send as its alternate address"
    );
    assert_eq!(
        alias(&aliases, "taken@example.org").unwrap()["goto"],
        "user00003@example.org",
        "foreign alias untouched"
    );
    assert_eq!(
        env.emu.count("POST", ADD_ALIAS),
        1,
        "one add for both of a user's aliases"
    );

    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0, "unchanged: {:?}", env.emu.requests());
    assert_eq!(
        env.emu.count("GET", "/api/v1/get/alias/all"),
        1,
        "all aliases in one read"
    );

    env.slapd
        .modify_attr("user00001", "mailAlternateAddress", &["a2@example.org"])
        .unwrap();
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 1);
    assert!(
        alias(&env.emu.aliases(), "alice.alt@example.org").is_none(),
        "removed with LDAP"
    );
    assert!(
        alias(&env.emu.aliases(), "taken@example.org").is_some(),
        "never a foreign one"
    );

    // The user leaves: its mailbox is disabled and its aliases go.
    env.slapd.delete_user("user00001").unwrap();
    env.pass();
    assert!(alias(&env.emu.aliases(), "a2@example.org").is_none());
    assert_eq!(env.mailbox("user00001@example.org")["active"], json!(0));
}

#[test]
fn proxy_addresses_style_values() {
    let mut list = users(1);
    list[0].display_name = Some("unused".into());
    let mut env = Env::start(list);
    // mailAlternateAddress holds the AD-style values here: SMTP: primary, smtp: secondary, X500.
    env.slapd
        .modify_attr(
            "user00001",
            "mailAlternateAddress",
            &[
                "SMTP:user00001@example.org",
                "smtp:Second@Example.org",
                "X500:/o=Org/ou=x/cn=y",
                "sip:user@example.org",
            ],
        )
        .unwrap();
    env.set("/ldap/user_mapping/aliases", json!("mailAlternateAddress"));
    env.pass();
    let aliases = env.emu.aliases();
    assert_eq!(aliases.len(), 1, "{aliases:?}");
    assert_eq!(aliases[0]["address"], "second@example.org");
}

#[test]
fn groups_become_distribution_aliases_with_nesting() {
    let mut env = Env::start(users(4));
    let base = env.slapd.base_dn().to_owned();
    let dn = |uid: &str| format!("uid={uid},ou=people,{base}");
    let outer = format!("cn=team,ou=groups,{base}");
    let inner = format!("cn=inner,ou=groups,{base}");
    env.slapd
        .apply_ldif(&format!(
            "dn: ou=groups,{base}\nobjectClass: organizationalUnit\nou: groups\n\n{}{}",
            group_ldif(
                &base,
                "team",
                Some("Team@example.org"),
                &[dn("user00001"), inner.clone()]
            ),
            // The inner group has no address of its own, and points back at the outer one.
            group_ldif(&base, "inner", None, &[dn("user00002"), dn("user00003"), outer.clone()]),
        ))
        .unwrap();
    env.slapd
        .apply_ldif(&group_ldif(
            &base,
            "other",
            Some("other@example.org"),
            &[dn("user00004")],
        ))
        .unwrap();
    env.set("/groups/search_base", json!(format!("ou=groups,{base}")));
    env.set("/groups/search_filter", json!("(&(objectClass=groupOfNames)(mail=*))"));
    env.pass();
    let team = alias(&env.emu.aliases(), "team@example.org")
        .cloned()
        .expect("group alias");
    assert_eq!(
        team["goto"],
        "user00001@example.org,user00002@example.org,user00003@example.org"
    );
    assert_eq!(team["sender_allowed"], json!(0), "members do not send as the list");

    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0);

    // A membership change is one edit of the same alias.
    env.slapd
        .apply_ldif(&format!(
            "dn: {inner}\nchangetype: modify\nreplace: member\nmember: {}\nmember: {outer}\n\n",
            dn("user00004")
        ))
        .unwrap();
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 1);
    assert_eq!(env.emu.count("POST", "/api/v1/edit/alias"), 1);
    let after = alias(&env.emu.aliases(), "team@example.org").cloned().unwrap();
    assert_eq!(after["id"], team["id"], "the same alias");
    assert_eq!(after["goto"], "user00001@example.org,user00004@example.org");

    // Without nesting only direct members count.
    env.set("/groups/nested", json!(false));
    env.pass();
    assert_eq!(
        alias(&env.emu.aliases(), "team@example.org").unwrap()["goto"],
        "user00001@example.org"
    );

    // The group disappears: its alias goes (and only it).
    env.emu.add_alias("manual@example.org", "user00001@example.org", true);
    env.slapd
        .apply_ldif(&format!("dn: {outer}\nchangetype: delete\n\n"))
        .unwrap();
    env.pass();
    let aliases = env.emu.aliases();
    assert!(alias(&aliases, "team@example.org").is_none());
    assert!(alias(&aliases, "manual@example.org").is_some());
}

#[test]
fn a_group_search_that_returns_nothing_is_refused_while_group_aliases_are_managed() {
    let mut env = Env::start(users(2));
    let base = env.slapd.base_dn().to_owned();
    env.slapd
        .apply_ldif(&format!(
            "dn: ou=groups,{base}\nobjectClass: organizationalUnit\nou: groups\n\n{}",
            group_ldif(
                &base,
                "all",
                Some("all@example.org"),
                &[format!("uid=user00001,ou=people,{base}")]
            ),
        ))
        .unwrap();
    env.set("/groups/search_base", json!(format!("ou=groups,{base}")));
    env.pass();
    env.set("/groups/search_filter", json!("(cn=nothing-matches)"));
    let run = env.run(&[]);
    run.expect(4);
    assert!(run.stderr.contains("group search returned no groups"), "{}", run.stderr);
    assert!(alias(&env.emu.aliases(), "all@example.org").is_some());
}
