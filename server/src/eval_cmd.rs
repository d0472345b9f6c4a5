//! `mirage eval`: measures an exported bundle on a labelled image–caption dataset through the
//! code that serves it (the same decoder, preprocessing, towers, prompt ensembles and matching
//! score as the HTTP API), so what is measured is what is served.
//!
//! The dataset is a folder in PMC-OA layout (`{split}.jsonl` rows with `image` and `caption`,
//! images under `images/`), as `mirage data mri-atlas` writes it; `labels.jsonl` (per image) and
//! `dataset.json` (`tasks`) add the zero-shot and kNN tasks. Metrics:
//! - Recall@1/5/10 both ways on the split, with images that share a caption counted as one
//!   answer (augmented copies of a slice share their caption; without grouping a model would be
//!   charged for ties between identical texts);
//! - per single-label task: zero-shot accuracy with the prompt ensemble, its expected
//!   calibration error, and similarity-weighted kNN accuracy (k = 20, labelled set = the
//!   reference split's images);
//! - per presence label: zero-shot AUC of the image's similarity to the label's prompts;
//! - injected-noise detection: a seeded share of the split's pairs get another pair's caption,
//!   and the AUC of the matching score s (and of plain cosine) for telling clean from noisy.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::Tensor;
use clap::Args;
use mirage_eval::metrics::{self, auc, expected_calibration_error, grouped_ranks, knn_vote};
use mirage_eval::plot::{line_chart, Series};
use mirage_model::bundle::TextBank;
use mirage_model::config::{Matching, PromptTemplates};
use mirage_model::image_input::{load_image, DecodeOptions};
use mirage_model::matching::matching_scores;
use mirage_model::zeroshot::{classify, prototypes, ClassifyMode};
use mirage_model::{Bundle, MirageModel};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Args)]
pub(crate) struct EvalArgs {
    /// Bundle directory.
    #[arg(long, env = "MIRAGE_BUNDLE")]
    bundle: PathBuf,
    /// Dataset folder: `{split}.jsonl` (PMC-OA rows: image, caption) with images in `images/`,
    /// optional `labels.jsonl` and `dataset.json` tasks (as `mirage data mri-atlas` writes).
    #[arg(long)]
    data: PathBuf,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    split: String,
    /// Labelled split for kNN, and the text bank of bundles exported without one.
    #[arg(long, default_value = "train")]
    reference_split: String,
    /// Folder for `report.json` and the plots (default: print the report only).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Share of the split's pairs given another pair's caption for the noise-detection AUC.
    #[arg(long, default_value_t = 0.4)]
    noise: f64,
    /// Seed of the injected noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Neighbours in the kNN vote.
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// Items per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Bins of the expected calibration error.
    #[arg(long, default_value_t = 10)]
    ece_bins: usize,
    #[command(flatten)]
    engine: mirage_server::config::EngineArgs,
}

#[derive(Deserialize)]
struct PairRow {
    image: String,
    caption: String,
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

struct Split {
    images: Vec<String>,
    captions: Vec<String>,
}

fn read_split(data: &Path, split: &str) -> Result<Split> {
    let path = data.join(format!("{split}.jsonl"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading split {split:?} ({})", path.display()))?;
    let mut out = Split {
        images: Vec::new(),
        captions: Vec::new(),
    };
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: PairRow = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: expected {{\"image\": …, \"caption\": …}}",
                path.display(),
                n + 1
            )
        })?;
        out.images.push(row.image);
        out.captions.push(row.caption);
    }
    ensure!(
        out.images.len() >= 2,
        "{} has {} pairs; evaluation needs at least 2",
        path.display(),
        out.images.len()
    );
    Ok(out)
}

/// Per-image labels from `labels.jsonl`, keyed by image file name.
fn read_labels(data: &Path) -> Result<HashMap<String, Value>> {
    let path = data.join("labels.jsonl");
    if !path.exists() {
        return Ok(HashMap::new());
    }
    let text = std::fs::read_to_string(&path)?;
    let mut out = HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let row: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let image = row["image"]
            .as_str()
            .with_context(|| format!("{}:{}: no \"image\"", path.display(), n + 1))?
            .to_owned();
        out.insert(image, row);
    }
    Ok(out)
}

fn read_tasks(data: &Path) -> Result<BTreeMap<String, TaskSpec>> {
    let path = data.join("dataset.json");
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let meta: Value = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let Some(tasks) = meta.get("tasks") else {
        return Ok(BTreeMap::new());
    };
    serde_json::from_value(tasks.clone()).with_context(|| {
        format!(
            "{}: each task needs \"prompts\" and \"classes\" or \"labels\"",
            path.display()
        )
    })
}

