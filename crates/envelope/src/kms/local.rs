//! The embedded local KMS for `residency dev` and tests: 256-bit master keys in files,
//! AES-256-GCM wrapping bound to the encryption context and the master key's id.
//!
//! Layout under its directory (0700): `region` (the one region it serves), `current` (the
//! name of the master key new data keys are wrapped under) and `keys/<name>.key` (32 random
//! bytes each, 0600). Old master keys stay after a rotation so that keys wrapped under them
//! still unwrap until the caller has rewrapped everything. Master keys never leave this
//! module, and nothing here prints key bytes.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use model::RegionId;
use zeroize::Zeroizing;

use super::{EncryptionContext, GeneratedKey, Kms, KmsError, KmsKind, WrappedKey};
use crate::KeyMaterial;

/// First byte of every wrapped key: lets a later format coexist with this one.
const FORMAT_V1: u8 = 1;
const TAG_LEN: usize = 16;
const MASTER_KEY_LEN: usize = 32;
const WRAPPED_LEN: usize = 1 + NONCE_LEN + MASTER_KEY_LEN + TAG_LEN;
/// Master key names are 8 random bytes in lowercase hex.
const NAME_LEN: usize = 16;
/// Domain separation: this associated data can never be mistaken for another protocol's.
const AAD_LABEL: &[u8] = b"residency/local-kms/v1\0";

/// A file-backed KMS for one region.
pub struct LocalKms {
    dir: PathBuf,
    region: RegionId,
    state: RwLock<State>,
}

struct State {
    /// Name of the master key new data keys are wrapped under.
    current: String,
    /// Every master key of the directory, by name.
    keys: HashMap<String, LessSafeKey>,
}

