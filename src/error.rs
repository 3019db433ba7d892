//! One error type for everything that stops a pass, and the exit code each one means.
//!
//! Item failures (one mailbox that mailcow refused) are not errors: they are recorded in the
//! report and turn the exit code into 3 at the end. An `Error` is what makes the whole pass
//! stop, and its `Display` is the one line a cron mail shows, so each variant carries the
//! context an admin needs (which key, which server, which file) and never a secret.

use std::fmt;
use std::path::PathBuf;

/// Exit codes of INTERFACE.md.
pub mod exit {
    /// Pass complete, every planned change applied (or dry-run finished).
    pub const OK: u8 = 0;
    /// Could not complete: LDAP or mailcow unreachable, bind refused, API key rejected.
    pub const UNREACHABLE: u8 = 1;
    /// Usage or config error (including "template written, please edit it").
    pub const CONFIG: u8 = 2;
    /// Pass complete but some items failed.
    pub const ITEMS_FAILED: u8 = 3;
    /// Refused by a safety guard; nothing was written.
    pub const GUARD: u8 = 4;
    /// Another pass holds the lock.
    pub const LOCKED: u8 = 5;
}

/// Everything that stops a pass before it completes.
#[derive(Debug)]
pub enum Error {
    /// The command line could not be understood.
    Usage(String),
    /// The config file is missing, malformed or inconsistent; `key` is the full key path when
    /// one key is at fault (`ldap.user_mapping.mail`).
    Config {
        file: PathBuf,
        key: Option<String>,
        message: String,
    },
    /// No config existed, so a template was written; the admin must edit it first.
    TemplateWritten(PathBuf),
    /// The LDAP server could not be reached, refused the bind, or failed the search.
    Ldap { server: String, message: String },
    /// mailcow could not be reached or answered in a way that stops the pass.
    Mailcow { endpoint: String, message: String },
    /// mailcow rejected the API key (401/403); never retried, since fail2ban bans after 10.
    MailcowAuth { endpoint: String, message: String },
    /// The state database could not be opened, read or written.
    State { file: PathBuf, message: String },
    /// A safety guard refused the pass before any write.
    Guard(String),
    /// Another pass holds the lock file.
    Locked(PathBuf),
    /// A local file could not be read or written.
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit code for this error (INTERFACE.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Config { .. } | Error::TemplateWritten(_) => exit::CONFIG,
            Error::Ldap { .. }
            | Error::Mailcow { .. }
            | Error::MailcowAuth { .. }
            | Error::State { .. }
            | Error::Io { .. } => exit::UNREACHABLE,
            Error::Guard(_) => exit::GUARD,
            Error::Locked(_) => exit::LOCKED,
        }
    }

    pub(crate) fn config(file: impl Into<PathBuf>, key: Option<&str>, message: impl Into<String>) -> Error {
        Error::Config {
            file: file.into(),
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::Config {
                file,
                key: Some(key),
                message,
            } => write!(f, "config {}: {key}: {message}", file.display()),
            Error::Config {
                file,
                key: None,
                message,
            } => write!(f, "config {}: {message}", file.display()),
            Error::TemplateWritten(path) => write!(
                f,
                "no config found; wrote a template to {} (mode 0600). Edit ldap.uri, ldap.bind_dn, \
                 ldap.bind_pw, ldap.user_search_base, mailcow_host and mailcow_api_key, then run again",
                path.display()
            ),
            Error::Ldap { server, message } => write!(f, "LDAP {server}: {message}"),
            Error::Mailcow { endpoint, message } => write!(f, "mailcow {endpoint}: {message}"),
            Error::MailcowAuth { endpoint, message } => write!(
                f,
                "mailcow {endpoint}: {message} (not retried: mailcow bans an IP after 10 failed \
                 logins; check mailcow_api_key and the key's allowed IPs)"
            ),
            Error::State { file, message } => write!(f, "state database {}: {message}", file.display()),
            Error::Guard(msg) => write!(f, "refused: {msg}"),
            Error::Locked(path) => write!(
                f,
                "another pass is running (lock {} is held); nothing was changed",
                path.display()
            ),
            Error::Io { path, action, source } => write!(f, "cannot {action} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