/// Unit embeddings [N, D] of the images, decoded as the server decodes uploads.
fn embed_image_files(
    model: &MirageModel,
    root: &Path,
    files: &[String],
    batch: usize,
) -> Result<Tensor> {
    let mut parts = Vec::new();
    for chunk in files.chunks(batch.max(1)) {
        let decoded = chunk
            .iter()
            .map(|f| {
                let path = root.join(f);
                load_image(&path, DecodeOptions::default())
                    .with_context(|| format!("decoding {}", path.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let pixels = model.image_batch(&decoded)?;
        parts.push(model.embed_pixels(&pixels)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

fn embed_texts(model: &MirageModel, texts: &[String], batch: usize) -> Result<Tensor> {
    let mut parts = Vec::new();
    for chunk in texts.chunks(batch.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        parts.push(model.embed_texts_tensor(&refs)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Distinct captions in first-seen order and, per pair, the index of its caption.
fn distinct(captions: &[String]) -> (Vec<String>, Vec<usize>) {
    let (columns, text_of) = mirage_eval::metrics::caption_columns(captions);
    (
        columns.iter().map(|&i| captions[i].clone()).collect(),
        text_of,
    )
}

/// Gives a seeded `rate` share of the pairs another chosen pair's caption (the trainer's plan,
/// [`mirage_eval::noise::swapped_pairs`]); a pair is noisy when its caption text changed.
pub(crate) fn inject_noise(captions: &[String], rate: f64, seed: u64) -> (Vec<String>, Vec<bool>) {
    let mut noisy_captions = captions.to_vec();
    for (i, from) in mirage_eval::noise::swapped_pairs(captions.len(), rate, seed) {
        noisy_captions[i] = captions[from].clone();
    }
    let noisy = noisy_captions
        .iter()
        .zip(captions)
        .map(|(a, b)| a != b)
        .collect();
    (noisy_captions, noisy)
}

fn rows(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1()?)
}

fn mean(xs: impl IntoIterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = xs.into_iter().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

pub(crate) fn run_eval(a: EvalArgs) -> Result<()> {
    ensure!(
        (0.0..1.0).contains(&a.noise),
        "--noise {} must be in [0, 1)",
        a.noise
    );
    ensure!(a.k >= 1, "--k must be at least 1");
    ensure!(a.ece_bins >= 1, "--ece-bins must be at least 1");
    let started = Instant::now();
    let bundle = Bundle::open(&a.bundle)
        .with_context(|| format!("opening bundle {}", a.bundle.display()))?;
    let model = MirageModel::load(&bundle, &a.engine.options())?;
    let images_root = a.data.join("images");
    let split = read_split(&a.data, &a.split)?;
    let labels = read_labels(&a.data)?;
    let tasks = read_tasks(&a.data)?;

    let image_emb = embed_image_files(&model, &images_root, &split.images, a.batch_size)?;
    let (unique, text_of) = distinct(&split.captions);
    let text_emb = embed_texts(&model, &unique, a.batch_size)?;
    let sims = rows(&image_emb.matmul(&text_emb.t()?)?)?;
    let (i2t, t2i) = grouped_ranks(&sims, unique.len(), &text_of);
    let recall = |r: &[usize]| metrics::recall_from_ranks(r);
    let retrieval = json!({
        "image_to_text": recall(&i2t),
        "text_to_image": recall(&t2i),
        "images": split.images.len(),
        "distinct_captions": unique.len(),
    });

    // Zero-shot and kNN tasks.
    let needs_reference = tasks.values().any(|t| !t.classes.is_empty());
    // Read once: it decides whether the reference split is needed and scores the noisy pairs.
    let bundled_bank = bundle.text_bank(&candle_core::Device::Cpu)?;
    let reference = if needs_reference || bundled_bank.is_none() {
        Some(read_split(&a.data, &a.reference_split)?)
    } else {
        None
    };
    let label_of = |image: &str, task: &str| -> Result<&Value> {
        labels
            .get(image)
            .and_then(|row| row.get(task))
            .with_context(|| format!("labels.jsonl has no {task:?} for {image}"))
    };
    let mut zero_shot = serde_json::Map::new();
    let mut knn = serde_json::Map::new();
    let mut presence = serde_json::Map::new();
    let mut reliability: Vec<Series> = Vec::new();
    let mut reference_emb: Option<Tensor> = None;
    for (name, task) in &tasks {
        let templates = PromptTemplates {
            positive: task.prompts.clone(),
            negative: model.prompt_templates().negative,
        };
        if !task.classes.is_empty() {
            let truth = split
                .images
                .iter()
                .map(|img| class_index(label_of(img, name)?, &task.classes, img))
                .collect::<Result<Vec<_>>>()?;
            let scores = classify(
                &model,
                &image_emb,
                &task.classes,
                Some(&templates),
                ClassifyMode::SingleLabel,
                None,
            )?;
            let (mut predicted, mut confidence) = (Vec::new(), Vec::new());
            for per_image in &scores {
                let (best, top) = per_image
                    .iter()
                    .enumerate()
                    .max_by(|x, y| x.1.probability.total_cmp(&y.1.probability))
                    .expect("at least one class");
                predicted.push(best);
                confidence.push(f64::from(top.probability));
            }
            let correct: Vec<bool> = predicted.iter().zip(&truth).map(|(p, t)| p == t).collect();
            reliability.push(Series {
                name: format!("{name} (zero-shot)"),
                points: metrics::reliability(&confidence, &correct, a.ece_bins)
                    .iter()
                    .map(|b| (b.confidence, b.accuracy))
                    .collect(),
            });
            zero_shot.insert(
                name.clone(),
                json!({
                    "classes": task.classes,
                    "prompts": task.prompts,
                    "accuracy": metrics::accuracy(&predicted, &truth),
                    "ece": expected_calibration_error(&confidence, &correct, a.ece_bins),
                    "images": truth.len(),
                }),
            );
            let reference = reference.as_ref().expect("read when a task has classes");
            if reference_emb.is_none() {
                reference_emb = Some(embed_image_files(
                    &model,
                    &images_root,
                    &reference.images,
                    a.batch_size,
                )?);
            }
            let ref_emb = reference_emb.as_ref().expect("just embedded");
            let ref_truth = reference
                .images
                .iter()
                .map(|img| class_index(label_of(img, name)?, &task.classes, img))
                .collect::<Result<Vec<_>>>()?;
            let n_ref = ref_truth.len();
            let sims = rows(&image_emb.matmul(&ref_emb.t()?)?)?;
            let knn_pred: Vec<usize> = sims
                .chunks(n_ref)
                .map(|row| knn_vote(row, &ref_truth, task.classes.len(), a.k, 0.07))
                .collect();
            knn.insert(
                name.clone(),
                json!({"k": a.k, "accuracy": metrics::accuracy(&knn_pred, &truth), "reference_images": n_ref}),
            );
        }
        if !task.labels.is_empty() {
            let protos = prototypes(&model, &task.labels, &task.prompts)?;
            let cos: Vec<Vec<f32>> = image_emb.matmul(&protos.t()?)?.to_vec2()?;
            let mut per_label = serde_json::Map::new();
            for (j, label) in task.labels.iter().enumerate() {
                let present = split
                    .images
                    .iter()
                    .map(|img| {
                        label_of(img, name)?
                            .get(label)
                            .and_then(Value::as_bool)
                            .with_context(|| {
                                format!("labels.jsonl: {name}.{label} of {img} is not true/false")
                            })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let scores: Vec<f64> = cos.iter().map(|r| f64::from(r[j])).collect();
                per_label.insert(label.clone(), json!(auc(&scores, &present)));
            }
            let mean_auc = mean(per_label.values().filter_map(Value::as_f64));
            presence.insert(
                name.clone(),
                json!({"prompts": task.prompts, "auc": per_label, "mean_auc": mean_auc}),
            );
        }
    }

    // Injected-noise detection with the matching score s.
    let (noisy_captions, noisy) = inject_noise(&split.captions, a.noise, a.seed);
    let noise = if noisy.iter().any(|&n| n) {
        let (bank, matching, bank_source) = match bundled_bank {
            Some(bank) => (
                bank,
                model.config().matching.unwrap_or_default(),
                "the bundle's text bank",
            ),
            None => {
                // CLIP-style bundles carry no bank: use the reference split's captions, with the
                // model's own logit scale as the NN softmax scale.
                let (captions, _) =
                    distinct(&reference.as_ref().expect("read without a bank").captions);
                let embeddings = embed_texts(&model, &captions, a.batch_size)?;
                let matching = Matching {
                    nn_scale: model.logit_scale(),
                    hard: false,
                };
                (
                    TextBank {
                        embeddings,
                        captions,
                    },
                    matching,
                    "reference-split captions",
                )
            }
        };
        let noisy_text_emb = embed_texts(&model, &noisy_captions, a.batch_size)?;
        let s: Vec<f64> = matching_scores(&bank, matching, &image_emb, &noisy_text_emb)?
            .iter()
            .map(|m| f64::from(m.s))
            .collect();
        let cosine: Vec<f64> = rows(&(&image_emb * &noisy_text_emb)?.sum(1)?)?
            .into_iter()
            .map(f64::from)
            .collect();
        let clean: Vec<bool> = noisy.iter().map(|n| !n).collect();
        json!({
            "rate": a.noise,
            "seed": a.seed,
            "noisy_pairs": noisy.iter().filter(|&&n| n).count(),
            "auc_s": auc(&s, &clean),
            "auc_cosine": auc(&cosine, &clean),
            "bank": bank_source,
            "bank_rows": bank.captions.len(),
            "nn_scale": matching.nn_scale,
        })
    } else {
        Value::Null
    };

    let report = json!({
        "bundle": {"dir": a.bundle, "model_id": model.model_id(), "sha256": model.bundle_sha256()},
        "data": {"dir": a.data, "split": a.split, "reference_split": a.reference_split},
        "retrieval": retrieval,
        "zero_shot": zero_shot,
        "knn": knn,
        "presence": presence,
        "noise_detection": noise,
        "seconds": started.elapsed().as_secs_f64(),
    });
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
        let curve = |name: &str, ranks: &[usize]| Series {
            name: name.to_owned(),
            points: (1..=10)
                .map(|k| (k as f64, metrics::recall_at(ranks, k)))
                .collect(),
        };
        line_chart(
            &out.join("recall.png"),
            &format!("Recall@K on {} ({})", a.split, model.model_id()),
            "K",
            "recall",
            &[curve("image → text", &i2t), curve("text → image", &t2i)],
        )?;
        if !reliability.is_empty() {
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
            )?;
        }
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn class_index(value: &Value, classes: &[String], image: &str) -> Result<usize> {
    let Some(label) = value.as_str() else {
        bail!("label of {image} is {value}, not a class name");
    };
    classes
        .iter()
        .position(|c| c == label)
        .with_context(|| format!("label {label:?} of {image} is not one of {classes:?}"))
}

#[cfg(test)]
mod tests {
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
}

#[derive(Args)]
pub(crate) struct StudyReportArgs {
    /// Study folder: one sub-folder per run with `run.json` ({method, eta, seed}) and
    /// `eval-test/report.json` (optionally `eval-valid/report.json`), as
    /// scripts/noise-study.sh leaves them.
    #[arg(long)]
    dir: PathBuf,
}

/// The study's columns: (key, header, JSON pointer into a `mirage eval` report).
const STUDY_METRICS: [(&str, &str, &str); 8] = [
    ("i2t_r1", "I→T R@1", "/retrieval/image_to_text/r1"),
    ("i2t_r5", "I→T R@5", "/retrieval/image_to_text/r5"),
    ("t2i_r1", "T→I R@1", "/retrieval/text_to_image/r1"),
    ("t2i_r5", "T→I R@5", "/retrieval/text_to_image/r5"),
    (
        "zero_shot",
        "zero-shot plane acc",
        "/zero_shot/plane/accuracy",
    ),
    ("knn", "kNN plane acc", "/knn/plane/accuracy"),
    ("auc_s", "FP-detection AUC of s", "/noise_detection/auc_s"),
    (
        "auc_cos",
        "FP-detection AUC of cos",
        "/noise_detection/auc_cosine",
    ),
];

#[derive(Deserialize)]
struct RunKey {
    method: String,
    eta: f64,
    seed: u64,
}

/// Mean and sample standard deviation (0 for one value).
fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// (method, η in thousandths): one cell of the study's grid.
type CellKey = (String, i64);
/// Cell → metric key → values over seeds.
type Cells = BTreeMap<CellKey, BTreeMap<&'static str, Vec<f64>>>;
/// Cell → the seeds that finished.
type CellSeeds = BTreeMap<CellKey, Vec<u64>>;

fn collect_cells(dir: &Path, split: &str) -> Result<(Cells, CellSeeds)> {
    let mut cells = Cells::new();
    let mut seeds = CellSeeds::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("run.json").is_file())
        .collect();
    entries.sort();
    for run in entries {
        let report_path = run.join(format!("eval-{split}/report.json"));
        if !report_path.is_file() {
            continue;
        }
        let key: RunKey = serde_json::from_slice(&std::fs::read(run.join("run.json"))?)
            .with_context(|| format!("{}/run.json", run.display()))?;
        let report: Value = serde_json::from_slice(&std::fs::read(&report_path)?)
            .with_context(|| format!("{} is not JSON", report_path.display()))?;
        let cell_key = (key.method, (key.eta * 1000.0).round() as i64);
        seeds.entry(cell_key.clone()).or_default().push(key.seed);
        let cell = cells.entry(cell_key).or_default();
        for (name, _, pointer) in STUDY_METRICS {
            if let Some(v) = report.pointer(pointer).and_then(Value::as_f64) {
                cell.entry(name).or_default().push(v);
            }
        }
    }
    Ok((cells, seeds))
}

fn study_table(cells: &Cells, seeds: &CellSeeds) -> String {
    let mut md = String::from("| method | η | seeds |");
    for (_, header, _) in STUDY_METRICS {
        md.push_str(&format!(" {header} |"));
    }
    md.push_str("\n|---|---|---|");
    md.push_str(&"---|".repeat(STUDY_METRICS.len()));
    md.push('\n');
    let mut keys: Vec<&CellKey> = cells.keys().collect();
    keys.sort_by_key(|(m, eta)| (*eta, m.clone()));
    for key in keys {
        let (method, eta) = key;
        let n = seeds.get(key).map_or(0, Vec::len);
        md.push_str(&format!("| {method} | {:.1} | {n} |", *eta as f64 / 1000.0));
        for (name, _, _) in STUDY_METRICS {
            match cells[key].get(name) {
                Some(v) if !v.is_empty() => {
                    let (m, sd) = mean_sd(v);
                    md.push_str(&format!(" {m:.3} ± {sd:.3} |"));
                }
                _ => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
    md
}

pub(crate) fn run_study_report(a: StudyReportArgs) -> Result<()> {
    let (test, test_seeds) = collect_cells(&a.dir, "test")?;
    ensure!(
        !test.is_empty(),
        "{} holds no finished run (a folder with run.json and eval-test/report.json)",
        a.dir.display()
    );
    let (valid, valid_seeds) = collect_cells(&a.dir, "valid")?;
    let mut md = String::from(
        "# Noise-robustness study\n\nClean test split; mean ± sample standard deviation over seeds. \
         Recall counts images that share a caption as one answer; the FP-detection AUCs score the \
         test pairs after a seeded share of their captions (`mirage eval --noise`) was swapped.\n\n",
    );
    md.push_str(&study_table(&test, &test_seeds));
    if !valid.is_empty() {
        md.push_str("\n## Valid split (the only split knobs were chosen on)\n\n");
        md.push_str(&study_table(&valid, &valid_seeds));
    }
    std::fs::write(a.dir.join("study.md"), &md)?;
    let json_cells: Vec<Value> = test
        .iter()
        .map(|((method, eta), metrics)| {
            let stats: serde_json::Map<String, Value> = metrics
                .iter()
                .map(|(k, v)| {
                    let (m, sd) = mean_sd(v);
                    ((*k).to_owned(), json!({"mean": m, "sd": sd, "values": v}))
                })
                .collect();
            json!({"method": method, "eta": *eta as f64 / 1000.0, "seeds": test_seeds[&(method.clone(), *eta)], "test": stats})
        })
        .collect();
    std::fs::write(
        a.dir.join("study.json"),
        serde_json::to_vec_pretty(&json!({"cells": json_cells}))?,
    )?;
    let methods: Vec<String> = {
        let mut m: Vec<String> = test.keys().map(|(m, _)| m.clone()).collect();
        m.dedup();
        m
    };
    for (name, header, _) in STUDY_METRICS {
        let series: Vec<Series> = methods
            .iter()
            .map(|method| Series {
                name: method.to_uppercase(),
                points: test
                    .iter()
                    .filter(|((m, _), _)| m == method)
                    .filter_map(|((_, eta), metrics)| {
                        let v = metrics.get(name)?;
                        Some((*eta as f64 / 1000.0, mean_sd(v).0))
                    })
                    .collect(),
            })
            .collect();
        line_chart(
            &a.dir.join(format!("study-{name}.png")),
            &format!("{header} vs injected noise (test)"),
            "FP noise rate η",
            header,
            &series,
        )?;
    }
    print!("{md}");
    Ok(())
}
