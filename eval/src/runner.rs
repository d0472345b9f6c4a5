//! The evaluation behind `mirage eval`: measures a loaded bundle on a labelled image–caption
//! dataset through the code that serves it (the same decoder, preprocessing, towers, prompt
//! ensembles and matching score as the HTTP API), so what is measured is what is served.
//!
//! The dataset is a folder in PMC-OA layout (`{split}.jsonl` rows with `image` and `caption`,
//! images under `images/`, read by [`mirage_data::pairs`]), as `mirage data mri-atlas` writes it;
//! `labels.jsonl` (per image) and `dataset.json` (`tasks`) add the zero-shot and kNN tasks.
//! Metrics ([`EvalReport`]):
//! - Recall@1/5/10 both ways on the split, with images that share a caption counted as one
//!   answer (augmented copies of a slice share their caption; without grouping a model would be
//!   charged for ties between identical texts);
//! - per single-label task: zero-shot accuracy with the prompt ensemble, its expected
//!   calibration error, and similarity-weighted kNN accuracy (labelled set = the reference
//!   split's images);
//! - per presence label: zero-shot AUC of the image's similarity to the label's prompts;
//! - injected-noise detection: a seeded share of the split's pairs get another pair's caption
//!   ([`crate::noise::swapped_pairs`], the trainer's plan), and the AUC of the matching score s
//!   (and of plain cosine) for telling clean from noisy.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use mirage_data::corpus::CorpusFormat;
use mirage_data::pairs::{read_pairs, PairsError};
use mirage_model::bundle::TextBank;
use mirage_model::config::{Matching, MatchingOverride};
use mirage_model::image_input::{load_image, DecodeOptions};
use mirage_model::matching::{default_matching, matching_scores};
use mirage_model::zeroshot::{prototypes, served_temperature};
use mirage_model::{Bundle, Embeddings, MirageModel};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::calibration::{Fit, LabelledLogits};
use crate::metrics::{
    self, auc, caption_columns, expected_calibration_error, grouped_ranks, knn_vote, Recall,
};
use crate::plot::{line_chart, Series};

