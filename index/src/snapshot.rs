//! Snapshot archives: one collection in one checksummed file, written while the collection
//! serves writes and restored under its own or another name (`docs/DESIGN.md`, "Snapshots").
//!
//! An archive is a plain tar file (`tar tvf` lists it):
//!
//! ```text
//! <the collection's files>        embedded: manifest.json, items.sqlite, the graph dumps;
//!                                 qdrant: qdrant.snapshot (Qdrant's own collection snapshot)
//! mirage-snapshot.json            what the archive holds: kind, collection, model, item count,
//!                                 and the size and sha256 of every file above
//! mirage-snapshot.json.sha256     the manifest's sha256, in `sha256sum -c` format
//! ```
//!
//! The manifest comes last because the files' checksums are computed while they stream into
//! the archive: an archive cut anywhere lacks it, or its seal, and is refused. The archive is
//! written to an unlinked file (`O_TMPFILE`) that gets its name only once it is whole and
//! synced, so a process killed mid-snapshot leaves no half archive. On a filesystem without
//! `O_TMPFILE` it is a hidden `.NAME.partial` file renamed at the end (and removed by the next
//! snapshot to that name).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{IndexError, Result};
use crate::manifest::unix_now;
use crate::types::ModelRef;

/// Version of the archive layout written by this build; other versions are refused.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// The manifest entry (last but one in the archive).
pub const MANIFEST_ENTRY: &str = "mirage-snapshot.json";
/// The manifest's checksum (the last entry).
pub const SEAL_ENTRY: &str = "mirage-snapshot.json.sha256";
/// The extension of the archives a server names itself.
pub const EXTENSION: &str = "mirage-snapshot.tar";
/// A manifest larger than this is not one of ours.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// One file of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFile {
    /// Entry name (a plain file name).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the contents.
    pub sha256: String,
}

/// What an archive holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotManifest {
    /// [`SNAPSHOT_FORMAT`] of the build that wrote it.
    pub snapshot_format: u32,
    /// `embedded` or `qdrant`: the store it can be restored into.
    pub kind: String,
    /// The collection's name when it was taken.
    pub collection: String,
    /// The bundle its vectors come from.
    pub model: ModelRef,
    /// Vector dimension.
    pub dim: usize,
    /// Items it holds (a Qdrant collection's: counted just before Qdrant took its snapshot, so
    /// writes racing the snapshot can make it differ).
    pub items: u64,
    /// The collection's version (committed writes) it holds; the Qdrant store keeps none.
    #[serde(default)]
    pub generation: Option<u64>,
    /// Seconds since the Unix epoch when it was taken.
    pub created_unix: u64,
    /// `mirage-rs <version>` of the build that wrote it.
    pub producer: String,
    /// Every file before the manifest, in archive order.
    pub files: Vec<SnapshotFile>,
}

impl SnapshotManifest {
    /// A manifest for `kind` with no files yet (the writer adds them).
    pub fn new(
        kind: &str,
        collection: &str,
        model: ModelRef,
        dim: usize,
        items: u64,
        generation: Option<u64>,
    ) -> Self {
        Self {
            snapshot_format: SNAPSHOT_FORMAT,
            kind: kind.to_owned(),
            collection: collection.to_owned(),
            model,
            dim,
            items,
            generation,
            created_unix: unix_now(),
            producer: format!("mirage-rs {}", env!("CARGO_PKG_VERSION")),
            files: Vec::new(),
        }
    }
}

/// A written (or verified) archive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotInfo {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// sha256 of the whole archive (what a download can be checked against).
    pub sha256: String,
    /// Its manifest.
    pub manifest: SnapshotManifest,
}

