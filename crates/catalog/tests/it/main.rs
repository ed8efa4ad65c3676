//! Integration tests of the region catalogue: the repository's real `regions/`, the committed
//! bad fixtures, and one bad edit at a time of a good catalogue in a temporary directory.

mod bad;
mod fixtures;
mod real;

use std::path::{Path, PathBuf};

use catalog::{Catalog, CatalogError};
use tempfile::TempDir;

/// The repository's `regions/`.
fn regions_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../regions"))
}

/// A committed fixture directory under `tests/fixtures/`.
fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")).join(name)
}

/// A temporary copy of the real catalogue, to break one file of.
fn good_copy() -> TempDir {
    let dir = tempfile::tempdir().expect("create temp dir");
    for entry in std::fs::read_dir(regions_dir()).expect("read regions/") {
        let path = entry.expect("list regions/").path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            let name = path.file_name().expect("file has a name");
            std::fs::copy(&path, dir.path().join(name)).expect("copy region file");
        }
    }
    dir
}

/// Replaces the first `from` in `dir/file` by `to`; `from` must be there.
fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("read region file");
    assert!(text.contains(from), "{from:?} is not in {}", path.display());
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write region file");
}

fn load_err(dir: &Path) -> CatalogError {
    match Catalog::load_dir(dir) {
        Ok(catalog) => panic!(
            "expected {} to be refused, loaded {:?}",
            dir.display(),
            catalog.ids().collect::<Vec<_>>()
        ),
        Err(err) => err,
    }
}

/// Asserts that `err` is about `dir/file`, field `field`, and that its message starts by
/// naming both; returns the message.
fn assert_names(err: &CatalogError, dir: &Path, file: &str, field: &str) -> String {
    let path = dir.join(file);
    let message = err.to_string();
    assert_eq!(err.file(), Some(path.as_path()), "{message}");
    assert_eq!(err.field(), Some(field), "{message}");
    let prefix = format!("{}: {field}: ", path.display());
    assert!(
        message.starts_with(&prefix),
        "{message:?} should start with {prefix:?}"
    );
    message
}
