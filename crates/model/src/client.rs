//! Who sent a request, as far as per-client limits go: an opaque key the region router
//! derives from the client's address. Limits further in (the API's budget for tokens that
//! do not verify) are shared out by it, so one client cannot spend what all clients share.

/// A keyed hash of a client's address (an IPv4 address, the /64 of an IPv6 address, or a
/// name a trusted region signed), under a key the router picks per process: equal for one
/// client's requests to one node, meaningless anywhere else. It holds no address, so it
/// may go into memory-only bucket maps; never into a log, a label or a stored row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u64);

impl ClientKey {
    /// A key from the router's keyed hash of the client's address.
    pub const fn from_hash(hash: u64) -> Self {
        Self(hash)
    }

    /// The hash, for a bucket map.
    pub const fn get(self) -> u64 {
        self.0
    }
}
