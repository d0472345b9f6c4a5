//! Snapshot archives: what a restore gives back, under concurrent writes, and what a damaged
//! archive gets.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use mirage_index::snapshot::{self, MANIFEST_ENTRY};
use mirage_index::{
    EmbeddedCollection, IndexError, SearchMode, SearchRequest, StoredItem, VectorName,
};
use serde_json::json;

use crate::common::*;

const DIM: usize = 16;

fn small_threshold() -> mirage_index::CollectionConfig {
    let mut cfg = config(DIM);
    cfg.hnsw.exact_threshold = 10;
    cfg
}

fn items(c: &EmbeddedCollection, n: usize) -> Vec<StoredItem> {
    c.get(&(0..n).map(|i| format!("id-{i}")).collect::<Vec<_>>())
        .unwrap()
}

/// A collection with a flushed graph, writes after the flush, and deletes.
fn sample(root: &Path) -> EmbeddedCollection {
    let c = EmbeddedCollection::create_or_open(root, "src", &small_threshold()).unwrap();
    let vectors = random_vectors(300, DIM, 7);
    let batch = |from: usize, to: usize| {
        (from..to)
            .map(|i| text_item(&format!("id-{i}"), vectors[i].clone(), json!({"n": i})))
            .collect::<Vec<_>>()
    };
    c.upsert(batch(0, 200)).unwrap();
    c.flush().unwrap();
    c.upsert(batch(200, 300)).unwrap();
    c.delete(&["id-5".into(), "id-250".into()]).unwrap();
    c
}

fn refusal(e: IndexError) -> String {
    match e {
        IndexError::Snapshot { reason, .. } => reason,
        other => panic!("expected a refused snapshot, got {other:?}"),
    }
}

#[test]
fn a_restored_snapshot_has_every_item_vector_and_answer_of_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample(&dir.path().join("store"));
    let out = dir.path().join("src.mirage-snapshot.tar");
    let info = src.snapshot(&out).unwrap();
    assert_eq!(info.manifest.items, 298);
    assert_eq!(info.manifest.kind, "embedded");
    assert_eq!(info.manifest.generation, Some(src.generation()));
    assert_eq!(info.size_bytes, std::fs::metadata(&out).unwrap().len());
    let names: Vec<&str> = info
        .manifest
        .files
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert!(
        names.contains(&"items.sqlite") && names.contains(&"manifest.json"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with("graph-")), "{names:?}");
    // What a download is checked against is the archive's own sha256.
    assert_eq!(snapshot::verify(&out, None).unwrap().sha256, info.sha256);
    assert_eq!(snapshot::describe(&out).unwrap(), info.manifest);

    // Into another store, under its own name, and into the same store under a new one.
    let other = dir.path().join("other");
    let same = EmbeddedCollection::restore(&out, &other, None).unwrap();
    let renamed =
        EmbeddedCollection::restore(&out, &dir.path().join("store"), Some("copy")).unwrap();
    assert_eq!(same.manifest().name, "src");
    assert_eq!(renamed.manifest().name, "copy");
    let queries = random_vectors(4, DIM, 8);
    for restored in [&same, &renamed] {
        let (a, b) = (restored.info(), src.info());
        assert_eq!(
            (a.items, a.text_vectors, a.generation),
            (b.items, b.text_vectors, b.generation)
        );
        assert_eq!(restored.manifest().model, src.manifest().model);
        assert_eq!(items(restored, 300), items(&src, 300));
        for q in &queries {
            assert_eq!(
                search(restored, q, None, SearchMode::Exact),
                search(&src, q, None, SearchMode::Exact)
            );
            // The graph came back too (the dump, plus the points after it replayed).
            let graph = search(restored, q, None, SearchMode::Auto);
            assert_eq!(graph.len(), 10);
        }
    }
    assert_eq!(
        mirage_index::embedded::list_collections(&dir.path().join("store")).unwrap(),
        ["copy", "src"]
    );

    // Never over an existing collection, nor over an existing file.
    let again = EmbeddedCollection::restore(&out, &dir.path().join("store"), Some("copy"));
    assert!(
        matches!(again, Err(IndexError::CollectionExists { .. })),
        "{:?}",
        again.err()
    );
    let e = src.snapshot(&out).expect_err("an existing file is refused");
    assert!(e.to_string().contains("exists"), "{e}");
    let e = EmbeddedCollection::restore(&out, &other, Some("../escape"))
        .err()
        .unwrap();
    assert!(matches!(e, IndexError::InvalidRequest(_)), "{e:?}");
}