fn refused(path: &Path, reason: impl Into<String>) -> IndexError {
    IndexError::Snapshot {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Counts and hashes what passes through, reading or writing.
struct Hashing<T> {
    inner: T,
    hash: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }

    fn digest(self) -> (String, u64, T) {
        (hex::encode(self.hash.finalize()), self.bytes, self.inner)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where an archive being written will appear once whole.
struct Target {
    dest: PathBuf,
    dir: PathBuf,
    /// The hidden file written instead of an unlinked one, where the filesystem has no
    /// `O_TMPFILE`; removed if the write does not complete.
    partial: Option<PathBuf>,
}

impl Target {
    fn open(dest: &Path) -> Result<(std::fs::File, Self)> {
        let Some(file_name) = dest.file_name().and_then(|n| n.to_str()) else {
            return Err(IndexError::invalid(format!(
                "{} does not name a file to write the snapshot to",
                dest.display()
            )));
        };
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if dest.symlink_metadata().is_ok() {
            return Err(exists(dest));
        }
        if !dir.is_dir() {
            return Err(IndexError::invalid(format!(
                "{} is not a directory: create it before writing a snapshot there",
                dir.display()
            )));
        }
        use rustix::fs::{Mode, OFlags};
        let mode = Mode::from_raw_mode(0o644);
        match rustix::fs::open(
            &dir,
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            mode,
        ) {
            Ok(fd) => Ok((
                std::fs::File::from(fd),
                Self {
                    dest: dest.to_path_buf(),
                    dir,
                    partial: None,
                },
            )),
            Err(e)
                if e == rustix::io::Errno::OPNOTSUPP
                    || e == rustix::io::Errno::ISDIR
                    || e == rustix::io::Errno::INVAL =>
            {
                let partial = dir.join(format!(".{file_name}.partial"));
                // Left by an earlier attempt that was killed: it never became an archive.
                let _ = std::fs::remove_file(&partial);
                let file = fs_err::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&partial)?
                    .into_parts()
                    .0;
                Ok((
                    file,
                    Self {
                        dest: dest.to_path_buf(),
                        dir,
                        partial: Some(partial),
                    },
                ))
            }
            Err(e) => Err(std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!("creating a snapshot file in {}: {e}", dir.display()),
            )
            .into()),
        }
    }

    /// Gives the synced file its name, never replacing another file.
    fn commit(mut self, file: &std::fs::File) -> Result<()> {
        file.sync_all()?;
        let linked = match &self.partial {
            None => rustix::fs::linkat(
                rustix::fs::CWD,
                format!("/proc/self/fd/{}", file.as_raw_fd()),
                rustix::fs::CWD,
                &self.dest,
                rustix::fs::AtFlags::SYMLINK_FOLLOW,
            )
            .map_err(std::io::Error::from),
            Some(p) => std::fs::hard_link(p, &self.dest),
        };
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(exists(&self.dest))
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("naming the snapshot {}: {e}", self.dest.display()),
                )
                .into())
            }
        }
        if let Some(p) = self.partial.take() {
            fs_err::remove_file(p)?;
        }
        crate::manifest::sync_dir(&self.dir)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(p) = self.partial.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn exists(dest: &Path) -> IndexError {
    IndexError::invalid(format!(
        "{} exists; a snapshot never replaces a file: choose another name or remove it",
        dest.display()
    ))
}

fn entry_header(size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_cksum();
    h
}

/// Writes an archive: the collection's files, then [`ArchiveWriter::finish`] adds the manifest.
pub(crate) struct ArchiveWriter {
    tar: tar::Builder<Hashing<std::io::BufWriter<std::fs::File>>>,
    target: Target,
    files: Vec<SnapshotFile>,
    mtime: u64,
}

impl ArchiveWriter {
    /// Starts an archive that will appear at `dest` (which must not exist) once finished.
    pub(crate) fn create(dest: &Path) -> Result<Self> {
        let (file, target) = Target::open(dest)?;
        let mut tar = tar::Builder::new(Hashing::new(std::io::BufWriter::with_capacity(
            1 << 20,
            file,
        )));
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(Self {
            tar,
            target,
            files: Vec::new(),
            mtime: unix_now(),
        })
    }

    /// Adds `size` bytes from `reader` as entry `name`, recording their checksum.
    pub(crate) fn append(&mut self, name: &str, reader: impl Read, size: u64) -> Result<()> {
        check_entry_name(name).map_err(IndexError::invalid)?;
        let mut header = entry_header(size, self.mtime);
        let mut hashing = Hashing::new(reader.take(size));
        self.tar.append_data(&mut header, name, &mut hashing)?;
        let (sha256, bytes, _) = hashing.digest();
        if bytes != size {
            return Err(IndexError::Graph(format!(
                "{name} ended after {bytes} of its {size} bytes while it was archived"
            )));
        }
        self.files.push(SnapshotFile {
            name: name.to_owned(),
            size,
            sha256,
        });
        Ok(())
    }

    /// Adds the file at `path` as entry `name`.
    pub(crate) fn append_file(&mut self, name: &str, path: &Path) -> Result<()> {
        let file = fs_err::File::open(path)?;
        let size = file.metadata()?.len();
        self.append(name, std::io::BufReader::with_capacity(1 << 20, file), size)
    }

