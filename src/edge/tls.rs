//! The one rustls crypto provider of both connections (LDAPS and HTTPS to mailcow): ring's,
//! with ChaCha20-Poly1305 offered first when the CPU has no AES instructions (most ARMv7
//! routers and NAS), where it is faster than software AES-GCM and constant-time; where AES is
//! in hardware, rustls's own order (AES-GCM first) is kept.

use std::sync::{Arc, OnceLock};

use rustls::CipherSuite;
use rustls::crypto::CryptoProvider;

/// The provider; the first call also installs it as the process default, which ldap3 uses
/// when it builds its own TLS config (no `ldap.ca_file`).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = rustls::crypto::ring::default_provider();
            if !aes_in_hardware() {
                prefer_chacha(&mut provider);
            }
            let _ = provider.clone().install_default();
            Arc::new(provider)
        })
        .clone()
}

/// ChaCha20-Poly1305 suites first, the others after them in their order (a stable sort).
fn prefer_chacha(provider: &mut CryptoProvider) {
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    });
}

#[cfg(target_arch = "x86_64")]
fn aes_in_hardware() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn aes_in_hardware() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
}

/// 32-bit ARM and the rest: the kernel's `Features` line (ARMv8 cores running a 32-bit OS
/// show `aes` there); without one, assume no AES.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn aes_in_hardware() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .filter(|l| l.starts_with("Features"))
            .any(|l| l.split_whitespace().any(|w| w == "aes"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chacha_first_rest_in_order() {
        let mut p = rustls::crypto::ring::default_provider();
        let before: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        prefer_chacha(&mut p);
        let after: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(after.len(), before.len());
        assert_eq!(after[0], CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        let rest: Vec<_> = before.iter().filter(|s| !format!("{s:?}").contains("CHACHA")).collect();
        let after_rest: Vec<_> = after.iter().filter(|s| !format!("{s:?}").contains("CHACHA")).collect();
        assert_eq!(rest, after_rest);
    }
}