#[test]
fn a_snapshot_during_concurrent_writes_holds_exactly_the_writes_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let c =
        Arc::new(EmbeddedCollection::create_or_open(&root, "live", &small_threshold()).unwrap());
    let vectors = random_vectors(4000, DIM, 9);
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    const BATCH: usize = 5;
    let writer = {
        let (c, acked, stop) = (c.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            for (b, chunk) in vectors.chunks(BATCH).enumerate() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let batch = chunk
                    .iter()
                    .enumerate()
                    .map(|(j, v)| {
                        let i = b * BATCH + j;
                        text_item(&format!("id-{i}"), v.clone(), json!({"n": i}))
                    })
                    .collect();
                c.upsert(batch).unwrap();
                acked.store((b + 1) * BATCH, Ordering::SeqCst);
            }
        })
    };
    // Flushes race the snapshot for the graph dumps it links.
    let flusher = {
        let (c, stop) = (c.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                c.flush().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 300 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut taken = Vec::new();
    for k in 0..3 {
        let before = acked.load(Ordering::SeqCst);
        let out = dir.path().join(format!("live-{k}.tar"));
        let info = c.snapshot(&out).unwrap();
        let after = acked.load(Ordering::SeqCst);
        taken.push((out, info, before, after));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    flusher.join().unwrap();

    for (k, (out, info, before, after)) in taken.into_iter().enumerate() {
        let restored =
            EmbeddedCollection::restore(&out, &dir.path().join("restored"), Some(&format!("r{k}")))
                .unwrap();
        let n = restored.info().items as usize;
        assert_eq!(n as u64, info.manifest.items);
        // Everything acknowledged before the snapshot began; nothing beyond the batch that was
        // committing when it ended.
        assert!(
            n >= before && n <= after + BATCH,
            "{before} <= {n} <= {after} + {BATCH}"
        );
        // Exactly a prefix of the write order: a consistent cut, no holes.
        let ids: Vec<String> = (0..n + BATCH).map(|i| format!("id-{i}")).collect();
        let present = restored.existing(&ids);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                present.contains(id),
                i < n,
                "{id} in a snapshot of {n} items"
            );
        }
        assert_eq!(restored.info().generation, info.manifest.generation);
        // The restored graph answers for every item (replayed past the dump it came with).
        let got = restored.get(&[format!("id-{}", n - 1)]).unwrap();
        assert_eq!(got.len(), 1);
        let q = random_vectors(4000, DIM, 9)[n - 1].clone();
        assert_eq!(
            search(&restored, &q, None, SearchMode::Auto)[0].0,
            format!("id-{}", n - 1)
        );
    }
}

/// Offset and length of entry `name`'s data in the tar at `path`.
fn entry_span(path: &Path, name: &str) -> (u64, u64) {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in archive.entries_with_seek().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            return (e.raw_file_position(), e.size());
        }
    }
    panic!("no {name} in {}", path.display())
}

fn damaged(from: &Path, to: PathBuf, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(from).unwrap();
    edit(&mut bytes);
    std::fs::write(&to, bytes).unwrap();
    to
}

