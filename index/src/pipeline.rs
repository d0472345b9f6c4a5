//! The embedding pipeline: corpus records in, items with text and image vectors out, written to a
//! collection in batches.
//!
//! Two stages run at once: a preparation thread reads records, drops ids already in the
//! collection (so an interrupted run resumes where it stopped), and decodes and preprocesses
//! images on `decode_threads` workers; the calling thread embeds each batch with the model and
//! upserts it. A bounded channel between them keeps memory flat.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mirage_model::image_input::{load_image, preprocess, DecodeOptions};
use mirage_model::MirageModel;
use serde::Serialize;

use crate::error::{IndexError, Result};
use crate::passages::{self, ChunkOptions, Span};
use crate::store::Collection;
use crate::types::{Item, ModelRef};
use mirage_data::corpus::{BadRow, CorpusRecord};

/// The identity of a loaded model as collections record it.
pub fn model_ref(model: &MirageModel) -> ModelRef {
    ModelRef {
        model_id: model.model_id().to_string(),
        sha256: model.bundle_sha256().to_string(),
    }
}

/// The same identity read from a bundle without loading its weights (for vectors embedded
/// elsewhere), with the dimension of its joint space.
pub fn bundle_ref(bundle: &mirage_model::bundle::Bundle) -> (ModelRef, usize) {
    (
        ModelRef {
            model_id: bundle.config().model_id.clone(),
            sha256: bundle.sha256().to_string(),
        },
        bundle.config().architecture.embed_dim,
    )
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A progress bar on stderr (items/s, ETA) when stderr is a terminal.
    Bar,
    /// One JSON object per committed batch on stdout, for scripts and supervisors.
    Jsonl,
    /// Nothing until the summary.
    Quiet,
}

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Items per embedding batch and per upsert.
    pub batch_size: usize,
    /// Threads decoding and preprocessing images.
    pub decode_threads: usize,
    /// Stop at the first bad corpus row instead of reporting and skipping it.
    pub strict: bool,
    /// DICOM frame to use.
    pub decode: DecodeOptions,
    /// Dump the graph after this many new items, so a restart replays little.
    pub flush_every: usize,
    /// Progress display.
    pub progress: ProgressMode,
    /// Expected number of records, for the ETA.
    pub expected_records: Option<u64>,
    /// Split texts into passages ([`crate::passages`]); without it a text longer than the
    /// model's limit is embedded up to the limit and reported in [`IndexSummary::truncated`].
    pub chunking: Option<ChunkOptions>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            decode_threads: std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
            strict: false,
            decode: DecodeOptions::default(),
            flush_every: 20_000,
            progress: ProgressMode::Bar,
            expected_records: None,
            chunking: None,
        }
    }
}

/// An item that could not be indexed, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedItem {
    /// Corpus line.
    pub line: usize,
    /// Item id.
    pub id: String,
    /// What went wrong.
    pub reason: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexSummary {
    /// Records read from the corpus (good and bad).
    pub read: u64,
    /// Corpus records embedded and written in this run.
    pub indexed: u64,
    /// Items those records became: one per unsplit record, one per passage of a split one.
    pub items_written: u64,
    /// Records whose text was longer than the model's token limit and was embedded only up to
    /// it (none when texts are split into passages).
    pub truncated: u64,
    /// The first [`MAX_REPORTED_TRUNCATIONS`] of them.
    pub truncated_items: Vec<TruncatedItem>,
    /// Items skipped because the collection already had them (resumed run).
    pub already_present: u64,
    /// Corpus rows that could not be parsed.
    pub bad_rows: Vec<BadRowReport>,
    /// Items whose image could not be read or decoded.
    pub failed: Vec<FailedItem>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Items indexed per second.
    pub items_per_second: f64,
}

/// Truncated records listed in a summary at most (all are counted).
pub const MAX_REPORTED_TRUNCATIONS: usize = 100;

/// A record whose text was cut at the model's token limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TruncatedItem {
    /// Corpus line.
    pub line: usize,
    /// Item id.
    pub id: String,
    /// Tokens of the whole text (special tokens included).
    pub tokens: usize,
    /// The limit it was cut at.
    pub limit: usize,
}