impl fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKms")
            .field("dir", &self.dir)
            .field("region", &self.region)
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl LocalKms {
    /// Opens the KMS in `dir`, creating the directory and a first master key if needed.
    /// Fails when `dir` belongs to another region.
    pub fn open_or_create(dir: &Path, region: RegionId) -> Result<LocalKms, KmsError> {
        let keys_dir = dir.join("keys");
        create_private_dir(dir)?;
        create_private_dir(&keys_dir)?;

        let region_path = dir.join("region");
        match fs::read_to_string(&region_path) {
            Ok(text) if text.trim() == region.as_str() => {}
            Ok(text) => {
                return Err(KmsError::Other(format!(
                    "local KMS directory {} belongs to region {}, not {region}",
                    dir.display(),
                    text.trim()
                )));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&region_path, format!("{region}\n").as_bytes())?;
            }
            Err(err) => return Err(io_error("read", &region_path, &err)),
        }

        let kms = LocalKms {
            dir: dir.to_path_buf(),
            region,
            state: RwLock::new(State {
                current: String::new(),
                keys: HashMap::new(),
            }),
        };
        let current_path = dir.join("current");
        let current = match fs::read_to_string(&current_path) {
            Ok(text) => {
                let name = text.trim().to_owned();
                if !is_key_name(&name) {
                    return Err(KmsError::Other(format!(
                        "local KMS file {} does not name a master key",
                        current_path.display()
                    )));
                }
                Some(name)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(io_error("read", &current_path, &err)),
        };
        let keys = load_keys(&keys_dir)?;
        match current {
            Some(name) => {
                if !keys.contains_key(&name) {
                    return Err(KmsError::Other(format!(
                        "current local master key {name} is missing from {}",
                        keys_dir.display()
                    )));
                }
                *kms.write_state() = State {
                    current: name,
                    keys,
                };
            }
            None => {
                kms.write_state().keys = keys;
                kms.rotate_master_key()?;
            }
        }
        Ok(kms)
    }

    /// Creates a new master key and makes it current; returns its key id. Keys wrapped
    /// under older master keys still unwrap; [`Kms::re_encrypt`] moves them to this one.
    pub fn rotate_master_key(&self) -> Result<String, KmsError> {
        let mut state = self.write_state();
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        aws_lc_rs::rand::fill(bytes.as_mut())
            .map_err(|_| KmsError::Other("the system random generator failed".into()))?;
        let name = hex::encode(rand::random::<[u8; NAME_LEN / 2]>());
        let key = master_key(bytes.as_ref())?;
        // The key file is durable before `current` names it, so a crash in between leaves
        // an unused key, never a current name without its key.
        write_atomic(&self.key_path(&name), bytes.as_ref())?;
        write_atomic(&self.dir.join("current"), format!("{name}\n").as_bytes())?;
        state.keys.insert(name.clone(), key);
        state.current = name;
        Ok(self.key_id_of(&state.current))
    }

    /// The directory the keys live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key_path(&self, name: &str) -> PathBuf {
        self.dir.join("keys").join(format!("{name}.key"))
    }

    fn key_id_of(&self, name: &str) -> String {
        format!("local:{}:{name}", self.region)
    }

    /// The master key name in `key_id`, if it is one of this region's local key ids.
    fn name_in<'a>(&self, key_id: &'a str) -> Result<&'a str, KmsError> {
        let mut parts = key_id.splitn(3, ':');
        let (Some("local"), Some(region), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(KmsError::Denied);
        };
        if region != self.region.as_str() {
            return Err(KmsError::ForeignKey {
                key_id: key_id.to_owned(),
                region: self.region.to_string(),
            });
        }
        if !is_key_name(name) {
            return Err(KmsError::Denied);
        }
        Ok(name)
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // The state is replaced whole under the lock, so a panic elsewhere cannot leave it
        // half-updated: a poisoned lock is still consistent.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn wrap_under_current(
        &self,
        material: &KeyMaterial,
        context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        let state = self.read_state();
        let key = state
            .keys
            .get(&state.current)
            .ok_or_else(|| KmsError::Other("the current local master key is not loaded".into()))?;
        let key_id = self.key_id_of(&state.current);
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| KmsError::Other("the system random generator failed".into()))?;
        // Sealed in place: the buffer holds plaintext until it is encrypted.
        let mut in_out = Zeroizing::new(material.expose().to_vec());
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(associated_data(&key_id, context)),
            &mut *in_out,
        )
        .map_err(|_| KmsError::Other("wrapping the data key failed".into()))?;
        let mut ciphertext = Vec::with_capacity(WRAPPED_LEN);
        ciphertext.push(FORMAT_V1);
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&in_out);
        Ok(WrappedKey { key_id, ciphertext })
    }

    fn unwrap(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<KeyMaterial, KmsError> {
        let name = self.name_in(&wrapped.key_id)?;
        let bytes = &wrapped.ciphertext;
        if bytes.len() != WRAPPED_LEN || bytes[0] != FORMAT_V1 {
            return Err(KmsError::Denied);
        }
        let nonce: [u8; NONCE_LEN] = bytes[1..1 + NONCE_LEN]
            .try_into()
            .map_err(|_| KmsError::Denied)?;
        let state = self.read_state();
        let key = state.keys.get(name).ok_or(KmsError::Denied)?;
        let mut in_out = Zeroizing::new(bytes[1 + NONCE_LEN..].to_vec());
        let plaintext = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(&wrapped.key_id, context)),
                in_out.as_mut_slice(),
            )
            .map_err(|_| KmsError::Denied)?;
        KeyMaterial::from_slice(plaintext).ok_or(KmsError::Denied)
    }
}

#[async_trait]
impl Kms for LocalKms {
    fn kind(&self) -> KmsKind {
        KmsKind::Local
    }

    fn region(&self) -> &RegionId {
        &self.region
    }

    fn key_id(&self) -> String {
        self.key_id_of(&self.read_state().current)
    }

    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
    ) -> Result<GeneratedKey, KmsError> {
        let material = KeyMaterial::random();
        let wrapped = self.wrap_under_current(&material, context)?;
        Ok(GeneratedKey { material, wrapped })
    }

    async fn decrypt(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<KeyMaterial, KmsError> {
        self.unwrap(wrapped, context)
    }

    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        let material = self.unwrap(wrapped, context)?;
        self.wrap_under_current(&material, context)
    }

    async fn check(&self) -> Result<(), KmsError> {
        let path = self.key_path(&self.read_state().current);
        let bytes = Zeroizing::new(tokio::fs::read(&path).await.map_err(|err| {
            KmsError::Unavailable(format!("read local master key {}: {err}", path.display()))
        })?);
        if bytes.len() != MASTER_KEY_LEN {
            return Err(KmsError::Other(format!(
                "local master key {} is corrupt",
                path.display()
            )));
        }
        Ok(())
    }
}

