//! The catalogue as a whole: every region file of a directory, validated one by one and as a
//! set (no region defined twice, no bucket shared between regions).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use model::RegionId;

use crate::CatalogError;
use crate::raw;
use crate::spec::{self, RegionSpec};

/// All regions of a catalogue directory, keyed and iterated by id.
#[derive(Debug, Clone)]
pub struct Catalog {
    dir: PathBuf,
    regions: BTreeMap<RegionId, RegionSpec>,
}

impl Catalog {
    /// Loads every `*.toml` file of `dir` (sorted by name; other files and hidden files are
    /// ignored), validates each, then the set. The first error found is returned.
    pub fn load_dir(dir: &Path) -> Result<Self, CatalogError> {
        let files = region_files(dir)?;
        if files.is_empty() {
            return Err(CatalogError::Empty {
                dir: dir.to_owned(),
            });
        }

        let mut parsed = Vec::with_capacity(files.len());
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| CatalogError::Io {
                path: file.clone(),
                source,
            })?;
            let raw = raw::parse_region(&text, &file)?;
            let id = spec::parse_id(&raw.id, &file)?;
            parsed.push((file, raw, id));
        }

        // Duplicates before file names: a copied file names the region it copies, and
        // "defined twice" says more than "wrong file name".
        let mut first_seen: BTreeMap<&RegionId, &Path> = BTreeMap::new();
        for (file, _, id) in &parsed {
            if let Some(first) = first_seen.insert(id, file) {
                return Err(CatalogError::Duplicate {
                    id: id.clone(),
                    first: first.to_owned(),
                    second: file.clone(),
                });
            }
        }

        let mut regions = BTreeMap::new();
        for (file, raw, id) in parsed {
            let spec = spec::validate(raw, id, &file)?;
            spec::check_file_name(&spec.id, &file)?;
            regions.insert(spec.id.clone(), spec);
        }
        check_buckets(&regions)?;
        Ok(Self {
            dir: dir.to_owned(),
            regions,
        })
    }

    /// The directory the catalogue was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn region(&self, id: &RegionId) -> Option<&RegionSpec> {
        self.regions.get(id)
    }

    /// Every region, sorted by id.
    pub fn regions(&self) -> impl Iterator<Item = &RegionSpec> {
        self.regions.values()
    }

    /// Every region id, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &RegionId> {
        self.regions.keys()
    }

    /// Number of regions; a loaded catalogue has at least one.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Always false for a loaded catalogue; here for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }
}

/// The region files of `dir`, sorted by file name.
fn region_files(dir: &Path) -> Result<Vec<PathBuf>, CatalogError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| CatalogError::Io { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Editors leave `.#name.toml` locks and similar hidden files next to the real ones.
        if name.starts_with('.') || path.extension().is_none_or(|ext| ext != "toml") {
            continue;
        }
        // Follows symlinks: a linked region file counts, a directory named `x.toml` does not.
        let metadata = std::fs::metadata(&path).map_err(io_err(&path))?;
        if metadata.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// One region's use of a bucket: all of it (data, audit) or a prefix of it (analytics).
struct Claim<'a> {
    bucket: &'a str,
    prefix: Option<&'a str>,
    spec: &'a RegionSpec,
    field: &'static str,
}

/// S3 bucket names are global, and a region's buckets hold its data only: no two regions may
/// share a data or audit bucket, and regions sharing the analytics bucket export under
/// prefixes that do not overlap.
fn check_buckets(regions: &BTreeMap<RegionId, RegionSpec>) -> Result<(), CatalogError> {
    let mut claims: Vec<Claim<'_>> = Vec::new();
    for spec in regions.values() {
        for claim in claims_of(spec) {
            if let Some(other) = claims.iter().find(|other| conflicts(&claim, other)) {
                return Err(conflict_error(&claim, other));
            }
            claims.push(claim);
        }
    }
    Ok(())
}

fn claims_of(spec: &RegionSpec) -> [Claim<'_>; 3] {
    let whole = |bucket, field| Claim {
        bucket,
        prefix: None,
        spec,
        field,
    };
    [
        whole(&spec.storage.data_bucket, "storage.data_bucket"),
        whole(&spec.storage.audit_bucket, "storage.audit_bucket"),
        Claim {
            bucket: &spec.analytics.bucket,
            prefix: Some(&spec.analytics.prefix),
            spec,
            field: "analytics.bucket",
        },
    ]
}

fn conflicts(a: &Claim<'_>, b: &Claim<'_>) -> bool {
    a.bucket == b.bucket
        && match (a.prefix, b.prefix) {
            (Some(a), Some(b)) => a.starts_with(b) || b.starts_with(a),
            _ => true,
        }
}

fn conflict_error(claim: &Claim<'_>, other: &Claim<'_>) -> CatalogError {
    let file = &claim.spec.source;
    let other_at = format!(
        "{} ({}: {})",
        other.spec.id,
        other.spec.source.display(),
        other.field
    );
    match (claim.prefix, other.prefix) {
        (Some(prefix), Some(other_prefix)) => CatalogError::invalid(
            file,
            "analytics.prefix",
            format!(
                "prefix `{prefix}` overlaps prefix `{other_prefix}` of region {other_at} in bucket `{}`; each region exports under a prefix of its own",
                claim.bucket
            ),
        ),
        _ => CatalogError::invalid(
            file,
            claim.field,
            format!(
                "bucket `{}` is also used by region {other_at}; a region's data and audit buckets are its own",
                claim.bucket
            ),
        ),
    }
}
