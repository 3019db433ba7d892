//! The command line of INTERFACE.md, as argh structs and nothing else.
//!
//! Parsing is done with `FromArgs::from_args` rather than `argh::from_env`, because argh's own
//! helper exits with 1 on a usage error and our contract says 2.

use std::path::PathBuf;

use argh::FromArgs;

/// Copy the users of an LDAP directory into mailcow. One run = one sync pass: read LDAP and
/// mailcow once each, write only what differs, and remember in a small SQLite file which
/// mailboxes this tool manages. Mailboxes it did not create or adopt are never touched.
#[derive(FromArgs, Debug, Default)]
#[argh(
    help_triggers("-h", "--help", "help"),
    example = "First run (writes config.json to edit):  {command_name}\n  Check the setup, then preview:  {command_name} check && {command_name} --dry-run\n  Crontab, every 5 minutes:  */5 * * * * /usr/local/bin/{command_name} -q -c /etc/mailcow-ldap-sync/config.json",
    note = "The config path is --config, else $MAILCOW_LDAP_SYNC_CONFIG, else ./config.json if it exists, else /etc/mailcow-ldap-sync/config.json. Only a pass (no subcommand) with no config anywhere writes a template, at ./config.json. Relative paths inside it are relative to its own directory. Secrets may also come from $LDAP_BIND_PW and $MAILCOW_API_KEY.",
    error_code(0, "pass complete (or dry-run finished)"),
    error_code(1, "LDAP or mailcow unreachable, bind refused, API key rejected"),
    error_code(2, "usage or config error (also: template written, edit it)"),
    error_code(3, "pass complete but some mailboxes failed (named in the output)"),
    error_code(
        4,
        "refused by a safety guard (too many removals, empty LDAP result); nothing written"
    ),
    error_code(5, "another pass is running")
)]
pub struct Cli {
    /// config file (default: $MAILCOW_LDAP_SYNC_CONFIG, else ./config.json if it exists, else
    /// /etc/mailcow-ldap-sync/config.json)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,

    /// show what would change; write nothing to mailcow or the state file
    #[argh(switch)]
    pub dry_run: bool,

    /// go ahead although a safety guard would refuse the pass
    #[argh(switch)]
    pub force: bool,

    /// with ldap.incremental on: read everything this pass (a full pass)
    #[argh(switch)]
    pub full: bool,

    /// accepted for compatibility: only what differs is ever written
    #[argh(switch)]
    #[allow(dead_code, reason = "accepted and ignored, for the original tool's cron lines")]
    pub update_only_on_change_by_ldap: bool,

    /// use this LDAP filter instead of ldap.user_search_filter for this pass
    #[argh(option)]
    pub override_filter: Option<String>,

    /// do not verify mailcow's TLS certificate
    #[argh(switch)]
    pub do_not_verify: bool,

    /// print a JSON report of every change on stdout
    #[argh(switch)]
    pub json: bool,

    /// write Prometheus textfile metrics here after the pass
    #[argh(option)]
    pub metrics_file: Option<PathBuf>,

    /// print nothing on success (for cron: its mail becomes the alert)
    #[argh(switch, short = 'q')]
    pub quiet: bool,

    /// print one line per mailbox change
    #[argh(switch, short = 'v')]
    pub verbose: bool,

    /// print the version and exit
    #[argh(switch, short = 'V')]
    pub version: bool,

    #[argh(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands besides the default sync pass.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Check(CheckArgs),
    Init(InitArgs),
    Status(StatusArgs),
}

/// Bind to LDAP, count the users, verify that the mailcow API key works and may write.
/// Changes nothing.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check", help_triggers("-h", "--help", "help"))]
pub struct CheckArgs {
    /// config file
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,

    /// do not verify mailcow's TLS certificate
    #[argh(switch)]
    pub do_not_verify: bool,

    /// print the checks as JSON (each with name, ok, message)
    #[argh(switch)]
    pub json: bool,
}

