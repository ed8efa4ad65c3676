//! Request ids for requests that arrive without one: random (v4) UUIDs from the thread's
//! generator (ChaCha, seeded from the OS), written into the caller's buffer: no system
//! call and no allocation per request. The node's API and the router both use it.

/// Bytes of a request id (a hyphenated UUID).
pub const REQUEST_ID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

/// The longest client-sent request id a node keeps.
pub const MAX_CLIENT_REQUEST_ID_LEN: usize = 200;

/// Whether a client-sent `X-Request-Id` is kept (echoed, logged, audited and forwarded)
/// rather than replaced by a generated one: not empty, at most
/// [`MAX_CLIENT_REQUEST_ID_LEN`] bytes, and only visible ASCII, spaces and tabs. The same
/// rule at every node, so that an id is kept or replaced alike whether the request is
/// served where it arrived or forwarded.
pub fn keeps_client_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_CLIENT_REQUEST_ID_LEN
        && value
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// A new request id, written into `buffer`.
pub fn new_request_id(buffer: &mut [u8; REQUEST_ID_LEN]) -> &str {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .encode_lower(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_is_kept_only_when_short_visible_text() {
        assert!(keeps_client_request_id(b"abc def"));
        assert!(keeps_client_request_id(&[b'r'; MAX_CLIENT_REQUEST_ID_LEN]));
        assert!(!keeps_client_request_id(
            &[b'r'; MAX_CLIENT_REQUEST_ID_LEN + 1]
        ));
        assert!(!keeps_client_request_id(b""));
        assert!(!keeps_client_request_id("caf\u{e9}".as_bytes()));
        assert!(!keeps_client_request_id(b"a\x7fb"));
    }

    #[test]
    fn ids_are_distinct_v4_uuids() {
        let (mut a, mut b) = ([0u8; REQUEST_ID_LEN], [0u8; REQUEST_ID_LEN]);
        let (a, b) = (new_request_id(&mut a), new_request_id(&mut b));
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(a).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
    }
}
