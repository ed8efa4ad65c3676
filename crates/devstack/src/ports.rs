//! Free loopback ports for local servers.

use std::net::{Ipv4Addr, TcpListener};

/// A loopback port that was free a moment ago. The caller binds it soon after; a server
/// that loses the race fails to start and says so.
pub fn free_loopback_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether `port` on loopback can be bound right now.
pub(crate) fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}
