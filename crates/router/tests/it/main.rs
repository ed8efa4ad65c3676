//! Integration tests of the router: regional apps on loopback ports behind the router
//! layer, a shared in-memory directory, real TCP and HTTP/1.1 between them.

mod delay;
mod forwarding;
mod harness;
mod limits;
mod signing;
