//! Hostile and odd directory data: each value gets a clear warning or item error, and
//! never a wrong write.

use serde_json::json;
use sync_test_support::slapd::TestUser;

use crate::util::Env;

const MIB: u64 = 1 << 20;

fn user(uid: &str) -> TestUser {
    TestUser::new(uid, "example.org")
}

#[test]
fn odd_values_warn_and_never_become_wrong_writes() {
    let mut long = user("long");
    long.given_name = "L".repeat(400);
    let mut plus = user("plus");
    plus.mail = Some("  Upper.Case+Tag@Example.ORG ".into());
    let mut abc = user("abc");
    abc.quota_mib = Some("abc".into());
    let mut negative = user("negative");
    negative.quota_mib = Some("-5".into());
    let mut absurd = user("absurd");
    absurd.quota_mib = Some("99999999999999999".into());
    let mut bell = user("bell");
    bell.given_name = "Bell\u{7}\u{1b}[31m".into();
    let mut pbkdf2 = user("pbkdf2");
    pbkdf2.password = Some("{PBKDF2-SHA512}10000$c2FsdA==$aGFzaA==".into());
    let mut cleartext = user("cleartext");
    cleartext.password = Some("hunter2-cleartext".into());
    let mut braced = user("braced");
    braced.password = Some("{Summer2024}!".into());
    let mut active = user("active");
    active.active = Some("maybe".into());
    let env = Env::start(vec![
        long, plus, abc, negative, absurd, bell, pbkdf2, cleartext, braced, active,
    ]);
    // A binary (non-UTF-8) password value, as LDIF base64.
    env.slapd
        .apply_ldif(&format!(
            "dn: {}\nchangetype: modify\nreplace: userPassword\nuserPassword:: //57U1NIQX3DKGFiYw==\n\n",
            env.slapd.user_dn("bell")
        ))
        .unwrap();

    let run = env.run(&["--json"]);
    run.expect(0);
    let e = &run.stderr;
    assert!(
        e.contains("abc@example.org: quota `MailQuota` value \"abc\" is not a whole number"),
        "{e}"
    );
    assert!(
        e.contains("negative@example.org: quota `MailQuota` value \"-5\" is negative"),
        "{e}"
    );
    assert!(e.contains("absurd@example.org: quota"), "{e}");
    assert!(
        e.contains("pbkdf2@example.org: password `userPassword` has {PBKDF2-SHA512}"),
        "{e}"
    );
    assert!(
        e.contains("cleartext@example.org: password `userPassword` has a value without a known {SCHEME} prefix"),
        "{e}"
    );
    assert!(
        e.contains("bell@example.org: password `userPassword` has binary value"),
        "{e}"
    );
    assert!(
        e.contains("active@example.org: active `mailActive` value \"maybe\""),
        "{e}"
    );
    assert!(
        e.contains("braced@example.org: password `userPassword` has a value without a known {SCHEME} prefix"),
        "{e}"
    );
    for value in ["hunter2-cleartext", "Summer2024"] {
        assert!(
            !e.contains(value) && !run.stdout.contains(value),
            "never the value, nor a part of it posing as a scheme"
        );
    }

    // Bad quotas fall back to the domain default on create; never -5, never absurd.
    for who in ["abc", "negative", "absurd"] {
        assert_eq!(
            env.mailbox(&format!("{who}@example.org"))["quota"],
            json!(3072 * MIB),
            "{who}"
        );
    }
    assert_eq!(
        env.mailbox("long@example.org")["name"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        255
    );
    assert_eq!(
        env.mailbox("upper.case+tag@example.org")["username"],
        "upper.case+tag@example.org"
    );
    // Users without a usable hash are not created (no cleartext, no re-hashed hash).
    for who in ["pbkdf2", "cleartext", "braced", "bell"] {
        assert!(env.emu.mailbox(&format!("{who}@example.org")).is_none(), "{who}");
    }
    let report = run.json();
    assert_eq!(report["summary"]["skipped"], json!(4));
    assert_eq!(report["summary"]["created"], json!(6));
    assert_eq!(
        env.mailbox("active@example.org")["active"],
        json!(1),
        "an unreadable active flag is not applied"
    );
}

#[test]
fn odd_addresses_are_skipped_naming_the_entry() {
    let mut env = Env::start(vec![
        user("umlaut"),
        user("double"),
        user("huge"),
        user("spaces"),
        user("nomail"),
    ]);
    // displayName takes any UTF-8, so it can carry addresses slapd's `mail` syntax would refuse.
    env.set("/ldap/user_mapping/mail", json!("displayName"));
    for (uid, value) in [
        ("umlaut", "jörg@example.org".to_string()),
        ("double", "a@b@example.org".to_string()),
        ("huge", format!("{}@example.org", "x".repeat(300))),
        ("spaces", "  Spaced@Example.org  ".to_string()),
    ] {
        env.slapd.modify_attr(uid, "displayName", &[&value]).unwrap();
    }
    let run = env.run(&["-v"]);
    run.expect(0);
    let e = &run.stderr;
    assert!(e.contains("skipped uid=umlaut,") && e.contains("non-ASCII"), "{e}");
    assert!(e.contains("skipped uid=double,"), "{e}");
    assert!(e.contains("skipped uid=huge,") && e.contains("longer than 254"), "{e}");
    assert!(
        e.contains("skipped uid=nomail,") && e.contains("no `displayName` attribute"),
        "{e}"
    );
    assert_eq!(env.emu.mailbox_count(), 1);
    assert!(env.emu.mailbox("spaced@example.org").is_some());
}

#[test]
fn duplicate_uids_are_all_skipped_and_nothing_is_removed() {
    let mut env = Env::start(vec![user("a"), user("b"), user("c")]);
    env.set("/ldap/user_mapping/uid", json!("employeeNumber"));
    for (uid, number) in [("a", "1"), ("b", "2"), ("c", "3")] {
        env.slapd.modify_attr(uid, "employeeNumber", &[number]).unwrap();
    }
    env.pass();
    assert_eq!(env.emu.mailbox_count(), 3);
    // Someone copies an employee number: both entries become ambiguous.
    env.slapd.modify_attr("b", "employeeNumber", &["1"]).unwrap();
    env.emu.reset_counts();
    let run = env.run(&["-v"]);
    run.expect(0);
    assert!(run.stderr.contains("uid `1` is shared by 2 entries"), "{}", run.stderr);
    assert_eq!(
        env.emu.count_writes(),
        0,
        "ambiguous users are neither updated nor removed"
    );
    assert!(env.emu.mailboxes().iter().all(|m| m["active"] == json!(1)));
}

#[test]
fn control_bytes_in_a_dn_never_reach_the_terminal() {
    // An entry named with an ANSI colour sequence and a newline (as LDIF base64: `dn::`),
    // without a mail, and one that shares the mail of a clean user.
    let mut nomail = user("evil\u{1b}[31m\nwarning: forged");
    nomail.mail = None;
    let mut twin = user("twin\u{1b}]0;title\u{7}");
    twin.mail = Some("ok@example.org".into());
    let env = Env::start(vec![user("ok"), nomail, twin]);
    for args in [&["-v"][..], &["check"][..]] {
        let run = env.run(args);
        let out = format!("{}{}", run.stdout, run.stderr);
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{args:?}: {out:?}");
        assert!(
            out.contains("skipped uid=evil\\x1b[31m\\x0awarning: forged,ou=people,"),
            "{args:?}: {out}"
        );
        assert!(!out.lines().any(|l| l.starts_with("warning: forged")), "{out}");
        // (slapd returns the `;` of this DN escaped, as `\3B`.)
        assert!(
            out.contains("uid=twin\\x1b]0\\3Btitle\\x07,ou=people,"),
            "{args:?}: {out}"
        );
    }
    // The JSON report keeps the DN as it is, escaped by JSON itself.
    let run = env.run(&["--json", "--dry-run"]);
    let skipped = run.json()["skipped"].to_string();
    assert!(skipped.contains(r"uid=evil\u001b[31m\nwarning: forged"), "{skipped}");
}
