//! Errors from loading the catalogue. Every message names the file and, where there is one,
//! the dotted field path (`database.replicas[0].region`), so an operator can go straight to
//! the line. Messages never echo secret values.

use std::io;
use std::path::{Path, PathBuf};

use model::RegionId;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A directory or file could not be read.
    #[error("read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not TOML of the catalogue's shape: a syntax error (the field is then the
    /// position, `line 3, column 7`), an unknown or missing key, or a value of the wrong type.
    #[error("{}: {field}: {message}", file.display())]
    Parse {
        file: PathBuf,
        field: String,
        message: String,
    },
    /// The file has the right shape but a value breaks a rule of the catalogue.
    #[error("{}: {field}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        field: String,
        message: String,
    },
    /// Two files define the same region.
    #[error("{}: id: region {id} is already defined in {}", second.display(), first.display())]
    Duplicate {
        id: RegionId,
        first: PathBuf,
        second: PathBuf,
    },
    /// The directory holds no region files.
    #[error("{}: no region files (*.toml) in the catalogue directory", dir.display())]
    Empty { dir: PathBuf },
}

impl CatalogError {
    /// The file the error is about: the file read, parsed or validated, or for a duplicate
    /// the second file defining the region. `None` for an empty directory.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::Io { path, .. } => Some(path),
            Self::Parse { file, .. } | Self::Invalid { file, .. } => Some(file),
            Self::Duplicate { second, .. } => Some(second),
            Self::Empty { .. } => None,
        }
    }

    /// The dotted path of the offending field, e.g. `storage.data_bucket` or
    /// `database.replicas[0].region`.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Parse { field, .. } | Self::Invalid { field, .. } => Some(field),
            Self::Duplicate { .. } => Some("id"),
            Self::Io { .. } | Self::Empty { .. } => None,
        }
    }

    pub(crate) fn invalid(
        file: &Path,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            file: file.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }
}