    /// Adds the manifest (listing every file added) and its seal, syncs the archive and gives it
    /// its name.
    pub(crate) fn finish(mut self, mut manifest: SnapshotManifest) -> Result<SnapshotInfo> {
        manifest.files = std::mem::take(&mut self.files);
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| IndexError::Graph(format!("snapshot manifest: {e}")))?;
        let seal = format!("{}  {MANIFEST_ENTRY}\n", hex::encode(Sha256::digest(&json)));
        for (name, data) in [
            (MANIFEST_ENTRY, json.as_slice()),
            (SEAL_ENTRY, seal.as_bytes()),
        ] {
            let mut header = entry_header(data.len() as u64, self.mtime);
            self.tar.append_data(&mut header, name, data)?;
        }
        self.tar.finish()?;
        let (sha256, size_bytes, buffered) = self.tar.into_inner()?.digest();
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        let path = self.target.dest.clone();
        self.target.commit(&file)?;
        Ok(SnapshotInfo {
            path,
            size_bytes,
            sha256,
            manifest,
        })
    }
}

/// Whether `name` is a plain file name: letters, digits, '.', '-' and '_', not starting with
/// '.', at most 200 bytes. Archive entries and the server's archive names keep to it, so nothing
/// read from an archive or a request can name a path outside its folder.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn check_entry_name(name: &str) -> std::result::Result<(), String> {
    if is_plain_file_name(name) {
        Ok(())
    } else {
        Err(format!(
            "it holds an entry named {name:?}; a snapshot holds only plain file names"
        ))
    }
}

/// The manifest whose bytes and seal an archive at `path` holds, checked against its seal and
/// its format.
fn sealed_manifest(path: &Path, bytes: &[u8], seal: &str) -> Result<SnapshotManifest> {
    if seal.split_whitespace().next() != Some(&hex::encode(Sha256::digest(bytes))) {
        return Err(refused(
            path,
            format!("its {MANIFEST_ENTRY} does not match its checksum: the manifest was altered or damaged"),
        ));
    }
    let manifest: SnapshotManifest = serde_json::from_slice(bytes)
        .map_err(|e| refused(path, format!("its {MANIFEST_ENTRY} cannot be read: {e}")))?;
    if manifest.snapshot_format != SNAPSHOT_FORMAT {
        return Err(refused(
            path,
            format!(
                "it has snapshot format {} (this build reads format {SNAPSHOT_FORMAT})",
                manifest.snapshot_format
            ),
        ));
    }
    Ok(manifest)
}

