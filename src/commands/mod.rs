//! The commands: `init`, `check`, `status`, and the sync pass (no subcommand).

pub mod admins;
pub mod check;
pub mod incremental;
pub mod init;
pub mod status;
pub mod sync;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::{self, Command, Parsed};
use crate::config::{self, Config, ConfigLocation, EnvSecrets, WhenMissing};
use crate::error::{Error, Result, exit};
use crate::output::{Output, eprint_line, print_stdout};

/// The time of day, in Unix seconds: read here, at the command's edge, and handed to the core.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The whole program: arguments in, exit code out.
pub fn main_with_args(program: &str, args: &[String]) -> u8 {
    let cli = match cli::parse(program, args) {
        Parsed::Run(cli) => cli,
        Parsed::Help(text) => {
            print_stdout(&text);
            return exit::OK;
        }
        Parsed::UsageError(text) => {
            eprintln!("{}", text.trim_end());
            eprintln!("Run {program} --help for usage.");
            return exit::CONFIG;
        }
    };
    if cli.version {
        print_stdout(&format!("mailcow-ldap-sync {}\n", env!("CARGO_PKG_VERSION")));
        return exit::OK;
    }
    let out = Output {
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    let location = ConfigLocation::resolve(
        cli.config_flag().map(|p| p.as_path()),
        std::env::var("MAILCOW_LDAP_SYNC_CONFIG").ok(),
    );
    let result = match &cli.command {
        Some(Command::Init(_)) => init::run(&location.path, &out),
        Some(Command::Status(args)) => load(&location, &out, WhenMissing::Fail).and_then(|c| {
            alert_insecure(&c, &out);
            status::run(&c, args.json)
        }),
        Some(Command::Check(args)) => load(&location, &out, WhenMissing::Fail).and_then(|mut c| {
            c.mailcow.verify_tls = !(args.do_not_verify || cli.do_not_verify);
            check::run(&c, args.json || cli.json)
        }),
        None => load(&location, &out, WhenMissing::WriteTemplate).and_then(|c| sync::run(c, &cli, &out)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprint_line(&format!("error: {e}"));
            e.exit_code()
        }
    }
}

fn load(location: &ConfigLocation, out: &Output, missing: WhenMissing) -> Result<Config> {
    let loaded = config::load(location, &EnvSecrets::from_env(), missing)?;
    // Loose modes of files holding secrets: shown under -q too.
    for warning in &loaded.warnings {
        out.alert(warning);
    }
    Ok(loaded.config)
}

/// The config's insecure settings, one `warning:` line each, also under `-q`.
pub fn alert_insecure(config: &Config, out: &Output) {
    for warning in config.security_warnings() {
        out.alert(&warning);
    }
}

pub fn require_api_key(config: &Config) -> Result<()> {
    if config.mailcow.api_key.is_empty() {
        return Err(Error::config(
            &config.file,
            Some("mailcow_api_key"),
            "is empty; create a read-write API key in mailcow (System → Configuration → Access → API) and set it here, in mailcow_api_key_file or in $MAILCOW_API_KEY",
        ));
    }
    Ok(())
}
