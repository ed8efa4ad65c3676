//! Request ids for requests that arrive without one: random (v4) UUIDs from the thread's
//! generator (ChaCha, seeded from the OS), written into the caller's buffer: no system
//! call and no allocation per request. The node's API and the router both use it.

/// Bytes of a request id (a hyphenated UUID).
pub const REQUEST_ID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

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
    fn ids_are_distinct_v4_uuids() {
        let (mut a, mut b) = ([0u8; REQUEST_ID_LEN], [0u8; REQUEST_ID_LEN]);
        let (a, b) = (new_request_id(&mut a), new_request_id(&mut b));
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(a).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
    }
}
