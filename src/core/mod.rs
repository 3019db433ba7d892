//! The pure core: what a pass decides, as plain data, with no I/O.
//!
//! Everything here takes values and returns values: the users read from LDAP entries
//! (`directory`), the plan of mailbox changes (`plan`), the plan of alias changes
//! (`aliases`), and the types they share (`model`, `policy`). Nothing here may import an
//! edge (LDAP, mailcow, SQLite, files, clocks): the test below keeps that rule true.

pub mod access;
pub mod admins;
pub mod aliases;
pub mod directory;
pub mod model;
pub mod packed_users;
pub mod plan;
pub mod policy;
pub mod sender_acl;

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Paths a core module must not name: the crate's edges and commands, and the parts of
    /// std and the dependencies that reach outside the process or read the clock.
    const FORBIDDEN: &[&str] = &[
        "crate::edge",
        "crate::commands",
        "crate::config",
        "crate::apply",
        "crate::ldap_read",
        "crate::report",
        "crate::metrics",
        "crate::output",
        "crate::cli",
        "crate::error",
        "std::fs",
        "std::net",
        "std::process",
        "std::thread",
        "std::env",
        "std::io::std",
        "SystemTime",
        "Instant::now",
        "ldap3",
        "ureq",
        "rustls",
        "rusqlite",
    ];

    /// Every `.rs` file under `src/core`, with its text.
    fn core_sources() -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("src/core is readable") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                let mut text = std::fs::read_to_string(&path).expect("a readable source file");
                // This file's own tests name the forbidden paths as data.
                if path.ends_with("mod.rs") {
                    if let Some(at) = text.find("#[cfg(test)]\nmod tests") {
                        text.truncate(at);
                    }
                }
                files.push((path.display().to_string(), text));
            }
        }
        files
    }

    /// The violations of the rule in one file's text: (line number, the path it names).
    fn violations(text: &str) -> Vec<(usize, &'static str)> {
        let mut found = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for &path in FORBIDDEN {
                if code.contains(path) {
                    found.push((n + 1, path));
                }
            }
            // `crate::` must be followed by `core::` (the only crate module the core may use).
            for (at, _) in code.match_indices("crate::") {
                if !code[at..].starts_with("crate::core") {
                    found.push((n + 1, "crate:: outside crate::core"));
                }
            }
        }
        found
    }

    #[test]
    fn the_core_imports_no_edge() {
        let files = core_sources();
        assert!(files.len() >= 6, "expected the core's files, found {}", files.len());
        let mut broken = Vec::new();
        for (path, text) in &files {
            for (line, what) in violations(text) {
                broken.push(format!("{path}:{line}: {what}"));
            }
        }
        assert!(
            broken.is_empty(),
            "the core must not use the edges:\n{}",
            broken.join("\n")
        );
    }

    #[test]
    fn the_rule_catches_an_edge_import() {
        assert_eq!(
            violations("use crate::edge::ldap::LdapConnection;"),
            [(1, "crate::edge"), (1, "crate:: outside crate::core")]
        );
        assert_eq!(violations("let t = std::time::SystemTime::now();"), [(1, "SystemTime")]);
        assert!(violations("use crate::core::model::MIB; // crate::edge is named in a comment only").is_empty());
    }
}
