//! `manifest.json`: what an embedded collection is (format version, dimension, metric, the model
//! its vectors come from, graph parameters and engine). Written atomically when the collection is
//! made, and again only when `index compact --rebuild` rebuilds its graphs with this build's engine.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::types::{HnswParams, ModelRef};

/// On-disk format of embedded collections written by this version.
pub const FORMAT_VERSION: u32 = 1;

/// File name of the manifest inside a collection directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The manifest of an embedded collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version; a collection of another version is refused.
    pub format_version: u32,
    /// Collection name.
    pub name: String,
    /// Vector dimension.
    pub dim: usize,
    /// Always "cosine" (vectors are stored unit-length).
    pub metric: String,
    /// The bundle the vectors were computed with.
    pub model: ModelRef,
    /// Graph parameters.
    pub hnsw: HnswParams,
    /// The graph engine whose dumps the collection holds (collections made before engines were
    /// recorded hold hnsw_rs dumps).
    #[serde(default = "engine_before_it_was_recorded")]
    pub engine: String,
    /// Seconds since the Unix epoch at creation.
    pub created_unix: u64,
}

fn engine_before_it_was_recorded() -> String {
    "hnsw_rs".into()
}

impl Manifest {
    /// Refuses a collection whose graph dumps another engine wrote, naming the way out.
    pub(crate) fn check_engine(&self, dir: &Path) -> Result<()> {
        if self.engine == crate::graph::ENGINE {
            return Ok(());
        }
        Err(IndexError::Corrupt {
            path: dir.to_path_buf(),
            reason: format!(
                "its graph was built by the {} engine, this build uses {}; rebuild the graph from \
                 the collection's database with `mirage index compact --rebuild --collection {}`",
                self.engine,
                crate::graph::ENGINE,
                self.name
            ),
        })
    }

    pub(crate) fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs_err::read_to_string(&path)?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| IndexError::Corrupt {
            path: dir.to_path_buf(),
            reason: format!("{MANIFEST_FILE}: {e}"),
        })?;
        if m.format_version != FORMAT_VERSION {
            return Err(IndexError::Corrupt {
                path: dir.to_path_buf(),
                reason: format!(
                    "format version {} (this build reads version {FORMAT_VERSION})",
                    m.format_version
                ),
            });
        }
        // Edited by hand or written by another build: its graph settings reach the engine.
        m.hnsw.validate().map_err(|e| IndexError::Corrupt {
            path: dir.to_path_buf(),
            reason: format!("{MANIFEST_FILE}: {e}"),
        })?;
        Ok(m)
    }

    /// Writes to a temporary file, syncs it, renames it into place and syncs the directory, so
    /// the manifest is either absent or whole.
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let mut f = fs_err::File::create(&tmp)?;
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| IndexError::Graph(format!("manifest: {e}")))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs_err::rename(&tmp, dir.join(MANIFEST_FILE))?;
        sync_dir(dir)
    }
}

/// Seconds since the Unix epoch (0 on a clock set before it): creation times in manifests.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs_err::File::open(dir)?.sync_all()?;
    Ok(())
}
