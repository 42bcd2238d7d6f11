//! Ports for the processes a test starts itself (nats-server nodes, the
//! bridge's services), which bind them a moment after the test picked them.
//!
//! Asking the kernel for port 0 and closing it again hands out a port of the
//! ephemeral range, the range every outgoing connection also takes its local
//! port from: with the suites' many connections, another socket can take that
//! port before the process binds it, and the process fails to start. So a
//! port is picked below that range (Linux's default starts at 32768), never
//! twice in one test process, and only if nothing listens on it now.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// Below Linux's default ephemeral range (`net.ipv4.ip_local_port_range`,
/// 32768–60999) and above the ports of common local services.
const RANGE: std::ops::Range<u16> = 20_000..32_000;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port on 127.0.0.1 that nothing listens on, not handed out before in
/// this process.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = rand::random_range(RANGE);
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port in {RANGE:?} on 127.0.0.1 after 1000 tries");
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        assert!(ports.iter().all(|p| RANGE.contains(p)));
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