/// Why an evaluation or calibration cannot run or be saved; each names the option, file, image
/// or label at fault.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// `noise` is outside [0, 1).
    #[error("--noise {0} must be in [0, 1)")]
    NoiseRate(f64),
    /// `k` is 0.
    #[error("--k must be at least 1")]
    NoNeighbours,
    /// `ece_bins` is 0.
    #[error("--ece-bins must be at least 1")]
    NoEceBins,
    /// A split's file cannot be read as pairs.
    #[error("reading split {split:?}")]
    Split {
        /// The split's name.
        split: String,
        /// What the pair reader refused.
        #[source]
        source: PairsError,
    },
    /// A row of a split has no caption.
    #[error("{}:{line}: no caption ({rows} rows without one); every evaluated pair needs one", path.display())]
    NoCaption {
        /// The split's file.
        path: PathBuf,
        /// 1-based line of the first such row.
        line: usize,
        /// Rows without a caption.
        rows: usize,
    },
    /// A split has fewer than two pairs.
    #[error("{} has {pairs} pairs; evaluation needs at least 2", path.display())]
    TooFewPairs {
        /// The split's file.
        path: PathBuf,
        /// Pairs read.
        pairs: usize,
    },
    /// A line of `labels.jsonl` is not JSON.
    #[error("{}:{line}: not JSON", path.display())]
    LabelsJson {
        /// `labels.jsonl`.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A row of `labels.jsonl` names no image.
    #[error("{}:{line}: no \"image\"", path.display())]
    LabelsNoImage {
        /// `labels.jsonl`.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// `dataset.json` is not JSON.
    #[error("{} is not JSON", path.display())]
    DatasetJson {
        /// `dataset.json`.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A task of `dataset.json` lacks its prompts or its classes and labels.
    #[error("{}: each task needs \"prompts\" and \"classes\" or \"labels\"", path.display())]
    TaskSpec {
        /// `dataset.json`.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// An image of a split cannot be decoded.
    #[error("decoding {}", path.display())]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's complaint.
        #[source]
        source: mirage_model::Error,
    },
    /// An image's label for a single-label task is not a string.
    #[error("label of {image} is {value}, not a class name")]
    LabelNotText {
        /// The image reference.
        image: String,
        /// The label as `labels.jsonl` has it.
        value: Value,
    },
    /// An image's label is not one of the task's classes.
    #[error("label {label:?} of {image} is not one of {classes:?}")]
    UnknownClass {
        /// The label.
        label: String,
        /// The image reference.
        image: String,
        /// The task's classes.
        classes: Vec<String>,
    },
    /// `labels.jsonl` has no label of a task for an image.
    #[error("labels.jsonl has no {task:?} for {image}")]
    MissingLabel {
        /// The task.
        task: String,
        /// The image reference.
        image: String,
    },
    /// A presence label of an image is not a boolean.
    #[error("labels.jsonl: {task}.{label} of {image} is not true/false")]
    PresenceNotBool {
        /// The task.
        task: String,
        /// The presence label.
        label: String,
        /// The image reference.
        image: String,
    },
    /// Calibration needs a single-label task and the dataset has none.
    #[error("{}/dataset.json declares no single-label task (\"classes\"), so there is nothing to calibrate zero-shot probabilities on", data.display())]
    NoSingleLabelTask {
        /// The dataset folder.
        data: PathBuf,
    },
    /// The temperature fit refused the logits.
    #[error(transparent)]
    Fit(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A chart could not be drawn or written.
    #[error(transparent)]
    Chart(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The model, its bundle, or the matching override failed.
    #[error(transparent)]
    Model(#[from] mirage_model::Error),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The report could not be serialised.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Dataset folder (`{split}.jsonl`, `images/`, optional `labels.jsonl` and `dataset.json`).
    pub data: PathBuf,
    /// Split to evaluate.
    pub split: String,
    /// Labelled split for kNN, and the text bank of bundles exported without one.
    pub reference_split: String,
    /// Share of the split's pairs given another pair's caption, in [0, 1).
    pub noise: f64,
    /// Seed of the injected noise.
    pub seed: u64,
    /// Neighbours in the kNN vote (at least 1).
    pub k: usize,
    /// Items per forward pass.
    pub batch_size: usize,
    /// Bins of the expected calibration error (at least 1).
    pub ece_bins: usize,
    /// Another nearest-neighbour rule for the noise detection's s than the model's own.
    pub matching: MatchingOverride,
}

/// The bundle an evaluation measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleInfo {
    /// Bundle directory.
    pub dir: PathBuf,
    /// The model's id.
    pub model_id: String,
    /// The bundle's checksum.
    pub sha256: String,
}

/// The data an evaluation read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// Dataset folder.
    pub dir: PathBuf,
    /// Split evaluated.
    pub split: String,
    /// Reference split (kNN, fallback bank).
    pub reference_split: String,
}

/// Recall@K both ways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retrieval {
    /// Image → text.
    pub image_to_text: Recall,
    /// Text → image.
    pub text_to_image: Recall,
    /// Images in the split.
    pub images: usize,
    /// Distinct captions (the text side's candidates).
    pub distinct_captions: usize,
}

/// Zero-shot result of one single-label task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZeroShotTask {
    /// Class names.
    pub classes: Vec<String>,
    /// Prompt templates.
    pub prompts: Vec<String>,
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// Expected calibration error of the top-1 probability as served (with the bundle's
    /// calibration temperature, if it has one).
    pub ece: f64,
    /// Mean negative log-likelihood of the true class as served.
    pub nll: f64,
    /// The temperature the served probabilities use (the bundle's calibration, else 1).
    pub temperature: f64,
    /// ECE and NLL at temperature 1 (the raw logit scale), for comparison.
    pub uncalibrated: Fit,
    /// Images scored.
    pub images: usize,
}

/// kNN result of one single-label task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnTask {
    /// Neighbours voting.
    pub k: usize,
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// Labelled images voting.
    pub reference_images: usize,
}

/// Zero-shot result of one presence task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceTask {
    /// Prompt templates.
    pub prompts: Vec<String>,
    /// AUC per label (none when the split has only one class of it).
    pub auc: BTreeMap<String, Option<f64>>,
    /// Mean of the defined AUCs.
    pub mean_auc: Option<f64>,
}