/// Reads the whole archive at `path`, checking every checksum, and writes its files into the
/// folder `into` when given (which must exist). Returns the archive's figures; a damaged,
/// truncated or altered archive is [`IndexError::Snapshot`] naming what failed.
pub fn verify(path: &Path, into: Option<&Path>) -> Result<SnapshotInfo> {
    let file = match fs_err::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(IndexError::invalid(format!(
                "no snapshot at {}",
                path.display()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let mut outer = Hashing::new(std::io::BufReader::with_capacity(1 << 20, file));
    let damaged = |e: std::io::Error| {
        refused(
            path,
            format!("it is damaged or truncated (reading it failed: {e})"),
        )
    };
    let mut seen: Vec<SnapshotFile> = Vec::new();
    let mut manifest_bytes: Option<Vec<u8>> = None;
    let mut seal: Option<String> = None;
    {
        let mut archive = tar::Archive::new(&mut outer);
        for entry in archive.entries().map_err(damaged)? {
            let mut entry = entry.map_err(damaged)?;
            let name = entry
                .path()
                .map_err(damaged)?
                .to_str()
                .map(str::to_owned)
                .ok_or_else(|| refused(path, "it holds an entry whose name is not UTF-8"))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(refused(
                    path,
                    format!("its entry {name:?} is not a regular file"),
                ));
            }
            if seal.is_some() {
                return Err(refused(
                    path,
                    format!("it has an entry {name:?} after the manifest's seal"),
                ));
            }
            let size = entry.size();
            if name == MANIFEST_ENTRY || name == SEAL_ENTRY {
                if size > MAX_MANIFEST_BYTES {
                    return Err(refused(path, format!("its {name} is {size} bytes")));
                }
                let mut bytes = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut bytes).map_err(damaged)?;
                if name == MANIFEST_ENTRY {
                    if manifest_bytes.is_some() {
                        return Err(refused(path, "it holds two manifests"));
                    }
                    manifest_bytes = Some(bytes);
                } else {
                    if manifest_bytes.is_none() {
                        return Err(refused(path, "its seal comes before its manifest"));
                    }
                    seal = Some(String::from_utf8_lossy(&bytes).into_owned());
                }
                continue;
            }
            if manifest_bytes.is_some() {
                return Err(refused(
                    path,
                    format!("it has an entry {name:?} after its manifest"),
                ));
            }
            check_entry_name(&name).map_err(|r| refused(path, r))?;
            if seen.iter().any(|f| f.name == name) {
                return Err(refused(path, format!("it holds {name:?} twice")));
            }
            let mut hashing = Hashing::new(&mut entry);
            match into {
                Some(dir) => {
                    let mut out = std::io::BufWriter::with_capacity(
                        1 << 20,
                        fs_err::File::create(dir.join(&name))?,
                    );
                    std::io::copy(&mut hashing, &mut out).map_err(damaged)?;
                    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                }
                None => {
                    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(damaged)?;
                }
            }
            let (sha256, bytes, _) = hashing.digest();
            if bytes != size {
                return Err(damaged(std::io::ErrorKind::UnexpectedEof.into()));
            }
            seen.push(SnapshotFile { name, size, sha256 });
        }
    }
    // The end-of-archive blocks and padding count towards the archive's checksum too.
    std::io::copy(&mut outer, &mut std::io::sink()).map_err(damaged)?;
    let Some(manifest_bytes) = manifest_bytes else {
        return Err(refused(
            path,
            format!("it ends before its manifest ({MANIFEST_ENTRY}): it is truncated or not a MIRAGE-RS snapshot"),
        ));
    };
    let Some(seal) = seal else {
        return Err(refused(
            path,
            format!("it ends before the manifest's seal ({SEAL_ENTRY}): it is truncated"),
        ));
    };
    let manifest = sealed_manifest(path, &manifest_bytes, &seal)?;
    for listed in &manifest.files {
        match seen.iter().find(|f| f.name == listed.name) {
            None => {
                return Err(refused(
                    path,
                    format!("{} is listed in its manifest but missing", listed.name),
                ))
            }
            Some(f) if f.size != listed.size || f.sha256 != listed.sha256 => {
                return Err(refused(
                    path,
                    format!(
                        "{} does not match its checksum (sha256 {}, {} bytes; the manifest says {}, {} bytes): the file was altered or damaged",
                        f.name, f.sha256, f.size, listed.sha256, listed.size
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = seen
        .iter()
        .find(|f| !manifest.files.iter().any(|l| l.name == f.name))
    {
        return Err(refused(
            path,
            format!("it holds {} which its manifest does not list", extra.name),
        ));
    }
    let (sha256, size_bytes, _) = outer.digest();
    Ok(SnapshotInfo {
        path: path.to_path_buf(),
        size_bytes,
        sha256,
        manifest,
    })
}

/// The manifest of the archive at `path`, read by skipping over the files (it checks the
/// manifest's seal and format but not the files: [`verify`] does). For listing archives cheaply.
pub fn describe(path: &Path) -> Result<SnapshotManifest> {
    let file = fs_err::File::open(path)?;
    let mut archive = tar::Archive::new(file.into_parts().0);
    let damaged = |e: std::io::Error| refused(path, format!("it cannot be read: {e}"));
    let mut manifest_bytes = None;
    let mut seal = None;
    for entry in archive.entries_with_seek().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let name = entry
            .path()
            .map_err(damaged)?
            .to_string_lossy()
            .into_owned();
        if (name == MANIFEST_ENTRY || name == SEAL_ENTRY) && entry.size() <= MAX_MANIFEST_BYTES {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(damaged)?;
            if name == MANIFEST_ENTRY {
                manifest_bytes = Some(bytes);
            } else {
                seal = Some(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }
    let (Some(bytes), Some(seal)) = (manifest_bytes, seal) else {
        return Err(refused(path, "it has no sealed manifest: it is truncated"));
    };
    sealed_manifest(path, &bytes, &seal)
}

/// A folder removed (with what is in it) when dropped, unless kept.
pub(crate) struct Staging {
    path: Option<PathBuf>,
}

impl Staging {
    /// Creates the folder `path` (which must not exist).
    pub(crate) fn create(path: PathBuf) -> Result<Self> {
        fs_err::create_dir(&path)?;
        Ok(Self { path: Some(path) })
    }

    pub(crate) fn path(&self) -> &Path {
        self.path
            .as_deref()
            .expect("a staging folder is kept only by keep")
    }

    /// Leaves the folder in place (it was renamed into use).
    pub(crate) fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// A name unique to this process and moment, for staging folders.
pub(crate) fn staging_name(prefix: &str) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Whether the staging folder `name` (made by [`staging_name`] with `prefix`) belongs to a
/// process that is gone, so nobody will finish or remove it.
pub(crate) fn is_abandoned(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
}