/// A bad corpus row in the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadRowReport {
    /// Line (JSONL) or record number (CSV, header = 1).
    pub line: usize,
    /// Why it was rejected.
    pub reason: String,
}

/// A record with its image already preprocessed.
struct Prepared {
    record: CorpusRecord,
    pixels: Option<Vec<f32>>,
    dicom: BTreeMap<String, String>,
    /// The text's passages, when it is split.
    passages: Option<Vec<Span>>,
    /// Tokens of a text the model will cut, when it is not split.
    overlong: Option<usize>,
}

enum Stage {
    Batch(Vec<Prepared>),
    Bad(BadRow),
    Failed(FailedItem),
    Present(u64),
}

/// Indexes `records` into `collection` with `model`. `runtime` runs the store's async calls;
/// call this from outside the runtime (e.g. the CLI's main thread).
pub fn index_records<I>(
    model: &MirageModel,
    collection: &Collection,
    runtime: &tokio::runtime::Handle,
    records: I,
    options: &PipelineOptions,
) -> Result<IndexSummary>
where
    I: Iterator<Item = std::result::Result<CorpusRecord, BadRow>> + Send,
{
    if options.batch_size == 0 {
        return Err(IndexError::invalid("batch size must be at least 1"));
    }
    collection.check_model(&model_ref(model))?;
    let started = Instant::now();
    let bar = progress_bar(options);
    let mut summary = IndexSummary::default();
    let preprocess_cfg = model.config().preprocess.clone();
    let tokenizer = model.tokenizer().clone();
    let limit = tokenizer.max_length();
    let chunking = options.chunking;
    let (tx, rx) = crossbeam_channel::bounded::<Stage>(4);

    let outcome = std::thread::scope(|scope| -> Result<()> {
        let producer = scope.spawn(move || -> Result<()> {
            let mut chunk = Vec::with_capacity(options.batch_size);
            let mut records = records;
            loop {
                chunk.clear();
                for r in records.by_ref() {
                    match r {
                        Ok(rec) => {
                            chunk.push(rec);
                            if chunk.len() == options.batch_size {
                                break;
                            }
                        }
                        Err(bad) => {
                            if tx.send(Stage::Bad(bad)).is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
                if chunk.is_empty() {
                    return Ok(());
                }
                // A split record is done when its first passage is stored: all its passages are
                // written in one batch.
                let probe = |r: &CorpusRecord| match (chunking, &r.text) {
                    (Some(_), Some(_)) => passages::passage_id(&r.id, 0),
                    _ => r.id.clone(),
                };
                let ids: Vec<String> = chunk.iter().map(probe).collect();
                let present = runtime.block_on(collection.existing(ids))?;
                let todo: Vec<CorpusRecord> = chunk
                    .drain(..)
                    .filter(|r| !present.contains(&probe(r)))
                    .collect();
                if !present.is_empty() && tx.send(Stage::Present(present.len() as u64)).is_err() {
                    return Ok(());
                }
                let (mut prepared, mut failed) = prepare_images(
                    todo,
                    options.decode_threads,
                    options.decode,
                    &preprocess_cfg,
                );
                prepared.retain_mut(|p| match measure_text(p, &tokenizer, chunking) {
                    Ok(()) => true,
                    Err(reason) => {
                        failed.push(FailedItem {
                            line: p.record.line,
                            id: p.record.id.clone(),
                            reason,
                        });
                        false
                    }
                });
                for f in failed {
                    if tx.send(Stage::Failed(f)).is_err() {
                        return Ok(());
                    }
                }
                if tx.send(Stage::Batch(prepared)).is_err() {
                    return Ok(());
                }
            }
        });

        let mut since_flush = 0usize;
        let consume = (|| -> Result<()> {
            for stage in rx.iter() {
                match stage {
                    Stage::Bad(bad) => {
                        if options.strict {
                            return Err(IndexError::invalid(format!(
                                "bad corpus row (strict mode): {bad}"
                            )));
                        }
                        bar.println(format!("skipped {bad}"));
                        summary.bad_rows.push(BadRowReport {
                            line: bad.line,
                            reason: bad.reason,
                        });
                    }
                    Stage::Failed(f) => {
                        bar.println(format!("failed line {}: {}: {}", f.line, f.id, f.reason));
                        summary.failed.push(f);
                    }
                    Stage::Present(n) => summary.already_present += n,
                    Stage::Batch(batch) => {
                        let n = batch.len();
                        let ids: Vec<String> = batch.iter().map(|p| p.record.id.clone()).collect();
                        let written: Vec<(String, usize)> = batch
                            .iter()
                            .map(|p| (p.record.id.clone(), p.passages.as_ref().map_or(0, Vec::len)))
                            .collect();
                        for p in &batch {
                            if let Some(tokens) = p.overlong {
                                summary.truncated += 1;
                                if summary.truncated_items.len() < MAX_REPORTED_TRUNCATIONS {
                                    bar.println(format!(
                                        "truncated line {}: {}: {tokens} tokens, the model reads {limit}",
                                        p.record.line,
                                        p.record.id,
                                    ));
                                    summary.truncated_items.push(TruncatedItem {
                                        line: p.record.line,
                                        id: p.record.id.clone(),
                                        tokens,
                                        limit,
                                    });
                                }
                            }
                        }
                        let items = embed_batch(model, batch)?;
                        summary.items_written += items.len() as u64;
                        runtime.block_on(collection.upsert(items))?;
                        runtime.block_on(passages::remove_stale(collection, &written))?;
                        summary.indexed += n as u64;
                        since_flush += n;
                        if options.progress == ProgressMode::Jsonl && n > 0 {
                            let line = serde_json::json!({
                                "event": "committed",
                                "indexed": summary.indexed,
                                "ids": ids,
                            });
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "{line}")?;
                            out.flush()?;
                        }
                        if since_flush >= options.flush_every {
                            runtime.block_on(collection.flush())?;
                            since_flush = 0;
                        }
                    }
                }
                bar.set_position(
                    summary.indexed
                        + summary.already_present
                        + summary.failed.len() as u64
                        + summary.bad_rows.len() as u64,
                );
            }
            Ok(())
        })();
        // Dropping the receiver stops the producer at its next send.
        drop(rx);
        let produced = producer
            .join()
            .map_err(|_| IndexError::invalid("corpus reader thread panicked"))?;
        consume?;
        produced
    });
    bar.finish_and_clear();
    outcome?;
    runtime.block_on(collection.flush())?;
    summary.read = summary.indexed
        + summary.already_present
        + summary.failed.len() as u64
        + summary.bad_rows.len() as u64;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.items_per_second = summary.indexed as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

fn progress_bar(options: &PipelineOptions) -> ProgressBar {
    if options.progress != ProgressMode::Bar {
        return ProgressBar::hidden();
    }
    let bar = match options.expected_records {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if options.expected_records.is_some() {
        "{elapsed_precise} [{bar:30}] {pos}/{len} items  {per_sec}  ETA {eta}"
    } else {
        "{elapsed_precise} {pos} items  {per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// Decodes and preprocesses the images of a chunk on `threads` workers. Records whose image
/// fails are returned as failures and not indexed at all: a half-indexed item would be taken as
/// done by a resumed run.
fn prepare_images(
    records: Vec<CorpusRecord>,
    threads: usize,
    decode: DecodeOptions,
    cfg: &mirage_model::config::ImagePreprocess,
) -> (Vec<Prepared>, Vec<FailedItem>) {
    let threads = threads.max(1);
    let per_worker = records.len().div_ceil(threads).max(1);
    let mut slots: Vec<Option<std::result::Result<Prepared, FailedItem>>> =
        (0..records.len()).map(|_| None).collect();
    let mut records: Vec<Option<CorpusRecord>> = records.into_iter().map(Some).collect();
    std::thread::scope(|s| {
        for (recs, outs) in records
            .chunks_mut(per_worker)
            .zip(slots.chunks_mut(per_worker))
        {
            s.spawn(move || {
                for (rec, out) in recs.iter_mut().zip(outs.iter_mut()) {
                    if let Some(rec) = rec.take() {
                        *out = Some(prepare_one(rec, decode, cfg));
                    }
                }
            });
        }
    });
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for r in slots.into_iter().flatten() {
        match r {
            Ok(p) => ok.push(p),
            Err(f) => failed.push(f),
        }
    }
    (ok, failed)
}

fn prepare_one(
    record: CorpusRecord,
    decode: DecodeOptions,
    cfg: &mirage_model::config::ImagePreprocess,
) -> std::result::Result<Prepared, FailedItem> {
    let Some(path) = record.image.clone() else {
        return Ok(Prepared {
            record,
            pixels: None,
            dicom: BTreeMap::new(),
            passages: None,
            overlong: None,
        });
    };
    let fail = |reason: String| FailedItem {
        line: record.line,
        id: record.id.clone(),
        reason,
    };
    let image = load_image(&path, decode).map_err(|e| fail(e.to_string()))?;
    let pixels = preprocess(&image, cfg).map_err(|e| fail(e.to_string()))?;
    Ok(Prepared {
        dicom: image.dicom_tags,
        record,
        pixels: Some(pixels),
        passages: None,
        overlong: None,
    })
}

/// Splits a record's text into passages, or measures it against the model's limit; the error
/// says why the record cannot be indexed.
fn measure_text(
    p: &mut Prepared,
    tokenizer: &mirage_model::tokenize::TextTokenizer,
    chunking: Option<ChunkOptions>,
) -> std::result::Result<(), String> {
    let Some(text) = &p.record.text else {
        return Ok(());
    };
    match chunking {
        Some(o) => {
            let spans = passages::plan(tokenizer, &p.record.id, text, &p.record.payload, &o)
                .map_err(|e| e.to_string())?;
            p.passages = Some(spans);
        }
        None => {
            let tokens = tokenizer.full_length(text).map_err(|e| e.to_string())?;
            p.overlong = (tokens > tokenizer.max_length()).then_some(tokens);
        }
    }
    Ok(())
}

/// Embeds one prepared batch: texts (or their passages) through the text tower, images through
/// the vision tower.
fn embed_batch(model: &MirageModel, batch: Vec<Prepared>) -> Result<Vec<Item>> {
    let mut texts: Vec<String> = Vec::new();
    for p in &batch {
        match (&p.record.text, &p.passages) {
            (Some(t), Some(spans)) => {
                let chars: Vec<char> = t.chars().collect();
                texts.extend(spans.iter().map(|s| s.text(&chars)));
            }
            (Some(t), None) => texts.push(t.clone()),
            (None, _) => {}
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut text_vecs = model.embed_texts(&refs)?.into_iter();
    let mut pixels = Vec::new();
    let mut n_images = 0;
    for p in &batch {
        if let Some(px) = &p.pixels {
            pixels.extend_from_slice(px);
            n_images += 1;
        }
    }
    let mut image_vecs = model.embed_preprocessed(pixels, n_images)?.into_iter();
    let mut items = Vec::with_capacity(batch.len());
    for p in batch {
        let image_vector = p.pixels.as_ref().and_then(|_| image_vecs.next());
        let Some(spans) = p.passages else {
            let text_vector = p.record.text.as_ref().and_then(|_| text_vecs.next());
            let mut item = Item {
                id: p.record.id,
                text: p.record.text,
                image: p.record.image_ref,
                payload: p.record.payload,
                text_vector,
                image_vector,
            };
            item.add_dicom_tags(p.dicom);
            items.push(item);
            continue;
        };
        let mut doc = Item {
            id: p.record.id,
            text: p.record.text,
            image: p.record.image_ref,
            payload: p.record.payload,
            text_vector: None,
            image_vector,
        };
        doc.add_dicom_tags(p.dicom);
        let vectors: Vec<Vec<f32>> = text_vecs.by_ref().take(spans.len()).collect();
        items.extend(passages::expand(doc, &spans, vectors)?);
    }
    Ok(items)
}

/// Counts the newlines of a file: a cheap estimate of its records for the ETA.
pub fn estimate_records(path: &std::path::Path) -> Option<u64> {
    use std::io::Read;
    let mut f = fs_err::File::open(path).ok()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    Some(lines)
}
