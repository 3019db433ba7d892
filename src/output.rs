//! Where human-readable lines go. Every line carries DNs, names or server messages that came
//! from LDAP or mailcow, so each one is made terminal-safe on its way out.

use std::io::Write;

use crate::core::model::Warning;
use crate::report;

/// Where messages go, by verbosity: `-q` silences everything but failures and alerts.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub quiet: bool,
    pub verbose: bool,
}

impl Output {
    pub fn warn(&self, message: &str) {
        if !self.quiet {
            eprint_line(&format!("warning: {message}"));
        }
    }

    /// A warning that `-q` does not silence: one that needs an admin's action (a user not
    /// synced, an incomplete view), or a setting that exposes a secret.
    pub fn alert(&self, message: &str) {
        eprint_line(&format!("warning: {message}"));
    }

    /// A warning of the pass by its severity: `alert` when it needs an admin, else `warn`.
    pub fn warning(&self, warning: &Warning) {
        if warning.needs_admin {
            self.alert(&warning.text);
        } else {
            self.warn(&warning.text);
        }
    }

    pub fn info(&self, message: &str) {
        if !self.quiet {
            eprint_line(message);
        }
    }
}

/// One line on stderr, made terminal-safe.
pub fn eprint_line(line: &str) {
    eprintln!("{}", report::terminal_safe(line));
}

/// One human-readable line on stdout, made terminal-safe.
pub fn print_line(line: &str) {
    print_stdout(&format!("{}\n", report::terminal_safe(line)));
}

/// Print to stdout; a closed pipe (`… | head`) is not an error worth a panic.
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
