//! `init`: write a config template.

use std::path::Path;

use crate::config;
use crate::error::{Result, exit};
use crate::output::Output;

pub fn run(path: &Path, out: &Output) -> Result<u8> {
    if let Some(dir) = config::write_template(path)? {
        out.info(&format!("created {} (mode 0700)", dir.display()));
    }
    out.info(&format!(
        "wrote a config template to {} (mode 0600); edit ldap.uri, ldap.bind_dn, ldap.bind_pw, ldap.user_search_base, mailcow_host and mailcow_api_key",
        path.display()
    ));
    Ok(exit::OK)
}
