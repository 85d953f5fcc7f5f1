//! The per-client-address connection cap (`limits.max_connections_per_client`): one address
//! cannot take every connection slot. A connection over the cap is closed right after
//! accept, before any TLS work; the count is given back when a connection ends.
//!
//! Off by default: clients behind one NAT or proxy share an address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Open connections per client address.
pub(super) struct PerClient {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted on drop.
pub(super) struct ClientSlot {
    owner: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    pub(super) fn new(cap: usize) -> Arc<Self> {
        Arc::new(PerClient { cap, open: Mutex::new(HashMap::new()) })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new connection from `ip`, or `None` when `ip` already holds `cap`.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut open = self.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot { owner: self.clone(), ip })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.owner.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_at_most_cap_connections() {
        let caps = PerClient::new(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = caps.admit(a);
        let second = caps.admit(a);
        assert!(first.is_some() && second.is_some());
        assert!(caps.admit(a).is_none(), "a third connection from one address");
        assert!(caps.admit(b).is_some(), "another address is not affected");
        drop(first);
        assert!(caps.admit(a).is_some(), "a closed connection gives its place back");
        drop(second);
    }
}
