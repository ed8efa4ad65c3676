//! An object store in a local directory (the embedded default): one file per object, key
//! segments as path segments under the root.
//!
//! Writes go to `root/.tmp/` first and are renamed into place after `fsync`, so readers
//! never see a partial object and a failed or abandoned put leaves nothing behind.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::{ByteStream, ObjectKey, ObjectStore, ObjectStoreError, ObjectStoreKind};

/// Where in-progress writes live; an object key cannot start with this segment.
const TMP_DIR: &str = ".tmp";
/// Read chunk size: large enough for few syscalls, small enough to keep memory flat.
const READ_CHUNK: usize = 64 * 1024;

/// Objects as files under `root`.
#[derive(Debug, Clone)]
pub struct LocalObjectStore {
    root: PathBuf,
}

impl LocalObjectStore {
    /// Uses `root` (created if missing) as the store.
    pub fn new(root: PathBuf) -> Result<Self, ObjectStoreError> {
        let tmp = root.join(TMP_DIR);
        std::fs::create_dir_all(&tmp).map_err(|err| io_error("create directory", &tmp, &err))?;
        // Absolute, so that `location()` is a usable file URL whatever the working directory.
        let root = std::fs::canonicalize(&root).map_err(|err| io_error("resolve", &root, &err))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &ObjectKey) -> Result<PathBuf, ObjectStoreError> {
        // ObjectKey already refuses `..`, empty segments and absolute paths.
        if key.as_str().split('/').next() == Some(TMP_DIR) {
            return Err(ObjectStoreError::Other(format!(
                "object key {key} would collide with the store's temporary directory"
            )));
        }
        Ok(self.root.join(key.as_str()))
    }
}

#[async_trait]
impl ObjectStore for LocalObjectStore {
    fn kind(&self) -> ObjectStoreKind {
        ObjectStoreKind::Local
    }

    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put(&self, key: &ObjectKey, mut body: ByteStream) -> Result<u64, ObjectStoreError> {
        let path = self.path_of(key)?;
        let tmp = TempFile::new(
            self.root
                .join(TMP_DIR)
                .join(format!("put-{}", hex::encode(rand::random::<[u8; 12]>()))),
        );
        let mut file = tokio::fs::File::create(&tmp.path)
            .await
            .map_err(|err| io_error("create", &tmp.path, &err))?;
        let mut written: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            file.write_all(&chunk)
                .await
                .map_err(|err| io_error("write", &tmp.path, &err))?;
            written += chunk.len() as u64;
        }
        file.flush()
            .await
            .map_err(|err| io_error("write", &tmp.path, &err))?;
        file.sync_all()
            .await
            .map_err(|err| io_error("sync", &tmp.path, &err))?;
        drop(file);
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|err| io_error("create directory", &parent, &err))?;
        tokio::fs::rename(&tmp.path, &path)
            .await
            .map_err(|err| io_error("rename into place", &path, &err))?;
        tmp.disarm();
        // The rename is durable only once its directory is synced.
        sync_dir(&parent).await?;
        Ok(written)
    }

    async fn get(&self, key: &ObjectKey) -> Result<ByteStream, ObjectStoreError> {
        let path = self.path_of(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Err(ObjectStoreError::NotFound(key.clone()));
            }
            Err(err) => return Err(io_error("open", &path, &err)),
        };
        let metadata = file
            .metadata()
            .await
            .map_err(|err| io_error("inspect", &path, &err))?;
        if !metadata.is_file() {
            // A directory of longer keys (`a/b` makes `a` a directory) is not an object.
            return Err(ObjectStoreError::NotFound(key.clone()));
        }
        let stream = ReaderStream::with_capacity(file, READ_CHUNK)
            .map_err(move |err| io_error("read", &path, &err));
        Ok(Box::pin(stream))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectStoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(())
            }
            Err(err) if err.kind() == ErrorKind::IsADirectory => Ok(()),
            Err(err) => Err(io_error("delete", &path, &err)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, ObjectStoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            walk(&root, &root, &prefix, &mut keys)?;
            keys.sort_by(|a: &ObjectKey, b| a.as_str().cmp(b.as_str()));
            Ok(keys)
        })
        .await
        .map_err(|err| ObjectStoreError::Other(format!("list: {err}")))?
    }

    async fn check(&self) -> Result<(), ObjectStoreError> {
        let metadata = tokio::fs::metadata(&self.root).await.map_err(|err| {
            ObjectStoreError::Unavailable(format!("inspect {}: {err}", self.root.display()))
        })?;
        if !metadata.is_dir() {
            return Err(ObjectStoreError::Unavailable(format!(
                "{} is not a directory",
                self.root.display()
            )));
        }
        let probe = TempFile::new(
            self.root
                .join(TMP_DIR)
                .join(format!("check-{}", hex::encode(rand::random::<[u8; 8]>()))),
        );
        tokio::fs::write(&probe.path, b"").await.map_err(|err| {
            ObjectStoreError::Unavailable(format!("write {}: {err}", probe.path.display()))
        })?;
        Ok(())
    }
}

/// A temporary file removed on drop unless disarmed: covers errors, a failing body stream
/// and a put future dropped half-way.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn new(path: PathBuf) -> Self {
        Self { path, armed: true }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn sync_dir(dir: &Path) -> Result<(), ObjectStoreError> {
    let dir_file = tokio::fs::File::open(dir)
        .await
        .map_err(|err| io_error("open", dir, &err))?;
    dir_file
        .sync_all()
        .await
        .map_err(|err| io_error("sync directory", dir, &err))
}

fn io_error(action: &str, path: &Path, err: &std::io::Error) -> ObjectStoreError {
    ObjectStoreError::Other(format!("{action} {}: {err}", path.display()))
}

/// Collects the keys of the files under `dir` that start with `prefix`, skipping the
/// temporary directory and directories the prefix rules out.
fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    keys: &mut Vec<ObjectKey>,
) -> Result<(), ObjectStoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(io_error("list", dir, &err)),
    };
    for entry in entries {
        let entry = entry.map_err(|err| io_error("list", dir, &err))?;
        let path = entry.path();
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let Some(relative) = relative.to_str() else {
            continue;
        };
        if relative == TMP_DIR {
            continue;
        }
        let file_type = entry
            .file_type()
            .map_err(|err| io_error("list", &path, &err))?;
        if file_type.is_dir() {
            let as_prefix = format!("{relative}/");
            if as_prefix.starts_with(prefix) || prefix.starts_with(&as_prefix) {
                walk(root, &path, prefix, keys)?;
            }
        } else if relative.starts_with(prefix)
            && let Ok(key) = ObjectKey::parse(relative)
        {
            keys.push(key);
        }
    }
    Ok(())
}
