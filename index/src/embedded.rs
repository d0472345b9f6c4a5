//! The embedded store: one directory per collection.
//!
//! ```text
//! <root>/<collection>/
//!   manifest.json            format version, dim, metric, model id + sha256, graph parameters
//!   items.sqlite (+ -wal)    items (id, text, image, payload), every live vector, and the
//!                            FTS5 table of the texts' analyzed terms (lexical search): the truth
//!   graph-<seq>-<nonce>-text.hnsw      graph dumps (the engine named in the manifest),
//!   graph-<seq>-<nonce>-image.hnsw     covering points up to <seq>
//!   LOCK                     held (flock) while a process has the collection open
//! ```
//!
//! Durability: an upsert is acknowledged after its SQLite transaction commits (WAL,
//! `synchronous=FULL`), so it survives `kill -9` and power loss. The graphs are a cache of the
//! database: `flush` dumps them under a new name, syncs the files, then records the name and the
//! highest point id they cover in the database in one transaction, then removes the old dump. On
//! open, points newer than the recorded dump are inserted again, and points missing from the
//! database are tombstones. A crash at any moment therefore leaves either the old or the new dump
//! referenced, and a collection that opens with every acknowledged item; if a dump cannot be read
//! the graph is rebuilt from the vectors in the database.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

use crate::error::{IndexError, Result};
use crate::filter::Filter;
use crate::flat::{FlatVectors, Scored, TopK};
use crate::graph::{self, GraphEngine, ENGINE};
use crate::lexical;
use crate::manifest::{sync_dir, Manifest, FORMAT_VERSION, MANIFEST_FILE};
use crate::snapshot::{staging_name, ArchiveWriter, SnapshotInfo, SnapshotManifest, Staging};
use crate::types::{
    checked_vectors, unit_vector, validate_search, CollectionConfig, CollectionInfo, Hit, Item,
    LexicalRequest, Quantization, SearchMode, SearchRequest, StoredItem, VectorName,
};
use mirage_model::kernels::dot;

const DB_FILE: &str = "items.sqlite";
const LOCK_FILE: &str = "LOCK";

/// In-memory view of one item: what filtering and hit assembly need without touching the disk.
struct ItemEntry {
    id: String,
    /// The item's rowid in `items`, which is also its row in the `lexical` FTS5 table.
    row: i64,
    payload: Map<String, Value>,
    points: [Option<u64>; 2],
}

struct Space {
    graph: Box<dyn GraphEngine>,
    flat: FlatVectors,
}

struct State {
    items: Vec<Option<ItemEntry>>,
    free_slots: Vec<u32>,
    slot_of: HashMap<String, u32>,
    slot_of_row: HashMap<i64, u32>,
    spaces: [Space; 2],
}

impl State {
    fn live_items(&self) -> usize {
        self.slot_of.len()
    }

    fn remove_item(&mut self, slot: u32) {
        if let Some(entry) = self.items[slot as usize].take() {
            for name in VectorName::ALL {
                if let Some(p) = entry.points[name.index()] {
                    self.spaces[name.index()].flat.remove(p);
                }
            }
            self.slot_of.remove(&entry.id);
            self.slot_of_row.remove(&entry.row);
            self.free_slots.push(slot);
        }
    }

    fn add_item(&mut self, entry: ItemEntry) -> u32 {
        let id = entry.id.clone();
        let row = entry.row;
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.items[s as usize] = Some(entry);
                s
            }
            None => {
                self.items.push(Some(entry));
                (self.items.len() - 1) as u32
            }
        };
        self.slot_of.insert(id, slot);
        self.slot_of_row.insert(row, slot);
        slot
    }

    fn entry(&self, slot: u32) -> Option<&ItemEntry> {
        self.items.get(slot as usize).and_then(Option::as_ref)
    }
}

/// An open embedded collection. Cheap to share behind an `Arc`: reads run concurrently, writes
/// are serialised.
pub struct EmbeddedCollection {
    dir: PathBuf,
    manifest: Manifest,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    state: RwLock<State>,
    /// Committed writes so far (persisted in `meta`): the version a search result cites.
    generation: std::sync::atomic::AtomicU64,
    /// Held by a snapshot while it links the graph dumps its database copy names, and by every
    /// checkpoint, which may remove those dumps.
    dumps_pinned: Mutex<()>,
    _lock: fs_err::File,
}

fn read_generation(conn: &Connection) -> Result<u64> {
    let v: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Counts one committed write inside its transaction, so the counter and the data never disagree.
fn bump_generation(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('generation', '1') \
         ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        [],
    )?;
    Ok(())
}

