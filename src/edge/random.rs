//! The operating system's random source: keys, random passwords, temporary file names.

/// Bytes from the operating system's random source.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; n];
    // The OS random source does not fail on any system this runs on; if it did, a
    // fingerprint key of zeros only weakens change detection, it leaks nothing.
    let _ = ring::rand::SystemRandom::new().fill(&mut buf);
    buf
}
