//! The client's address as the signed forwarding header names it, written on the stack.

use std::net::IpAddr;

/// The client's address as the forwarding header names it (an IP address, or `unknown`
/// when the server gave none), written on the stack: it is signed and sent, never kept.
pub(crate) struct ClientAddress {
    bytes: [u8; ClientAddress::CAPACITY],
    len: usize,
}

impl ClientAddress {
    /// The longest IPv6 text (`ffff:…:255.255.255.255`) is 45 bytes.
    const CAPACITY: usize = 48;

    pub(crate) fn unknown() -> Self {
        Self::from_text("unknown")
    }

    /// `ip` as `Display` writes it; IPv4 without the formatting machinery, which costs
    /// more than the rest of building the forwarding headers.
    pub(crate) fn ip(ip: IpAddr) -> Self {
        let mut text = Self {
            bytes: [0; Self::CAPACITY],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(_) => {
                use std::io::Write as _;
                let mut rest = &mut text.bytes[..];
                if write!(rest, "{ip}").is_err() {
                    return Self::from_text("unknown");
                }
                let left = rest.len();
                text.len = Self::CAPACITY - left;
            }
        }
        text
    }

    fn from_text(s: &str) -> Self {
        let mut text = Self {
            bytes: [0; Self::CAPACITY],
            len: 0,
        };
        for &b in s.as_bytes() {
            text.push(b);
        }
        text
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits, dots, colons, hex letters and `unknown` are written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("unknown")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_read_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.168.100.9",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "1111:2222:3333:4444:5555:6666:7777:8888",
        ] {
            let ip: IpAddr = ip.parse().expect("address");
            assert_eq!(ClientAddress::ip(ip).as_str(), ip.to_string());
        }
    }
}