/// The associated data of a wrapped key: the key id and the encryption context, each
/// length-prefixed so that no two different contexts encode alike. The context is a
/// `BTreeMap`, so its pairs come sorted.
fn associated_data(key_id: &str, context: &EncryptionContext) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).expect("context entries are far below 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(AAD_LABEL);
    put(&mut out, key_id.as_bytes());
    let count = u32::try_from(context.len()).expect("fewer than 2^32 context pairs");
    out.extend_from_slice(&count.to_be_bytes());
    for (key, value) in context {
        put(&mut out, key.as_bytes());
        put(&mut out, value.as_bytes());
    }
    out
}

fn is_key_name(name: &str) -> bool {
    name.len() == NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn master_key(bytes: &[u8]) -> Result<LessSafeKey, KmsError> {
    let unbound = UnboundKey::new(&AES_256_GCM, bytes)
        .map_err(|_| KmsError::Other("a local master key is not 32 bytes long".into()))?;
    Ok(LessSafeKey::new(unbound))
}

fn load_keys(keys_dir: &Path) -> Result<HashMap<String, LessSafeKey>, KmsError> {
    let mut keys = HashMap::new();
    let entries = fs::read_dir(keys_dir).map_err(|err| io_error("list", keys_dir, &err))?;
    for entry in entries {
        let entry = entry.map_err(|err| io_error("list", keys_dir, &err))?;
        let file_name = entry.file_name();
        // Anything else (an interrupted write's temporary file) is not a key.
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".key")) else {
            continue;
        };
        if !is_key_name(name) {
            continue;
        }
        let path = entry.path();
        let bytes = Zeroizing::new(fs::read(&path).map_err(|err| io_error("read", &path, &err))?);
        if bytes.len() != MASTER_KEY_LEN {
            return Err(KmsError::Other(format!(
                "local master key {} is corrupt",
                path.display()
            )));
        }
        keys.insert(name.to_owned(), master_key(&bytes)?);
    }
    Ok(keys)
}

fn create_private_dir(dir: &Path) -> Result<(), KmsError> {
    fs::create_dir_all(dir).map_err(|err| io_error("create directory", dir, &err))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|err| io_error("set permissions of", dir, &err))
}

/// Writes `bytes` to `path` (mode 0600) so that readers see the old file or the whole new
/// one, and the new one survives a crash: temporary file, fsync, rename, fsync directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KmsError> {
    let dir = path
        .parent()
        .ok_or_else(|| KmsError::Other(format!("{} has no parent", path.display())))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|err| io_error("create", &tmp, &err))?;
        file.write_all(bytes)
            .map_err(|err| io_error("write", &tmp, &err))?;
        file.sync_all()
            .map_err(|err| io_error("sync", &tmp, &err))?;
        fs::rename(&tmp, path).map_err(|err| io_error("rename into place", path, &err))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|err| io_error("sync directory", dir, &err))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn io_error(action: &str, path: &Path, err: &std::io::Error) -> KmsError {
    KmsError::Other(format!("{action} {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn associated_data_is_unambiguous() {
        let a = associated_data("k", &context(&[("ab", "c")]));
        let b = associated_data("k", &context(&[("a", "bc")]));
        assert_ne!(a, b);
        assert_ne!(
            associated_data("k1", &context(&[])),
            associated_data("k2", &context(&[]))
        );
    }

    #[test]
    fn files_are_private_and_reopening_keeps_the_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let region = RegionId::parse("eu-central-1").expect("region");
        let kms = LocalKms::open_or_create(dir.path(), region.clone()).expect("create");
        let name = kms.key_id().rsplit(':').next().expect("name").to_owned();
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.path().join(format!("keys/{name}.key"))), 0o600);
        let again = LocalKms::open_or_create(dir.path(), region).expect("reopen");
        assert_eq!(again.key_id(), kms.key_id());
        assert!(format!("{again:?}").starts_with("LocalKms"));

        let other = RegionId::parse("us-east-1").expect("region");
        let err =
            LocalKms::open_or_create(dir.path(), other).expect_err("another region's directory");
        assert!(
            err.to_string().contains("belongs to region eu-central-1"),
            "{err}"
        );
    }
}