#[test]
fn a_truncated_altered_or_foreign_archive_is_refused_naming_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample(&dir.path().join("store"));
    let out = dir.path().join("good.tar");
    src.snapshot(&out).unwrap();
    let len = std::fs::metadata(&out).unwrap().len() as usize;
    let (db_at, db_len) = entry_span(&out, "items.sqlite");
    let (manifest_at, _) = entry_span(&out, MANIFEST_ENTRY);
    let root = dir.path().join("restored");
    let mut cases = vec![
        (
            damaged(&out, dir.path().join("half.tar"), |b| b.truncate(len / 2)),
            "truncated",
        ),
        (
            // Cut at the header of the manifest: a well-formed tar that simply ends.
            damaged(&out, dir.path().join("headers.tar"), |b| {
                b.truncate(manifest_at as usize - 512)
            }),
            "ends before its manifest",
        ),
        (
            damaged(&out, dir.path().join("tail.tar"), |b| {
                b.truncate(len - 1536)
            }),
            "truncated",
        ),
        (
            damaged(&out, dir.path().join("flip.tar"), |b| {
                b[(db_at + db_len / 2) as usize] ^= 0x40
            }),
            "items.sqlite does not match its checksum",
        ),
        (
            damaged(&out, dir.path().join("manifest.tar"), |b| {
                // "items": 298 -> 299, keeping the length.
                let at = manifest_at as usize;
                let text = String::from_utf8_lossy(&b[at..at + 2048]).into_owned();
                let pos = text.find("\"items\": 298").unwrap() + "\"items\": 29".len();
                b[at + pos] = b'9';
            }),
            "manifest was altered",
        ),
        (
            damaged(&out, dir.path().join("noise.tar"), |b| {
                b.iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| *x = (i * 31 % 251) as u8)
            }),
            "",
        ),
    ];
    cases.push((dir.path().join("absent.tar"), "no snapshot at"));
    for (path, why) in cases {
        let e = EmbeddedCollection::restore(&path, &root, Some("r"))
            .err()
            .unwrap_or_else(|| panic!("{} was restored", path.display()));
        let text = match e {
            IndexError::InvalidRequest(s) => s,
            e => refusal(e),
        };
        assert!(text.contains(why), "{}: {text}", path.display());
        // Nothing is left behind: no collection, no staging folder.
        let left: Vec<_> = std::fs::read_dir(&root)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{}: left {left:?}", path.display());
    }
    // The intact archive still restores.
    EmbeddedCollection::restore(&out, &root, Some("r")).unwrap();
}

#[test]
fn a_qdrant_collection_snapshot_restores_under_a_new_name() {
    let Some(url) = mirage_index::testing::qdrant_test_url("snapshots") else {
        return;
    };
    let rest = std::env::var("MIRAGE_QDRANT_REST_URL").ok();
    let rt = runtime();
    rt.block_on(async {
        let spec: mirage_index::StoreSpec = format!("qdrant:{url}").parse().unwrap();
        let spec = spec.with_rest_url(rest.as_deref()).unwrap();
        let name = format!("snap-{}", std::process::id());
        let copy = format!("{name}-copy");
        for n in [&name, &copy] {
            let _ = mirage_index::drop_collection(&spec, n).await;
        }
        let c = mirage_index::Collection::create_or_open(&spec, &name, &config(DIM))
            .await
            .unwrap();
        let vectors = random_vectors(120, DIM, 11);
        c.upsert(
            vectors
                .iter()
                .enumerate()
                .map(|(i, v)| text_item(&format!("id-{i}"), v.clone(), json!({"n": i})))
                .collect(),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("q.tar");
        let info = c.snapshot(&spec, out.clone()).await.unwrap();
        assert_eq!(
            (info.manifest.kind.as_str(), info.manifest.items),
            ("qdrant", 120)
        );
        // A Qdrant archive does not go into an embedded store.
        let e = mirage_index::restore(
            &mirage_index::StoreSpec::Embedded(dir.path().join("e")),
            out.clone(),
            None,
        )
        .await
        .err()
        .unwrap();
        assert!(refusal(e).contains("restore it into a qdrant store"));
        // Nor over the collection it came from.
        let e = mirage_index::restore(&spec, out.clone(), None)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, IndexError::CollectionExists { .. }), "{e:?}");
        let r = mirage_index::restore(&spec, out.clone(), Some(copy.clone()))
            .await
            .unwrap();
        assert_eq!(r.model(), c.model());
        assert_eq!(r.count(None).await.unwrap(), 120);
        let ids: Vec<String> = (0..120).map(|i| format!("id-{i}")).collect();
        assert_eq!(r.get(ids.clone()).await.unwrap(), c.get(ids).await.unwrap());
        let q = SearchRequest::new(vectors[7].clone(), VectorName::Text, 3);
        assert_eq!(r.search(q).await.unwrap()[0].id, "id-7");
        for n in [&name, &copy] {
            mirage_index::drop_collection(&spec, n).await.unwrap();
        }
    });
}