/// Write a config template (mode 0600), creating missing directories (mode 0700); never
/// overwrites an existing file.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "init", help_triggers("-h", "--help", "help"))]
pub struct InitArgs {
    /// where to write it (default: where a pass looks, see --help)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Show what the state database knows: managed mailboxes and the last passes.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status", help_triggers("-h", "--help", "help"))]
pub struct StatusArgs {
    /// config file
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,

    /// print it as JSON
    #[argh(switch)]
    pub json: bool,
}

/// What parsing the command line gave: run something, or print help/usage and exit.
pub enum Parsed {
    Run(Box<Cli>),
    /// `--help`: print this on stdout, exit 0.
    Help(String),
    /// A usage error: print this on stderr, exit 2.
    UsageError(String),
}

/// Parse `args` (without the program name). `program` is what the help shows.
pub fn parse(program: &str, args: &[String]) -> Parsed {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match Cli::from_args(&[program], &args) {
        Ok(cli) => Parsed::Run(Box::new(cli)),
        Err(early) => match early.status {
            Ok(()) => Parsed::Help(early.output),
            Err(()) => Parsed::UsageError(early.output),
        },
    }
}

impl Cli {
    /// The `-c` given to the subcommand wins over one given before it.
    pub fn config_flag(&self) -> Option<&PathBuf> {
        let sub = match &self.command {
            Some(Command::Check(a)) => a.config.as_ref(),
            Some(Command::Init(a)) => a.config.as_ref(),
            Some(Command::Status(a)) => a.config.as_ref(),
            None => None,
        };
        sub.or(self.config.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(args: &[&str]) -> Cli {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse("mailcow-ldap-sync", &args) {
            Parsed::Run(cli) => *cli,
            Parsed::Help(h) => panic!("unexpected help: {h}"),
            Parsed::UsageError(e) => panic!("unexpected usage error: {e}"),
        }
    }

    #[test]
    fn original_tool_flags_parse() {
        let cli = parse_ok(&[
            "--update-only-on-change-by-ldap",
            "--override-filter",
            "(uid=a*)",
            "--do-not-verify",
        ]);
        assert!(cli.update_only_on_change_by_ldap);
        assert!(cli.do_not_verify);
        assert_eq!(cli.override_filter.as_deref(), Some("(uid=a*)"));
        assert!(cli.command.is_none());
    }

    #[test]
    fn subcommand_config_wins_over_top_level() {
        let cli = parse_ok(&["-c", "/a.json", "status", "-c", "/b.json", "--json"]);
        assert_eq!(cli.config_flag().unwrap(), &PathBuf::from("/b.json"));
        let cli = parse_ok(&["-c", "/a.json", "check"]);
        assert_eq!(cli.config_flag().unwrap(), &PathBuf::from("/a.json"));
    }

    #[test]
    fn unknown_flag_is_a_usage_error() {
        let args = vec!["--frobnicate".to_string()];
        assert!(matches!(parse("x", &args), Parsed::UsageError(_)));
        for help in ["--help", "-h", "help"] {
            let args = vec![help.to_string()];
            match parse("x", &args) {
                Parsed::Help(h) => assert!(h.contains("--dry-run") && h.contains("Error codes")),
                _ => panic!("{help} must be help"),
            }
        }
        for sub in ["check", "init", "status"] {
            let args = vec![sub.to_string(), "-h".to_string()];
            match parse("x", &args) {
                Parsed::Help(h) => assert!(h.contains(&format!("Usage: x {sub}")), "{h}"),
                _ => panic!("{sub} -h must be help"),
            }
        }
    }

    #[test]
    fn short_h_as_an_option_value_is_a_value() {
        let cli = parse_ok(&["--override-filter", "-h"]);
        assert_eq!(cli.override_filter.as_deref(), Some("-h"));
        assert!(parse_ok(&["-V"]).version);
    }
}