/// Injected-noise detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseDetection {
    /// Share of pairs corrupted.
    pub rate: f64,
    /// Seed of the corruption.
    pub seed: u64,
    /// Pairs whose caption changed.
    pub noisy_pairs: usize,
    /// AUC of the matching score s for clean vs noisy.
    pub auc_s: Option<f64>,
    /// AUC of plain image–caption cosine.
    pub auc_cosine: Option<f64>,
    /// Where the text bank came from.
    pub bank: String,
    /// Rows of the text bank.
    pub bank_rows: usize,
    /// Softmax scale of the nearest-neighbour step.
    pub nn_scale: f32,
    /// Whether s used the hard nearest neighbour.
    #[serde(default)]
    pub nn_hard: bool,
}

/// What `mirage eval` prints and saves as `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The bundle measured.
    pub bundle: BundleInfo,
    /// The data read.
    pub data: DataInfo,
    /// Recall@K both ways.
    pub retrieval: Retrieval,
    /// Per single-label task.
    pub zero_shot: BTreeMap<String, ZeroShotTask>,
    /// Per single-label task.
    pub knn: BTreeMap<String, KnnTask>,
    /// Per presence task.
    pub presence: BTreeMap<String, PresenceTask>,
    /// `None` when no pair was corrupted.
    pub noise_detection: Option<NoiseDetection>,
    /// Wall time of the evaluation.
    pub seconds: f64,
}

/// An evaluation: the report and what its plots draw.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The report.
    pub report: EvalReport,
    /// Per image, the rank of its caption (image → text), 0-based.
    pub image_to_text_ranks: Vec<usize>,
    /// Per caption, the rank of its best image (text → image), 0-based.
    pub text_to_image_ranks: Vec<usize>,
    /// Zero-shot reliability curve per single-label task.
    pub reliability: Vec<Series>,
    /// Per-query outcomes (1 hit / 0 miss) by study metric key (`i2t_r1`, `zero_shot_plane`,
    /// …; see [`per_query_key`]), saved as `per_query.json` for the study's paired intervals.
    pub per_query: BTreeMap<String, Vec<f64>>,
}

/// The key of a per-query outcome list: the metric (`i2t_r1`, `t2i_r5`, `zero_shot`, `knn`) and,
/// for task metrics, the task.
pub fn per_query_key(metric: &str, task: Option<&str>) -> String {
    match task {
        Some(t) => format!("{metric}_{t}"),
        None => metric.to_owned(),
    }
}

fn hits(ranks: &[usize], k: usize) -> Vec<f64> {
    ranks.iter().map(|&r| f64::from(u8::from(r < k))).collect()
}

fn outcomes(predicted: &[usize], truth: &[usize]) -> Vec<f64> {
    predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| f64::from(u8::from(p == t)))
        .collect()
}

/// A task from `dataset.json`: `classes` for single-label, `labels` for presence.
#[derive(Deserialize)]
struct TaskSpec {
    #[serde(default)]
    classes: Vec<String>,
    #[serde(default)]
    labels: Vec<String>,
    prompts: Vec<String>,
}

/// The image references and captions of a split.
struct Split {
    images: Vec<String>,
    captions: Vec<String>,
}

fn read_split(data: &Path, split: &str) -> Result<Split, RunnerError> {
    let path = data.join(format!("{split}.jsonl"));
    let (pairs, report) = read_pairs(&path, CorpusFormat::PmcOa, Some(&data.join("images")))
        .map_err(|source| RunnerError::Split {
            split: split.to_owned(),
            source,
        })?;
    // Every pair of a split is measured: a row dropped silently would change the benchmark.
    if let Some(line) = report.first_empty_caption {
        return Err(RunnerError::NoCaption {
            path,
            line,
            rows: report.empty_captions,
        });
    }
    if pairs.len() < 2 {
        return Err(RunnerError::TooFewPairs {
            path,
            pairs: pairs.len(),
        });
    }
    Ok(Split {
        images: pairs.iter().map(|p| p.image_ref.clone()).collect(),
        captions: pairs.into_iter().map(|p| p.caption).collect(),
    })
}

/// Per-image labels from `labels.jsonl`, keyed by image file name.
fn read_labels(data: &Path) -> Result<HashMap<String, Value>, RunnerError> {
    let path = data.join("labels.jsonl");
    if !path.exists() {
        return Ok(HashMap::new());
    }
    let text = fs_err::read_to_string(&path)?;
    let mut out = HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let row: Value = serde_json::from_str(line).map_err(|source| RunnerError::LabelsJson {
            path: path.clone(),
            line: n + 1,
            source,
        })?;
        let image = row["image"]
            .as_str()
            .ok_or_else(|| RunnerError::LabelsNoImage {
                path: path.clone(),
                line: n + 1,
            })?
            .to_owned();
        out.insert(image, row);
    }
    Ok(out)
}

