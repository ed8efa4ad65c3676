//! Small conversions shared by the row modules.

use crate::StoreError;

/// A 32-byte value (hash, token) read from a `bytea` column.
pub(crate) fn hash32(bytes: &[u8], what: &str) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what}: expected 32 bytes")))
}
