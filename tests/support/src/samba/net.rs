//! Loopback addresses for Samba DCs, and proof that a listening socket is ours.
//!
//! Samba's LDAP ports are fixed (389, 636, 3268, 3269), so DCs that run at the same time, in
//! this process or another one, must differ by address: each gets its own `127.0.0.X`. A
//! process-wide set keeps this process's DCs apart; a trial bind of all four ports skips
//! addresses some other process holds; and because a rival can still take the ports between
//! that check and Samba's bind, [`listening_pid_owns`] reads `/proc` to confirm that the
//! socket answering on the address belongs to our Samba before the launcher trusts it.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// The TCP ports Samba's `ldap` service listens on: LDAP, LDAPS, Global Catalog (plain, TLS).
pub(super) const PORTS: [u16; 4] = [389, 636, 3268, 3269];
/// The last octets this launcher picks from: 127.0.0.2 … 127.0.0.250.
const FIRST: u32 = 2;
const LAST: u32 = 250;

static IN_USE: Mutex<BTreeSet<u8>> = Mutex::new(BTreeSet::new());
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback address reserved for one DC of this process; dropping it frees it again.
#[derive(Debug)]
pub(super) struct Lease(u8);

impl Lease {
    pub(super) fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, self.0)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut set) = IN_USE.lock() {
            set.remove(&self.0);
        }
    }
}

/// Reserves the next `127.0.0.X` that no DC of this process uses and on which all of
/// [`PORTS`] can be bound right now. The search starts at an offset derived from the process
/// id, so parallel test processes tend to pick different addresses in the first place.
pub(super) fn lease() -> io::Result<Lease> {
    let span = LAST - FIRST + 1;
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let octet = u8::try_from(FIRST + start.wrapping_add(n) % span).unwrap_or(2);
        {
            let mut set = IN_USE.lock().unwrap_or_else(|p| p.into_inner());
            if set.contains(&octet) {
                continue;
            }
            set.insert(octet);
        }
        let lease = Lease(octet);
        if ports_free(lease.ip())? {
            return Ok(lease);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no 127.0.0.X (X in 2..=250) has ports 389/636/3268/3269 free",
    ))
}

/// True if every one of [`PORTS`] can be bound on `ip` right now. Binding them needs root or
/// `CAP_NET_BIND_SERVICE`, as Samba itself does: without, this is an error, not `false`.
fn ports_free(ip: Ipv4Addr) -> io::Result<bool> {
    let mut held = Vec::with_capacity(PORTS.len());
    for port in PORTS {
        match TcpListener::bind((ip, port)) {
            Ok(l) => held.push(l),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot bind {ip}:{port} ({e}): a Samba DC needs its fixed ports 389/636, \
                         so the tests must run as root or with CAP_NET_BIND_SERVICE"
                    ),
                ));
            }
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// True if a socket listening on `ip:port` is open in process `pid`. Reads `/proc/net/tcp`
/// for the socket's inode and looks for it among `/proc/<pid>/fd`.
pub(super) fn listening_pid_owns(ip: Ipv4Addr, port: u16, pid: u32) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // The kernel prints the address as the u32 in memory order, hex; the port in host order.
    let local = format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip.octets()));
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path())
            .map(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_differ_and_are_freed() {
        let a = lease().expect("a");
        let b = lease().expect("b");
        assert_ne!(a.ip(), b.ip());
        let octet = a.0;
        drop(a);
        assert!(!IN_USE.lock().expect("lock").contains(&octet));
    }

    #[test]
    fn finds_our_own_listener() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert!(listening_pid_owns(Ipv4Addr::LOCALHOST, port, std::process::id()));
        assert!(!listening_pid_owns(
            Ipv4Addr::new(127, 0, 0, 3),
            port,
            std::process::id()
        ));
        drop(l);
        assert!(!listening_pid_owns(Ipv4Addr::LOCALHOST, port, std::process::id()));
    }
}
