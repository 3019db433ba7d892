//! A user's life over months, with the clock moved by `faketime` (issue 15): leaving with a
//! grace period before the delete, coming back within it.

use std::process::Command;

use serde_json::json;
use sync_test_support::slapd::TestUser;

use crate::util::{BIN, Env, Run, users};

const ADD: &str = "/api/v1/add/mailbox";
const DELETE: &str = "/api/v1/delete/mailbox";

/// A pass (or a subcommand) run `days` days from now.
fn run_days_later(env: &Env, days: u32, args: &[&str]) -> Run {
    env.write_config();
    let out = Command::new("faketime")
        .arg("-f")
        .arg(format!("+{days}d"))
        .arg(BIN)
        .arg("-c")
        .arg(env.config_path())
        .args(args)
        .current_dir(env.dir.path())
        .env_clear()
        .output()
        .expect("faketime runs the binary");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn delete_waits_out_the_grace_period_and_a_returning_user_keeps_the_mailbox() {
    let mut env = Env::start(users(3));
    env.set("/sync/on_removed", json!("delete"));
    env.set("/sync/max_removals", json!(5));
    env.pass();
    assert_eq!(env.emu.mailbox_count(), 3);

    // Two users leave: disabled, not deleted; `status` says when each goes.
    env.slapd.delete_user("user00002").unwrap();
    env.slapd.delete_user("user00003").unwrap();
    run_days_later(&env, 0, &[]).expect(0);
    for gone in ["user00002@example.org", "user00003@example.org"] {
        assert_eq!(
            env.emu.mailbox(gone).expect("still there")["active"],
            json!(0),
            "{gone}"
        );
    }
    let status = run_days_later(&env, 0, &["status", "--json"]);
    status.expect(0);
    let pending = status.json()["pending_deletion"].clone();
    assert_eq!(pending.as_array().unwrap().len(), 2, "{pending}");
    let since = pending[0]["disabled_at"].as_i64().unwrap();
    assert_eq!(pending[0]["delete_after"].as_i64().unwrap(), since + 30 * 86_400);

    // Ten days on, one comes back (same entry, same DN): enabled again, mail kept.
    env.slapd
        .add_users(&[TestUser::new("user00003", "example.org")])
        .unwrap();
    env.emu.reset_counts();
    run_days_later(&env, 10, &[]).expect(0);
    assert_eq!(env.emu.count("POST", ADD), 0, "not created again");
    assert_eq!(env.emu.mailbox("user00003@example.org").unwrap()["active"], json!(1));

    // Day 29: still waiting, nothing written.
    env.emu.reset_counts();
    run_days_later(&env, 29, &[]).expect(0);
    assert_eq!(env.emu.count_writes(), 0, "{:?}", env.emu.requests());
    assert!(env.emu.mailbox("user00002@example.org").is_some());

    // Day 31: the one still gone is deleted; the one who returned stays.
    env.emu.reset_counts();
    let run = run_days_later(&env, 31, &["-v"]);
    run.expect(0);
    assert_eq!(env.emu.count("POST", DELETE), 1, "{}", run.stderr);
    assert!(
        env.emu.mailbox("user00002@example.org").is_none(),
        "deleted after the grace period"
    );
    assert!(env.emu.mailbox("user00003@example.org").is_some());
    let status = run_days_later(&env, 31, &["status", "--json"]);
    assert_eq!(status.json()["pending_deletion"], json!([]));
    assert_eq!(status.json()["managed"], json!(2));
}

#[test]
fn a_grace_period_of_zero_deletes_at_once() {
    let mut env = Env::start(users(3));
    env.set("/sync/on_removed", json!("delete"));
    env.set("/sync/delete_after_days", json!(0));
    env.set("/sync/max_removals", json!(5));
    env.pass();
    env.slapd.delete_user("user00002").unwrap();
    env.pass();
    assert!(env.emu.mailbox("user00002@example.org").is_none());
    assert_eq!(env.emu.mailbox_count(), 2);
}