fn open_db(dir: &Path) -> Result<Connection> {
    let conn = Connection::open(dir.join(DB_FILE))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    text TEXT,
    image TEXT,
    payload TEXT NOT NULL
);
-- AUTOINCREMENT: a point id is never reused, because a deleted point can still sit in a graph
-- dump and must not come back to life as somebody else's vector.
CREATE TABLE IF NOT EXISTS points (
    point INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL,
    space INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS points_by_item ON points(item_id);
-- The analyzed terms of each item's text (crate::lexical), rowid = the item's rowid in `items`,
-- written in the item's own transaction. The terms arrive space-separated and contain no ASCII
-- punctuation but the joiners, so the ascii tokenizer splits them exactly where the analyzer did.
CREATE VIRTUAL TABLE IF NOT EXISTS lexical USING fts5(terms, tokenize = \"ascii tokenchars '-./+'\");
";

/// The `meta` key naming the analyzer that wrote the `lexical` table.
const LEXICAL_KEY: &str = "lexical.analyzer";

/// Makes the `lexical` table hold this build's analysis of every item's text: collections made
/// before it existed, or by another analyzer version, are (re-)analyzed once, in one transaction.
fn ensure_lexical(conn: &mut Connection, dir: &Path) -> Result<()> {
    let current: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [LEXICAL_KEY],
            |r| r.get(0),
        )
        .optional()?;
    if current.as_deref() == Some(lexical::ANALYZER) {
        return Ok(());
    }
    let tx = conn.transaction()?;
    let mut analyzed = 0usize;
    {
        tx.execute("DELETE FROM lexical", [])?;
        let mut put = tx.prepare("INSERT INTO lexical (rowid, terms) VALUES (?1, ?2)")?;
        let mut stmt = tx.prepare("SELECT rowid, text FROM items WHERE text IS NOT NULL")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let (rowid, text): (i64, String) = (row.get(0)?, row.get(1)?);
            let terms = lexical::analyze(&text);
            if !terms.is_empty() {
                put.execute(params![rowid, lexical::fts_document(&terms)])?;
                analyzed += 1;
            }
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        params![LEXICAL_KEY, lexical::ANALYZER],
    )?;
    tx.commit()?;
    if analyzed > 0 {
        tracing::info!(collection = %dir.display(), texts = analyzed, analyzer = lexical::ANALYZER,
            "built the lexical index of an existing collection");
    }
    Ok(())
}

fn vector_to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn blob_to_vector(b: &[u8], dim: usize, dir: &Path) -> Result<Vec<f32>> {
    if b.len() != dim * 4 {
        return Err(IndexError::Corrupt {
            path: dir.to_path_buf(),
            reason: format!(
                "a stored vector has {} bytes, expected {}",
                b.len(),
                dim * 4
            ),
        });
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn graph_key(name: VectorName) -> String {
    format!("graph.{name}")
}

/// Highest point id ever handed out (0 when none).
fn last_point(conn: &Connection) -> Result<u64> {
    let seq: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'points'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

fn lock_collection(dir: &Path) -> Result<fs_err::File> {
    let lock = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    match lock.file().try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(IndexError::invalid(format!(
            "collection at {} is open in another process (stop it first)",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Names of the collections under `root` (folders with a manifest), sorted; none when the root
/// does not exist yet.
pub fn list_collections(root: &Path) -> Result<Vec<String>> {
    let entries = match fs_err::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            // Staging folders of restores hold a manifest too; no collection starts with '.'.
            if validate_collection_name(name).is_ok() && EmbeddedCollection::exists(root, name) {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

impl EmbeddedCollection {
    /// Directory of collection `name` under `root`.
    pub fn path(root: &Path, name: &str) -> PathBuf {
        root.join(name)
    }

    /// Whether collection `name` exists under `root`.
    pub fn exists(root: &Path, name: &str) -> bool {
        Self::path(root, name).join(MANIFEST_FILE).is_file()
    }

    /// Creates collection `name` under `root`, or opens it when it exists with the same dimension
    /// and model (so an interrupted build can resume). A different model is refused.
    pub fn create_or_open(root: &Path, name: &str, config: &CollectionConfig) -> Result<Self> {
        validate_collection_name(name)?;
        config.validate()?;
        if config.dim == 0 {
            return Err(IndexError::invalid("dimension must be at least 1"));
        }
        let dir = Self::path(root, name);
        if !dir.join(MANIFEST_FILE).is_file() {
            fs_err::create_dir_all(&dir)?;
            let manifest = Manifest {
                format_version: FORMAT_VERSION,
                name: name.to_string(),
                dim: config.dim,
                metric: "cosine".into(),
                model: config.model.clone(),
                hnsw: config.hnsw,
                engine: ENGINE.into(),
                created_unix: crate::manifest::unix_now(),
            };
            // The manifest is written last: a directory without one is an unfinished creation
            // that the next attempt simply completes.
            {
                let conn = open_db(&dir)?;
                conn.execute_batch(SCHEMA)?;
            }
            manifest.write(&dir)?;
            sync_dir(root)?;
        }
        let collection = Self::open(root, name)?;
        collection.check_model(&config.model)?;
        if collection.manifest.dim != config.dim {
            return Err(IndexError::CollectionExists {
                name: name.into(),
                reason: format!(
                    "it has dimension {}, the model gives {}",
                    collection.manifest.dim, config.dim
                ),
            });
        }
        Ok(collection)
    }

    /// Opens an existing collection.
    pub fn open(root: &Path, name: &str) -> Result<Self> {
        let dir = existing_dir(root, name)?;
        let manifest = Manifest::read(&dir)?;
        manifest.check_engine(&dir)?;
        let lock = lock_collection(&dir)?;
        let mut writer = open_db(&dir)?;
        writer.execute_batch(SCHEMA)?;
        ensure_lexical(&mut writer, &dir)?;
        let reader = open_db(&dir)?;
        let state = load_state(&dir, &manifest, &writer)?;
        let generation = read_generation(&writer)?;
        let collection = Self {
            dir,
            manifest,
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            state: RwLock::new(state),
            generation: generation.into(),
            dumps_pinned: Mutex::new(()),
            _lock: lock,
        };
        collection.remove_stray_dumps()?;
        collection.remove_stale_staging()?;
        Ok(collection)
    }

    /// Opens a collection whose graph dumps this build cannot use (another engine wrote them),
    /// rebuilding its graphs from the vectors in its database: the database is the truth, the
    /// dumps only a cache. The manifest then names this build's engine.
    pub fn rebuild_graphs(root: &Path, name: &str) -> Result<Self> {
        let dir = existing_dir(root, name)?;
        {
            let _lock = lock_collection(&dir)?;
            let mut manifest = Manifest::read(&dir)?;
            let conn = open_db(&dir)?;
            conn.execute("DELETE FROM meta WHERE key LIKE 'graph.%'", [])?;
            manifest.engine = ENGINE.into();
            manifest.write(&dir)?;
        }
        let collection = Self::open(root, name)?;
        collection.flush()?;
        Ok(collection)
    }

    /// Bytes of vector state in memory: the graphs (links and their copy of the vectors) and the
    /// flat f32 copy that exact scans and rescoring read.
    pub fn memory_bytes(&self) -> usize {
        let state = self.read_state();
        state
            .spaces
            .iter()
            .map(|s| s.graph.memory_bytes() + s.flat.memory_bytes())
            .sum()
    }

    /// The collection's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Directory of the collection.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Refuses a model other than the one the collection was built with.
    pub fn check_model(&self, model: &crate::types::ModelRef) -> Result<()> {
        self.manifest
            .model
            .ensure_matches(&self.manifest.name, model)
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the connection leaves SQLite itself consistent (the transaction
        // rolls back when dropped), so a poisoned lock is safe to take over.
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Inserts or replaces items. Returns once the batch is durable.
    pub fn upsert(&self, items: Vec<Item>) -> Result<()> {
        let dim = self.manifest.dim;
        // Validate everything before writing anything: a batch is all or nothing.
        let mut prepared = Vec::with_capacity(items.len());
        let mut seen = HashMap::new();
        for item in items {
            let vectors = checked_vectors(&item, dim)?;
            // Within one batch the last write of an id wins, as if sent one by one.
            if let Some(previous) = seen.insert(item.id.clone(), prepared.len()) {
                prepared[previous] = None;
            }
            prepared.push(Some((item, vectors)));
        }
        let prepared: Vec<_> = prepared.into_iter().flatten().collect();
        if prepared.is_empty() {
            return Ok(());
        }

        let mut conn = self.lock_writer();
        let tx = conn.transaction()?;
        let mut new_points = Vec::with_capacity(prepared.len());
        let mut rows = Vec::with_capacity(prepared.len());
        {
            let mut row_of = tx.prepare_cached("SELECT rowid FROM items WHERE id = ?1")?;
            let mut del_terms = tx.prepare_cached("DELETE FROM lexical WHERE rowid = ?1")?;
            let mut put_terms =
                tx.prepare_cached("INSERT INTO lexical (rowid, terms) VALUES (?1, ?2)")?;
            let mut del_points = tx.prepare_cached("DELETE FROM points WHERE item_id = ?1")?;
            let mut put_item = tx.prepare_cached(
                "INSERT OR REPLACE INTO items (id, text, image, payload) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut put_point = tx.prepare_cached(
                "INSERT INTO points (item_id, space, vector) VALUES (?1, ?2, ?3)",
            )?;
            for (item, vectors) in &prepared {
                let old: Option<i64> = row_of.query_row([&item.id], |r| r.get(0)).optional()?;
                if let Some(old) = old {
                    del_terms.execute([old])?;
                }
                del_points.execute([&item.id])?;
                let payload = Value::Object(item.payload.clone()).to_string();
                put_item.execute(params![item.id, item.text, item.image, payload])?;
                let row = tx.last_insert_rowid();
                rows.push(row);
                let terms = item
                    .text
                    .as_deref()
                    .map(lexical::analyze)
                    .unwrap_or_default();
                if !terms.is_empty() {
                    put_terms.execute(params![row, lexical::fts_document(&terms)])?;
                }
                let mut points = [None, None];
                for name in VectorName::ALL {
                    if let Some(v) = &vectors[name.index()] {
                        put_point.execute(params![
                            item.id,
                            name.index() as i64,
                            vector_to_blob(v)
                        ])?;
                        points[name.index()] = Some(tx.last_insert_rowid() as u64);
                    }
                }
                new_points.push(points);
            }
        }
        bump_generation(&tx)?;
        tx.commit()?;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);

        // Durable from here on; now make it searchable. The graph insert happens before the
        // flat store learns of the points, so a concurrent search that meets them in the graph
        // skips them as not-yet-live instead of returning half-written items.
        for name in VectorName::ALL {
            let batch: Vec<(u64, &[f32])> = prepared
                .iter()
                .zip(&new_points)
                .filter_map(|((_, vectors), points)| {
                    Some((points[name.index()]?, vectors[name.index()].as_deref()?))
                })
                .collect();
            // A graph that refuses a point leaves it durable but unsearchable until the next
            // open replays it; the caller hears of it instead of an acknowledgement.
            self.read_state().spaces[name.index()].graph.add(&batch)?;
        }
        let mut state = self.write_state();
        for (((item, vectors), points), row) in prepared.into_iter().zip(new_points).zip(rows) {
            if let Some(&slot) = state.slot_of.get(&item.id) {
                state.remove_item(slot);
            }
            let slot = state.add_item(ItemEntry {
                id: item.id,
                row,
                payload: item.payload,
                points,
            });
            for name in VectorName::ALL {
                if let (Some(v), Some(p)) = (&vectors[name.index()], points[name.index()]) {
                    state.spaces[name.index()].flat.insert(p, slot, v);
                }
            }
        }
        Ok(())
    }

    /// Deletes items by id; returns how many existed.
    pub fn delete(&self, ids: &[String]) -> Result<u64> {
        let conn = self.lock_writer();
        self.delete_locked(conn, ids)
    }

    fn delete_locked(
        &self,
        mut conn: std::sync::MutexGuard<'_, Connection>,
        ids: &[String],
    ) -> Result<u64> {
        let tx = conn.transaction()?;
        let mut deleted = 0;
        {
            let mut del_terms = tx.prepare_cached(
                "DELETE FROM lexical WHERE rowid = (SELECT rowid FROM items WHERE id = ?1)",
            )?;
            let mut del_points = tx.prepare_cached("DELETE FROM points WHERE item_id = ?1")?;
            let mut del_item = tx.prepare_cached("DELETE FROM items WHERE id = ?1")?;
            for id in ids {
                del_terms.execute([id])?;
                del_points.execute([id])?;
                deleted += del_item.execute([id])? as u64;
            }
        }
        if deleted > 0 {
            bump_generation(&tx)?;
        }
        tx.commit()?;
        if deleted > 0 {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let mut state = self.write_state();
        for id in ids {
            if let Some(&slot) = state.slot_of.get(id) {
                state.remove_item(slot);
            }
        }
        Ok(deleted)
    }

    /// Deletes every item whose payload passes `filter`; returns how many.
    pub fn delete_by_filter(&self, filter: &Filter) -> Result<u64> {
        filter.validate()?;
        // Holding the writer while choosing the ids keeps a concurrent upsert from slipping a
        // matching item in between the choice and the delete.
        let conn = self.lock_writer();
        let ids: Vec<String> = {
            let state = self.read_state();
            state
                .items
                .iter()
                .flatten()
                .filter(|e| filter.matches(&e.payload))
                .map(|e| e.id.clone())
                .collect()
        };
        self.delete_locked(conn, &ids)
    }

    /// Items by id, in the order asked; unknown ids are left out.
    pub fn get(&self, ids: &[String]) -> Result<Vec<StoredItem>> {
        let conn = self
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut stmt = conn.prepare_cached(
            "SELECT text, image, payload, \
             (SELECT group_concat(space) FROM points WHERE item_id = items.id) \
             FROM items WHERE id = ?1",
        )?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row = stmt
                .query_row([id], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })
                .optional()?;
            if let Some((text, image, payload, spaces)) = row {
                let mut vectors: Vec<VectorName> = spaces
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|s| match s {
                        "0" => Some(VectorName::Text),
                        "1" => Some(VectorName::Image),
                        _ => None,
                    })
                    .collect();
                vectors.sort_by_key(|v| v.index());
                out.push(StoredItem {
                    id: id.clone(),
                    text,
                    image,
                    payload: self.parse_payload(&payload)?,
                    vectors,
                });
            }
        }
        Ok(out)
    }

    fn parse_payload(&self, text: &str) -> Result<Map<String, Value>> {
        match serde_json::from_str(text) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(IndexError::Corrupt {
                path: self.dir.clone(),
                reason: "a stored payload is not a JSON object".into(),
            }),
        }
    }

    /// Which of `ids` are in the collection.
    pub fn existing(&self, ids: &[String]) -> HashSet<String> {
        let state = self.read_state();
        ids.iter()
            .filter(|id| state.slot_of.contains_key(*id))
            .cloned()
            .collect()
    }

    /// Number of items, or of items passing `filter`.
    pub fn count(&self, filter: Option<&Filter>) -> Result<u64> {
        let state = self.read_state();
        Ok(match filter {
            None => state.live_items() as u64,
            Some(f) => {
                f.validate()?;
                state
                    .items
                    .iter()
                    .flatten()
                    .filter(|e| f.matches(&e.payload))
                    .count() as u64
            }
        })
    }

    /// k-nearest-neighbour search.
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>> {
        let limit = validate_search(req)?;
        let query = unit_vector("query", &req.vector, self.manifest.dim)?;
        let depth = limit + req.offset;
        let scored = {
            let state = self.read_state();
            let space = &state.spaces[req.target.index()];
            let filter = req.filter.as_ref().filter(|f| !f.is_empty());
            let accepts = |owner: u32| {
                filter.is_none_or(|f| state.entry(owner).is_some_and(|e| f.matches(&e.payload)))
            };
            let pool = match filter {
                None => space.flat.len(),
                Some(f) => estimate_matches(&state, space, f),
            };
            let ef = req.ef.unwrap_or(self.manifest.hnsw.ef_search).max(depth);
            // A filter that keeps no more points than the beam holds makes the walk visit most
            // of the graph to fill it; scanning the matching points is cheaper, and exact.
            let exact = req.mode == SearchMode::Exact
                || pool <= self.manifest.hnsw.exact_threshold
                || (filter.is_some() && pool <= ef);
            let mut hits = None;
            if !exact {
                let found = graph_search(space, &query, depth, ef, filter.is_some(), &accepts)?;
                // Fewer hits than the estimate promises: the walk could not reach enough
                // matching points (a filter rarer than sampled, or a fragmented graph).
                if found.len() >= depth.min(pool) {
                    hits = Some(found);
                }
            }
            hits.unwrap_or_else(|| exact_search(space, &query, depth, filter.is_some(), &accepts))
                .into_iter()
                .skip(req.offset)
                .take_while(|s| req.score_threshold.is_none_or(|t| s.0 >= t))
                .filter_map(|s| {
                    state
                        .entry(s.1)
                        .map(|e| (e.id.clone(), s.0, e.payload.clone()))
                })
                .collect::<Vec<_>>()
        };
        if !req.with_content {
            return Ok(scored
                .into_iter()
                .map(|(id, score, payload)| Hit::new(id, score, None, None, payload))
                .collect());
        }
        self.attach_texts(scored)
    }

    /// BM25 search of the items' texts ([`crate::lexical`]): FTS5's `bm25()` over the analyzed
    /// terms, best first, the filter applied to each candidate in rank order.
    pub fn lexical_search(&self, req: &LexicalRequest) -> Result<Vec<Hit>> {
        let limit = req.validate()?;
        let depth = limit + req.offset;
        let terms = lexical::query_terms(&req.text);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let filter = req.filter.as_ref().filter(|f| !f.is_empty());
        let scored = {
            let mut conn = self
                .reader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let tx = conn.transaction()?;
            // `rank` is bm25() (negated: best first); with a filter the rows are read in rank
            // order until enough pass it.
            let sql = if filter.is_some() {
                "SELECT rowid, rank FROM lexical WHERE lexical MATCH ?1 ORDER BY rank"
            } else {
                "SELECT rowid, rank FROM lexical WHERE lexical MATCH ?1 ORDER BY rank LIMIT ?2"
            };
            let mut stmt = tx.prepare_cached(sql)?;
            let query = lexical::fts_query(&terms);
            let fetch = (depth + lexical::TIE_WINDOW) as i64;
            let mut rows = if filter.is_some() {
                stmt.query(params![query])?
            } else {
                stmt.query(params![query, fetch])?
            };
            let state = self.read_state();
            let mut scored: Vec<(String, f32, Map<String, Value>)> = Vec::with_capacity(depth);
            while let Some(row) = rows.next()? {
                let (rowid, rank): (i64, f64) = (row.get(0)?, row.get(1)?);
                let score = -rank as f32;
                // Past the page, only hits tied with its last one are read (ties go by id).
                if scored.len() >= depth && scored.get(depth - 1).is_some_and(|l| l.1 > score) {
                    break;
                }
                // A row committed but not yet in memory is skipped.
                let Some(entry) = state.slot_of_row.get(&rowid).and_then(|&s| state.entry(s))
                else {
                    continue;
                };
                if filter.is_some_and(|f| !f.matches(&entry.payload)) {
                    continue;
                }
                scored.push((entry.id.clone(), score, entry.payload.clone()));
            }
            lexical::rank_ties_by_id(&mut scored, |h| (h.1, h.0.as_str()));
            scored.truncate(depth);
            scored
        };
        let page: Vec<_> = scored.into_iter().skip(req.offset).collect();
        if !req.with_content {
            return Ok(page
                .into_iter()
                .map(|(id, score, payload)| Hit::new(id, score, None, None, payload))
                .collect());
        }
        self.attach_texts(page)
    }

    fn attach_texts(&self, scored: Vec<(String, f32, Map<String, Value>)>) -> Result<Vec<Hit>> {
        let mut conn = self
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // One read transaction for all lookups: each bare statement would take and release
        // SQLite's file locks (two fcntl calls) by itself, a third of a fast query's time.
        let tx = conn.transaction()?;
        let mut stmt = tx.prepare_cached("SELECT text, image FROM items WHERE id = ?1")?;
        let mut hits = Vec::with_capacity(scored.len());
        for (id, score, payload) in scored {
            // An item deleted between scoring and this lookup is simply dropped from the answer.
            let row = stmt
                .query_row([&id], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                    ))
                })
                .optional()?;
            if let Some((text, image)) = row {
                hits.push(Hit::new(id, score, text, image, payload));
            }
        }
        drop(stmt);
        tx.commit()?;
        Ok(hits)
    }

    /// Size, model and graph figures.
    pub fn info(&self) -> CollectionInfo {
        let state = self.read_state();
        let tombstones: usize = state
            .spaces
            .iter()
            .map(|s| s.graph.len().saturating_sub(s.flat.len()))
            .sum();
        CollectionInfo {
            name: self.manifest.name.clone(),
            store: format!("embedded:{}", self.dir.display()),
            dim: self.manifest.dim,
            metric: self.manifest.metric.clone(),
            model: self.manifest.model.clone(),
            hnsw: self.manifest.hnsw,
            items: state.live_items() as u64,
            text_vectors: state.spaces[0].flat.len() as u64,
            image_vectors: state.spaces[1].flat.len() as u64,
            tombstones: tombstones as u64,
            format_version: self.manifest.format_version,
            generation: Some(self.generation()),
            lexical: Some(lexical::ANALYZER.to_owned()),
        }
    }

    /// Committed writes (upserts and effective deletes) since creation.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Writes the graphs to disk so the next open does not re-insert what they already hold.
    /// Safe to call at any time; costs a full dump of both graphs.
    pub fn flush(&self) -> Result<()> {
        let conn = self.lock_writer();
        let state = self.read_state();
        self.checkpoint(&conn, &state)
    }

    fn checkpoint(&self, conn: &Connection, state: &State) -> Result<()> {
        let _pinned = self
            .dumps_pinned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The writer lock is held: every committed point is in the graphs, none is in flight.
        let covered = last_point(conn)?;
        let mut names = Vec::new();
        for name in VectorName::ALL {
            let graph = &state.spaces[name.index()].graph;
            let basename = if graph.is_empty() {
                String::new()
            } else {
                // A fresh name every time: the dump in use must stay intact until the database
                // points at its successor.
                let nonce = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let basename = format!("graph-{covered}-{nonce}-{name}");
                let path = self.dir.join(format!("{basename}.{DUMP_EXT}"));
                graph.save(&path)?;
                fs_err::File::open(&path)?.sync_all()?;
                basename
            };
            names.push((name, basename));
        }
        sync_dir(&self.dir)?;
        let mut stmt =
            conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| -> Result<()> {
            for (name, basename) in &names {
                stmt.execute(params![graph_key(*name), format!("{covered} {basename}")])?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                conn.execute_batch("ROLLBACK")?;
                return Err(e);
            }
        }
        self.remove_stray_dumps()
    }

    /// Rebuilds the graphs from the live vectors only, dropping tombstones, and writes them.
    pub fn compact(&self) -> Result<()> {
        let conn = self.lock_writer();
        let mut state = self.write_state();
        for space in state.spaces.iter_mut() {
            space.graph = build_graph(&self.manifest, &space.flat)?;
        }
        self.checkpoint(&conn, &state)
    }

    /// Writes a snapshot archive of the collection to `out` (which must not exist) while it keeps
    /// serving reads and writes ([`crate::snapshot`]). It holds exactly the items committed when
    /// the database copy began: SQLite's online backup copies every page in one step, that is
    /// in one read transaction, which WAL lets writers go on beside. The graph dumps that copy
    /// names go along; on restore, points newer than them are inserted again, as after a crash.
    pub fn snapshot(&self, out: &Path) -> Result<SnapshotInfo> {
        let staging = Staging::create(self.dir.join(staging_name(SNAPSHOT_STAGING)))?;
        let db = staging.path().join(DB_FILE);
        let (dumps, items, generation) = {
            // Pinned until linked: a flush in between would remove the dumps the copy names.
            let _pinned = self
                .dumps_pinned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut copy = Connection::open(&db)?;
            {
                let source = open_db(&self.dir)?;
                let backup = rusqlite::backup::Backup::new(&source, &mut copy)?;
                let step = backup.step(-1)?;
                if step != rusqlite::backup::StepResult::Done {
                    return Err(IndexError::Graph(format!(
                        "the database copy stopped before its end ({step:?}); retry the snapshot"
                    )));
                }
            }
            // What the copy holds: its dumps (linked while pinned), items and version.
            let mut dumps = Vec::new();
            for name in VectorName::ALL {
                if let Some((_, basename)) = read_graph_meta(&copy, name)? {
                    if !basename.is_empty() {
                        let file = format!("{basename}.{DUMP_EXT}");
                        fs_err::hard_link(self.dir.join(&file), staging.path().join(&file))?;
                        dumps.push(file);
                    }
                }
            }
            let items: i64 = copy.query_row("SELECT count(*) FROM items", [], |r| r.get(0))?;
            (dumps, items, read_generation(&copy)?)
        };
        let mut archive = ArchiveWriter::create(out)?;
        archive.append_file(MANIFEST_FILE, &self.dir.join(MANIFEST_FILE))?;
        archive.append_file(DB_FILE, &db)?;
        for file in &dumps {
            archive.append_file(file, &staging.path().join(file))?;
        }
        let m = &self.manifest;
        archive.finish(SnapshotManifest::new(
            "embedded",
            &m.name,
            m.model.clone(),
            m.dim,
            items as u64,
            Some(generation),
        ))
    }

    /// Restores the snapshot archive at `archive` as collection `name` (default: the name it
    /// was taken under) under `root`, after checking every checksum, the format versions, and
    /// that the archive's manifest agrees with the collection's. An existing collection of that
    /// name is never replaced. Returns the collection, open.
    pub fn restore(archive: &Path, root: &Path, name: Option<&str>) -> Result<Self> {
        if let Some(name) = name {
            validate_collection_name(name)?;
        }
        fs_err::create_dir_all(root)?;
        remove_abandoned(root, RESTORE_STAGING)?;
        let staging = Staging::create(root.join(staging_name(RESTORE_STAGING)))?;
        let info = crate::snapshot::verify(archive, Some(staging.path()))?;
        let snap = &info.manifest;
        let refuse = |reason: String| IndexError::Snapshot {
            path: archive.to_path_buf(),
            reason,
        };
        if snap.kind != "embedded" {
            return Err(refuse(format!(
                "it holds a {} collection; restore it into a {} store",
                snap.kind, snap.kind
            )));
        }
        let mut manifest = Manifest::read(staging.path()).map_err(|e| refuse(e.to_string()))?;
        if manifest.model != snap.model
            || manifest.dim != snap.dim
            || manifest.name != snap.collection
        {
            return Err(refuse(format!(
                "its {MANIFEST_FILE} (collection {:?}, model {}, dimension {}) disagrees with its snapshot manifest (collection {:?}, model {}, dimension {})",
                manifest.name, manifest.model.sha256, manifest.dim, snap.collection, snap.model.sha256, snap.dim
            )));
        }
        manifest.check_engine(staging.path())?;
        let target = name.unwrap_or(&snap.collection).to_owned();
        validate_collection_name(&target)?;
        if manifest.name != target {
            manifest.name = target.clone();
            manifest.write(staging.path())?;
        }
        let dir = Self::path(root, &target);
        if dir.exists() {
            return Err(IndexError::CollectionExists {
                name: target,
                reason: format!(
                    "{} exists; restore under another name, or delete the collection first",
                    dir.display()
                ),
            });
        }
        // The rename is atomic: the collection appears whole or not at all.
        fs_err::rename(staging.path(), &dir)?;
        staging.keep();
        sync_dir(root)?;
        Self::open(root, &target)
    }

    /// Removes the staging folders of snapshots that a killed process left in the collection
    /// (the collection is locked to this process, so no snapshot of another one is running).
    fn remove_stale_staging(&self) -> Result<()> {
        for entry in fs_err::read_dir(&self.dir)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(SNAPSHOT_STAGING))
            {
                fs_err::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }

    /// Deletes graph dumps that the database does not reference (left by a crash mid-flush).
    fn remove_stray_dumps(&self) -> Result<()> {
        let conn = self
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut keep = HashSet::new();
        for name in VectorName::ALL {
            if let Some((_, basename)) = read_graph_meta(&conn, name)? {
                keep.insert(basename);
            }
        }
        for entry in fs_err::read_dir(&self.dir)? {
            let entry = entry?;
            let file = entry.file_name().to_string_lossy().into_owned();
            // Also the hnsw_rs and USearch dumps of collections made by earlier builds.
            if let Some(base) = [DUMP_EXT, "hnsw.graph", "hnsw.data", "usearch"]
                .iter()
                .find_map(|ext| file.strip_suffix(&format!(".{ext}")))
            {
                if base.starts_with("graph-") && !keep.contains(base) {
                    fs_err::remove_file(entry.path())?;
                }
            }
        }
        Ok(())
    }
}

/// Prefix of the folder a snapshot stages its database copy in, inside the collection.
const SNAPSHOT_STAGING: &str = ".snapshot-";
/// Prefix of the folder a restore extracts into, under the store's root.
const RESTORE_STAGING: &str = ".restore-";

/// Removes restore folders under `root` whose process is gone.
fn remove_abandoned(root: &Path, prefix: &str) -> Result<()> {
    for entry in fs_err::read_dir(root)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| crate::snapshot::is_abandoned(n, prefix))
        {
            fs_err::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// Directory of existing collection `name` under `root`, or why there is none.
fn existing_dir(root: &Path, name: &str) -> Result<PathBuf> {
    validate_collection_name(name)?;
    let dir = EmbeddedCollection::path(root, name);
    if !dir.join(MANIFEST_FILE).is_file() {
        return Err(IndexError::CollectionNotFound {
            name: name.into(),
            location: root.display().to_string(),
        });
    }
    Ok(dir)
}

/// Removes a collection directory. The caller must not have it open.
pub fn drop_collection(root: &Path, name: &str) -> Result<()> {
    let dir = existing_dir(root, name)?;
    // Taking the lock proves no other process serves it; removing the manifest first makes a
    // crash mid-removal leave a directory that no longer claims to be a collection.
    let lock = lock_collection(&dir)?;
    fs_err::remove_file(dir.join(MANIFEST_FILE))?;
    drop(lock);
    fs_err::remove_dir_all(&dir)?;
    Ok(())
}

/// Collection names become directory names (and Qdrant collection names): keep them portable.
pub fn validate_collection_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(IndexError::invalid(format!(
            "collection name {name:?} must be 1–128 characters of letters, digits, '-', '_' or '.', \
             not starting with '.'"
        )))
    }
}

fn read_graph_meta(conn: &Connection, name: VectorName) -> Result<Option<(u64, String)>> {
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [graph_key(name)],
            |r| r.get(0),
        )
        .optional()?;
    Ok(value.and_then(|v| {
        let (covered, basename) = v.split_once(' ')?;
        Some((covered.parse().ok()?, basename.to_string()))
    }))
}

fn new_graph(manifest: &Manifest, capacity: usize) -> Result<Box<dyn GraphEngine>> {
    graph::create(
        &manifest.engine,
        manifest.dim,
        &manifest.hnsw,
        manifest.hnsw.quantization,
        capacity,
    )
}

fn build_graph(manifest: &Manifest, flat: &FlatVectors) -> Result<Box<dyn GraphEngine>> {
    let graph = new_graph(manifest, flat.len())?;
    let batch: Vec<(u64, &[f32])> = flat
        .rows()
        .map(|(row, point, _)| (point, flat.vector(row)))
        .collect();
    graph.add(&batch)?;
    Ok(graph)
}

fn load_state(dir: &Path, manifest: &Manifest, conn: &Connection) -> Result<State> {
    let mut state = State {
        items: Vec::new(),
        free_slots: Vec::new(),
        slot_of: HashMap::new(),
        slot_of_row: HashMap::new(),
        spaces: [
            Space {
                graph: new_graph(manifest, 0)?,
                flat: FlatVectors::new(manifest.dim),
            },
            Space {
                graph: new_graph(manifest, 0)?,
                flat: FlatVectors::new(manifest.dim),
            },
        ],
    };
    {
        let mut stmt = conn.prepare("SELECT rowid, id, payload FROM items")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let rowid: i64 = row.get(0)?;
            let id: String = row.get(1)?;
            let payload: String = row.get(2)?;
            let Ok(Value::Object(payload)) = serde_json::from_str(&payload) else {
                return Err(IndexError::Corrupt {
                    path: dir.to_path_buf(),
                    reason: format!("payload of item {id:?} is not a JSON object"),
                });
            };
            state.add_item(ItemEntry {
                id,
                row: rowid,
                payload,
                points: [None, None],
            });
        }
    }
    {
        let mut stmt = conn.prepare("SELECT point, item_id, space, vector FROM points")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let point: i64 = row.get(0)?;
            let item_id: String = row.get(1)?;
            let space: i64 = row.get(2)?;
            let blob: Vec<u8> = row.get(3)?;
            let name = match space {
                0 => VectorName::Text,
                1 => VectorName::Image,
                _ => {
                    return Err(IndexError::Corrupt {
                        path: dir.to_path_buf(),
                        reason: format!("point {point} has unknown space {space}"),
                    })
                }
            };
            let Some(&slot) = state.slot_of.get(&item_id) else {
                // Only reachable through outside edits: points are written with their item.
                continue;
            };
            let v = blob_to_vector(&blob, manifest.dim, dir)?;
            if let Some(entry) = state.items[slot as usize].as_mut() {
                entry.points[name.index()] = Some(point as u64);
            }
            state.spaces[name.index()]
                .flat
                .insert(point as u64, slot, &v);
        }
    }
    for name in VectorName::ALL {
        let space = &mut state.spaces[name.index()];
        let loaded = match read_graph_meta(conn, name)? {
            Some((covered, basename)) if !basename.is_empty() => {
                let path = dir.join(format!("{basename}.{DUMP_EXT}"));
                match graph::open(
                    &manifest.engine,
                    &path,
                    manifest.dim,
                    &manifest.hnsw,
                    manifest.hnsw.quantization,
                ) {
                    Ok(g) => Some((covered, g)),
                    Err(e) => {
                        tracing::warn!(error = %e, "graph dump unreadable; rebuilding from the database");
                        None
                    }
                }
            }
            _ => None,
        };
        let (covered, graph) = match loaded {
            Some(loaded) => loaded,
            None => (0, new_graph(manifest, space.flat.len())?),
        };
        let replay: Vec<(u64, &[f32])> = space
            .flat
            .rows()
            .filter(|&(_, point, _)| point > covered)
            .map(|(row, point, _)| (point, space.flat.vector(row)))
            .collect();
        if !replay.is_empty() {
            tracing::info!(space = %name, points = replay.len(), "inserting points newer than the graph dump");
        }
        graph.add(&replay)?;
        space.graph = graph;
    }
    Ok(state)
}

/// File extension of graph dumps.
const DUMP_EXT: &str = "hnsw";

/// Items sampled to estimate how many live points a filter keeps.
const SELECTIVITY_SAMPLE: usize = 512;

/// Estimated live points of `space` whose item passes `filter`, from an evenly strided sample
/// (deterministic, so one query always takes the same path): whether the graph walk or an exact
/// scan of the matching points is cheaper is decided on it.
fn estimate_matches(state: &State, space: &Space, filter: &Filter) -> usize {
    let live = space.flat.len();
    if live <= SELECTIVITY_SAMPLE {
        return space
            .flat
            .rows()
            .filter(|&(_, _, owner)| {
                state
                    .entry(owner)
                    .is_some_and(|e| filter.matches(&e.payload))
            })
            .count();
    }
    let stride = live / SELECTIVITY_SAMPLE;
    let matched = space
        .flat
        .rows()
        .step_by(stride)
        .take(SELECTIVITY_SAMPLE)
        .filter(|&(_, _, owner)| {
            state
                .entry(owner)
                .is_some_and(|e| filter.matches(&e.payload))
        })
        .count();
    matched * live / SELECTIVITY_SAMPLE
}

/// The `depth` best live points whose owner `accepts`, by a graph walk that evaluates the
/// predicate at each step (tombstones and non-matching points are walked through, never
/// returned). Quantised graphs' candidates are rescored in f32 from the flat copy.
fn graph_search(
    space: &Space,
    query: &[f32],
    depth: usize,
    ef: usize,
    filtered: bool,
    accepts: &dyn Fn(u32) -> bool,
) -> Result<Vec<Scored>> {
    let flat = &space.flat;
    let live = |point: u64| flat.owner_of(point).is_some_and(accepts);
    // Without tombstones or a filter every point passes: skip the per-step call.
    let needs_predicate = filtered || space.graph.len() > flat.len();
    let found = space.graph.search(
        query,
        depth,
        ef,
        needs_predicate.then_some(&live as &dyn Fn(u64) -> bool),
    )?;
    let quantized = space.graph.quantization() != Quantization::F32;
    let mut hits: Vec<Scored> = found
        .into_iter()
        .filter_map(|(point, score)| {
            // A point the graph already has but the flat copy not yet is mid-upsert: skip it.
            let owner = flat.owner_of(point)?;
            let score = if quantized {
                dot(query, flat.vector_of(point)?)
            } else {
                score
            };
            Some(Scored(score, owner))
        })
        .collect();
    if quantized {
        hits.sort_by(|a, b| b.cmp(a));
        hits.truncate(depth);
    }
    Ok(hits)
}

fn exact_search(
    space: &Space,
    query: &[f32],
    k: usize,
    filtered: bool,
    accepts: &dyn Fn(u32) -> bool,
) -> Vec<Scored> {
    let mut top = TopK::new(k);
    for (row, _, owner) in space.flat.rows() {
        if filtered && !accepts(owner) {
            continue;
        }
        top.push(dot(query, space.flat.vector(row)), owner);
    }
    top.into_sorted()
}
