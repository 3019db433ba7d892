//! TLS client settings for tests that talk LDAPS or StartTLS to a launched slapd or Samba DC.
//!
//! Each instance has its own CA, so a test trusts exactly that CA (or, to prove that
//! verification happens, another instance's). The client stack is the product's: ldap3 with
//! rustls and the ring provider.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ldap3::LdapConnSettings;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// A rustls client config (ring provider) that trusts only the CA(s) in the PEM file `ca_pem`.
/// Panics if the file cannot be read or holds no acceptable certificate.
pub fn client_config_with_ca(ca_pem: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).expect("CA file readable") {
        roots.add(cert.expect("PEM parses")).expect("CA accepted");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// ldap3 settings with a 5 s connect timeout that verify the server against only the CA(s) in
/// `ca_pem` ([`client_config_with_ca`]). Add `.set_starttls(true)` for StartTLS on `ldap://`.
pub fn ldap_settings_with_ca(ca_pem: &Path) -> LdapConnSettings {
    LdapConnSettings::new()
        .set_conn_timeout(Duration::from_secs(5))
        .set_config(client_config_with_ca(ca_pem))
}