fn read_tasks(data: &Path) -> Result<BTreeMap<String, TaskSpec>, RunnerError> {
    let path = data.join("dataset.json");
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let meta: Value = serde_json::from_slice(&fs_err::read(&path)?).map_err(|source| {
        RunnerError::DatasetJson {
            path: path.clone(),
            source,
        }
    })?;
    let Some(tasks) = meta.get("tasks") else {
        return Ok(BTreeMap::new());
    };
    serde_json::from_value(tasks.clone()).map_err(|source| RunnerError::TaskSpec { path, source })
}

/// Unit embeddings of the images, one row each, decoded as the server decodes uploads.
fn embed_image_files(
    model: &MirageModel,
    root: &Path,
    files: &[String],
    batch: usize,
) -> Result<Embeddings, RunnerError> {
    let mut all = Embeddings::default();
    for chunk in files.chunks(batch.max(1)) {
        let decoded = chunk
            .iter()
            .map(|f| {
                let path = root.join(f);
                load_image(&path, DecodeOptions::default())
                    .map_err(|source| RunnerError::Decode { path, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pixels = model.preprocess_images(&decoded)?;
        all.extend(&model.embed_pixel_batch(&pixels, decoded.len())?)?;
    }
    Ok(all)
}

fn embed_texts(
    model: &MirageModel,
    texts: &[String],
    batch: usize,
) -> Result<Embeddings, RunnerError> {
    let mut all = Embeddings::default();
    for chunk in texts.chunks(batch.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        all.extend(&model.embed_text_batch(&refs)?)?;
    }
    Ok(all)
}

/// A text bank of the distinct `captions` embedded by `model`, scored with the model's own logit
/// scale as σ_q unless its bundle records a `matching`: what bundles exported without a bank
/// (the CLIP baseline) are audited and evaluated against, and the "whole corpus re-encoded"
/// bank of `mirage audit --bank corpus`.
///
/// # Errors
///
/// A model failure.
pub fn caption_bank(
    model: &MirageModel,
    captions: &[String],
    batch: usize,
) -> Result<(TextBank, Matching), RunnerError> {
    let (captions, _) = distinct(captions);
    let embeddings = embed_texts(model, &captions, batch)?;
    let matching = model.config().matching.unwrap_or(Matching {
        nn_scale: model.logit_scale(),
        hard: false,
    });
    Ok((
        TextBank {
            embeddings,
            captions,
        },
        matching,
    ))
}

/// Distinct captions in first-seen order and, per pair, the index of its caption.
fn distinct(captions: &[String]) -> (Vec<String>, Vec<usize>) {
    let (columns, text_of) = caption_columns(captions);
    (
        columns.iter().map(|&i| captions[i].clone()).collect(),
        text_of,
    )
}

/// Gives a seeded `rate` share of the pairs another chosen pair's caption (the trainer's plan,
/// [`crate::noise::swapped_pairs`]); a pair is noisy when its caption text changed.
fn inject_noise(captions: &[String], rate: f64, seed: u64) -> (Vec<String>, Vec<bool>) {
    let mut noisy_captions = captions.to_vec();
    for (i, from) in crate::noise::swapped_pairs(captions.len(), rate, seed) {
        noisy_captions[i] = captions[from].clone();
    }
    let noisy = noisy_captions
        .iter()
        .zip(captions)
        .map(|(a, b)| a != b)
        .collect();
    (noisy_captions, noisy)
}

fn mean(xs: impl IntoIterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = xs.into_iter().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn class_index(value: &Value, classes: &[String], image: &str) -> Result<usize, RunnerError> {
    let Some(label) = value.as_str() else {
        return Err(RunnerError::LabelNotText {
            image: image.to_owned(),
            value: value.clone(),
        });
    };
    classes
        .iter()
        .position(|c| c == label)
        .ok_or_else(|| RunnerError::UnknownClass {
            label: label.to_owned(),
            image: image.to_owned(),
            classes: classes.to_vec(),
        })
}

/// The row of `labels.jsonl` for `task` of `image`.
fn label_of<'a>(
    labels: &'a HashMap<String, Value>,
    image: &str,
    task: &str,
) -> Result<&'a Value, RunnerError> {
    labels
        .get(image)
        .and_then(|row| row.get(task))
        .ok_or_else(|| RunnerError::MissingLabel {
            task: task.to_owned(),
            image: image.to_owned(),
        })
}

/// The class index of each image for the single-label `task`.
fn class_truth(
    labels: &HashMap<String, Value>,
    images: &[String],
    task: &str,
    classes: &[String],
) -> Result<Vec<usize>, RunnerError> {
    images
        .iter()
        .map(|img| class_index(label_of(labels, img, task)?, classes, img))
        .collect()
}

/// Zero-shot logits of a single-label task as `POST /v1/classify` forms them: the logit scale
/// times the cosine of each image to each class's prompt-ensemble prototype.
fn zero_shot_logits(
    model: &MirageModel,
    image_emb: &Embeddings,
    task: &TaskSpec,
    truth: Vec<usize>,
) -> Result<LabelledLogits, RunnerError> {
    let protos = prototypes(model, &task.classes, &task.prompts)?;
    let cos = image_emb.similarities(&protos)?;
    let scale = f64::from(model.logit_scale());
    Ok(LabelledLogits {
        logits: cos
            .chunks_exact(protos.len())
            .map(|row| row.iter().map(|&c| f64::from(c) * scale).collect())
            .collect(),
        truth,
    })
}

/// Evaluates `model` (loaded from `bundle`, whose directory is `bundle_dir`) on `o.data`.
///
/// # Errors
///
/// Options out of range, an unreadable dataset or image, labels that do not match the tasks,
/// or a model failure.
pub fn evaluate(
    model: &MirageModel,
    bundle: &Bundle,
    bundle_dir: &Path,
    o: &EvalOptions,
) -> Result<Evaluation, RunnerError> {
    if !(0.0..1.0).contains(&o.noise) {
        return Err(RunnerError::NoiseRate(o.noise));
    }
    if o.k < 1 {
        return Err(RunnerError::NoNeighbours);
    }
    if o.ece_bins < 1 {
        return Err(RunnerError::NoEceBins);
    }
    o.matching.validate()?;
    let started = Instant::now();
    let images_root = o.data.join("images");
    let split = read_split(&o.data, &o.split)?;
    let labels = read_labels(&o.data)?;
    let tasks = read_tasks(&o.data)?;

    let image_emb = embed_image_files(model, &images_root, &split.images, o.batch_size)?;
    let (unique, text_of) = distinct(&split.captions);
    let text_emb = embed_texts(model, &unique, o.batch_size)?;
    let sims = image_emb.similarities(&text_emb)?;
    let (i2t, t2i) = grouped_ranks(&sims, unique.len(), &text_of);
    let retrieval = Retrieval {
        image_to_text: metrics::recall_from_ranks(&i2t),
        text_to_image: metrics::recall_from_ranks(&t2i),
        images: split.images.len(),
        distinct_captions: unique.len(),
    };

    let needs_reference = tasks.values().any(|t| !t.classes.is_empty());
    // Read once: it decides whether the reference split is needed and scores the noisy pairs.
    let bundled_bank = bundle.text_bank()?;
    let reference = if needs_reference || bundled_bank.is_none() {
        Some(read_split(&o.data, &o.reference_split)?)
    } else {
        None
    };
    let mut zero_shot = BTreeMap::new();
    let mut knn = BTreeMap::new();
    let mut presence = BTreeMap::new();
    let mut reliability: Vec<Series> = Vec::new();
    let mut per_query = BTreeMap::new();
    for (key, ranks) in [("i2t", &i2t), ("t2i", &t2i)] {
        for k in [1, 5] {
            per_query.insert(format!("{key}_r{k}"), hits(ranks, k));
        }
    }
    let mut reference_emb: Option<Embeddings> = None;
    for (name, task) in &tasks {
        if !task.classes.is_empty() {
            let truth = class_truth(&labels, &split.images, name, &task.classes)?;
            let logits = zero_shot_logits(model, &image_emb, task, truth)?;
            let t = f64::from(served_temperature(model));
            let (predicted, confidence, correct) = logits.top1(t);
            let truth = &logits.truth;
            per_query.insert(
                per_query_key("zero_shot", Some(name)),
                outcomes(&predicted, truth),
            );
            reliability.push(Series {
                name: format!("{name} (zero-shot)"),
                points: metrics::reliability(&confidence, &correct, o.ece_bins)
                    .iter()
                    .map(|b| (b.confidence, b.accuracy))
                    .collect(),
            });
            zero_shot.insert(
                name.clone(),
                ZeroShotTask {
                    classes: task.classes.clone(),
                    prompts: task.prompts.clone(),
                    accuracy: metrics::accuracy(&predicted, truth),
                    ece: expected_calibration_error(&confidence, &correct, o.ece_bins),
                    nll: logits.nll(t),
                    temperature: t,
                    uncalibrated: logits.fit_at(1.0, o.ece_bins),
                    images: truth.len(),
                },
            );
            let reference = reference.as_ref().expect("read when a task has classes");
            if reference_emb.is_none() {
                reference_emb = Some(embed_image_files(
                    model,
                    &images_root,
                    &reference.images,
                    o.batch_size,
                )?);
            }
            let ref_emb = reference_emb.as_ref().expect("just embedded");
            let ref_truth = class_truth(&labels, &reference.images, name, &task.classes)?;
            let n_ref = ref_truth.len();
            let sims = image_emb.similarities(ref_emb)?;
            let knn_pred: Vec<usize> = sims
                .chunks(n_ref)
                .map(|row| knn_vote(row, &ref_truth, task.classes.len(), o.k, 0.07))
                .collect();
            per_query.insert(per_query_key("knn", Some(name)), outcomes(&knn_pred, truth));
            knn.insert(
                name.clone(),
                KnnTask {
                    k: o.k,
                    accuracy: metrics::accuracy(&knn_pred, truth),
                    reference_images: n_ref,
                },
            );
        }
        if !task.labels.is_empty() {
            let protos = prototypes(model, &task.labels, &task.prompts)?;
            let cos: Vec<Vec<f32>> = image_emb
                .similarities(&protos)?
                .chunks_exact(protos.len())
                .map(<[f32]>::to_vec)
                .collect();
            let mut per_label = BTreeMap::new();
            for (j, label) in task.labels.iter().enumerate() {
                let present = split
                    .images
                    .iter()
                    .map(|img| {
                        label_of(&labels, img, name)?
                            .get(label)
                            .and_then(Value::as_bool)
                            .ok_or_else(|| RunnerError::PresenceNotBool {
                                task: name.clone(),
                                label: label.clone(),
                                image: img.clone(),
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let scores: Vec<f64> = cos.iter().map(|r| f64::from(r[j])).collect();
                per_label.insert(label.clone(), auc(&scores, &present));
            }
            let mean_auc = mean(per_label.values().filter_map(|a| *a));
            presence.insert(
                name.clone(),
                PresenceTask {
                    prompts: task.prompts.clone(),
                    auc: per_label,
                    mean_auc,
                },
            );
        }
    }

    let (noisy_captions, noisy) = inject_noise(&split.captions, o.noise, o.seed);
    let noise_detection = if noisy.iter().any(|&n| n) {
        let (bank, matching, bank_source) = match bundled_bank {
            Some(bank) => (bank, default_matching(model), "the bundle's text bank"),
            None => {
                // CLIP-style bundles carry no bank: use the reference split's captions.
                let captions = &reference.as_ref().expect("read without a bank").captions;
                let (bank, matching) = caption_bank(model, captions, o.batch_size)?;
                (bank, matching, "reference-split captions")
            }
        };
        let matching = o.matching.apply(matching);
        let noisy_text_emb = embed_texts(model, &noisy_captions, o.batch_size)?;
        let s: Vec<f64> = matching_scores(&bank, matching, &image_emb, &noisy_text_emb)?
            .iter()
            .map(|m| f64::from(m.s))
            .collect();
        let cosine: Vec<f64> = image_emb
            .rows()
            .zip(noisy_text_emb.rows())
            .map(|(i, t)| f64::from(mirage_model::kernels::dot(i, t)))
            .collect();
        let clean: Vec<bool> = noisy.iter().map(|n| !n).collect();
        Some(NoiseDetection {
            rate: o.noise,
            seed: o.seed,
            noisy_pairs: noisy.iter().filter(|&&n| n).count(),
            auc_s: auc(&s, &clean),
            auc_cosine: auc(&cosine, &clean),
            bank: bank_source.to_owned(),
            bank_rows: bank.captions.len(),
            nn_scale: matching.nn_scale,
            nn_hard: matching.hard,
        })
    } else {
        None
    };

    let report = EvalReport {
        bundle: BundleInfo {
            dir: bundle_dir.to_path_buf(),
            model_id: model.model_id().to_owned(),
            sha256: model.bundle_sha256().to_owned(),
        },
        data: DataInfo {
            dir: o.data.clone(),
            split: o.split.clone(),
            reference_split: o.reference_split.clone(),
        },
        retrieval,
        zero_shot,
        knn,
        presence,
        noise_detection,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(Evaluation {
        report,
        image_to_text_ranks: i2t,
        text_to_image_ranks: t2i,
        reliability,
        per_query,
    })
}

/// What `mirage calibrate` fits on.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// Dataset folder (as for [`EvalOptions::data`]); `dataset.json` needs a single-label task.
    pub data: PathBuf,
    /// Held-out split the temperature is fitted on (not the test split).
    pub split: String,
    /// Items per forward pass.
    pub batch_size: usize,
    /// Bins of the expected calibration error (at least 1).
    pub ece_bins: usize,
}

/// One task's fit before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCalibration {
    /// Images of the task.
    pub images: usize,
    /// With the bundle's temperature before fitting.
    pub before: Fit,
    /// With the fitted temperature.
    pub after: Fit,
}

/// What `mirage calibrate` prints: the fitted temperature and NLL/ECE before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    /// The fitted temperature (logits are divided by it).
    pub temperature: f64,
    /// The bundle's temperature before (1 when it had none).
    pub previous_temperature: f64,
    /// Dataset folder.
    pub data: PathBuf,
    /// Split fitted on.
    pub split: String,
    /// All tasks' items pooled (what the temperature minimises).
    pub before: Fit,
    /// Pooled, with the fitted temperature.
    pub after: Fit,
    /// Per single-label task.
    pub tasks: BTreeMap<String, TaskCalibration>,
}

/// Fits the zero-shot temperature of `model` on the single-label tasks of `o.data`'s `o.split`
/// by minimising the pooled NLL ([`LabelledLogits::fit_temperature`]).
///
/// # Errors
///
/// Options out of range, a dataset without single-label tasks, unreadable data, or a model
/// failure.
pub fn calibrate(
    model: &MirageModel,
    o: &CalibrateOptions,
) -> Result<CalibrationReport, RunnerError> {
    if o.ece_bins < 1 {
        return Err(RunnerError::NoEceBins);
    }
    let split = read_split(&o.data, &o.split)?;
    let labels = read_labels(&o.data)?;
    let tasks = read_tasks(&o.data)?;
    let single: Vec<(&String, &TaskSpec)> = tasks
        .iter()
        .filter(|(_, t)| !t.classes.is_empty())
        .collect();
    if single.is_empty() {
        return Err(RunnerError::NoSingleLabelTask {
            data: o.data.clone(),
        });
    }
    let image_emb = embed_image_files(model, &o.data.join("images"), &split.images, o.batch_size)?;
    let mut per_task = Vec::new();
    let mut pooled = LabelledLogits::default();
    for (name, task) in single {
        let truth = class_truth(&labels, &split.images, name, &task.classes)?;
        let logits = zero_shot_logits(model, &image_emb, task, truth)?;
        pooled.extend(&logits);
        per_task.push((name.clone(), logits));
    }
    let previous = f64::from(served_temperature(model));
    let t = pooled
        .fit_temperature()
        .map_err(|e| RunnerError::Fit(e.into()))?;
    Ok(CalibrationReport {
        temperature: t,
        previous_temperature: previous,
        data: o.data.clone(),
        split: o.split.clone(),
        before: pooled.fit_at(previous, o.ece_bins),
        after: pooled.fit_at(t, o.ece_bins),
        tasks: per_task
            .into_iter()
            .map(|(name, l)| {
                let c = TaskCalibration {
                    images: l.truth.len(),
                    before: l.fit_at(previous, o.ece_bins),
                    after: l.fit_at(t, o.ece_bins),
                };
                (name, c)
            })
            .collect(),
    })
}

impl Evaluation {
    /// Writes `report.json`, `per_query.json`, `recall.png` and (with single-label tasks)
    /// `reliability.png` into `out`, creating it.
    ///
    /// # Errors
    ///
    /// The folder or a file cannot be written.
    pub fn save(&self, out: &Path) -> Result<(), RunnerError> {
        fs_err::create_dir_all(out)?;
        fs_err::write(
            out.join("report.json"),
            serde_json::to_vec_pretty(&self.report)?,
        )?;
        fs_err::write(
            out.join("per_query.json"),
            serde_json::to_vec(&self.per_query)?,
        )?;
        let curve = |name: &str, ranks: &[usize]| Series {
            name: name.to_owned(),
            points: (1..=10)
                .map(|k| (k as f64, metrics::recall_at(ranks, k)))
                .collect(),
        };
        line_chart(
            &out.join("recall.png"),
            &format!(
                "Recall@K on {} ({})",
                self.report.data.split, self.report.bundle.model_id
            ),
            "K",
            "recall",
            &[
                curve("image → text", &self.image_to_text_ranks),
                curve("text → image", &self.text_to_image_ranks),
            ],
        )
        .map_err(|e| RunnerError::Chart(e.into()))?;
        if !self.reliability.is_empty() {
            let mut reliability = self.reliability.clone();
            reliability.push(Series {
                name: "perfect calibration".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0)],
            });
            line_chart(
                &out.join("reliability.png"),
                "Zero-shot reliability",
                "confidence",
                "accuracy",
                &reliability,
            )
            .map_err(|e| RunnerError::Chart(e.into()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn injected_noise_changes_exactly_the_flagged_captions() {
        let captions: Vec<String> = (0..20).map(|i| format!("caption {i}")).collect();
        let (noisy, flags) = inject_noise(&captions, 0.4, 3);
        assert_eq!(flags.iter().filter(|&&f| f).count(), 8);
        for ((n, c), f) in noisy.iter().zip(&captions).zip(&flags) {
            assert_eq!(n != c, *f);
        }
        let (again, _) = inject_noise(&captions, 0.4, 3);
        assert_eq!(noisy, again, "seeded");
        let (none, flags) = inject_noise(&captions, 0.0, 3);
        assert_eq!(none, captions);
        assert!(flags.iter().all(|f| !f));
    }

    /// The error of reading `split` from `data`; `Split` has no `Debug`, so no `unwrap_err`.
    fn split_error(data: &Path, split: &str) -> RunnerError {
        match read_split(data, split) {
            Ok(_) => panic!("{split} read"),
            Err(e) => e,
        }
    }

    #[test]
    fn errors_name_what_is_wrong_and_keep_their_cause_for_anyhow_callers() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let e = split_error(data, "test");
        assert!(matches!(&e, RunnerError::Split { split, .. } if split == "test"));
        assert_eq!(e.to_string(), "reading split \"test\"");
        let cause = std::error::Error::source(&e).unwrap().to_string();
        // What `mirage eval` prints: the whole chain, as when the runner returned anyhow.
        let printed = format!("{:#}", anyhow::Error::from(e));
        assert!(
            printed.starts_with("reading split \"test\": ") && printed.ends_with(&cause),
            "{printed}"
        );

        let row = |caption: &str| format!("{{\"image\": \"a.png\", \"caption\": \"{caption}\"}}\n");
        fs_err::write(data.join("one.jsonl"), row("a")).unwrap();
        assert_eq!(
            split_error(data, "one").to_string(),
            format!(
                "{} has 1 pairs; evaluation needs at least 2",
                data.join("one.jsonl").display()
            )
        );
        fs_err::write(data.join("blank.jsonl"), row("a") + &row("") + &row("b")).unwrap();
        assert_eq!(
            split_error(data, "blank").to_string(),
            format!(
                "{}:2: no caption (1 rows without one); every evaluated pair needs one",
                data.join("blank.jsonl").display()
            )
        );

        fs_err::write(data.join("labels.jsonl"), "{\"plane\": \"axial\"}\n").unwrap();
        let e = read_labels(data).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}:1: no \"image\"", data.join("labels.jsonl").display())
        );
        let labels = HashMap::from([("a.png".to_owned(), json!({"plane": 3}))]);
        let e = class_truth(&labels, &["a.png".into()], "plane", &["axial".into()]);
        assert_eq!(
            e.unwrap_err().to_string(),
            "label of a.png is 3, not a class name"
        );
        let e = class_truth(&labels, &["b.png".into()], "plane", &["axial".into()]);
        assert_eq!(
            e.unwrap_err().to_string(),
            "labels.jsonl has no \"plane\" for b.png"
        );
    }
}
