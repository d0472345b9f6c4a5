//! The noise-robustness study's tables and plots (`mirage study-report`): one cell per (method,
//! η), mean ± sample standard deviation over seeds of the metrics of each run's `mirage eval`
//! report, with columns for whatever tasks the reports hold; and, where runs saved per-query
//! outcomes, each method's paired difference to the CLIP baseline with a bootstrap interval
//! ([`crate::bootstrap`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::bootstrap::{paired_difference, Interval, DEFAULT_RESAMPLES};
use crate::plot::{line_chart, Series};
use crate::runner::per_query_key;

/// The method every other one is compared to in the paired table, unless told otherwise (the
/// ablation compares to `default`).
pub const DEFAULT_BASELINE: &str = "clip";

/// Coverage of the paired intervals.
const LEVEL: f64 = 0.95;

/// One column of the study table.
#[derive(Debug, Clone)]
struct Column {
    /// Key in `study.json`, plot file names and `per_query.json`.
    key: String,
    header: String,
    /// JSON pointer into a `mirage eval` report.
    pointer: String,
}

fn column(key: impl Into<String>, header: impl Into<String>, pointer: impl Into<String>) -> Column {
    Column {
        key: key.into(),
        header: header.into(),
        pointer: pointer.into(),
    }
}

/// A task name as one JSON-pointer token (RFC 6901).
fn token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Retrieval first, then per task (in name order) zero-shot accuracy, kNN accuracy and the
/// zero-shot ECE as served and at T = 1, then the FP-detection AUCs: the columns come from the
/// tasks the reports contain.
fn columns(reports: &[&Value]) -> Vec<Column> {
    let mut cols = vec![
        column("i2t_r1", "I→T R@1", "/retrieval/image_to_text/r1"),
        column("i2t_r5", "I→T R@5", "/retrieval/image_to_text/r5"),
        column("t2i_r1", "T→I R@1", "/retrieval/text_to_image/r1"),
        column("t2i_r5", "T→I R@5", "/retrieval/text_to_image/r5"),
    ];
    let tasks = |section: &str| -> BTreeSet<String> {
        reports
            .iter()
            .filter_map(|r| r.get(section)?.as_object())
            .flat_map(|o| o.keys().cloned())
            .collect()
    };
    let (zero_shot, knn) = (tasks("zero_shot"), tasks("knn"));
    for task in zero_shot.union(&knn) {
        let t = token(task);
        if zero_shot.contains(task) {
            cols.push(column(
                per_query_key("zero_shot", Some(task)),
                format!("zero-shot {task} acc"),
                format!("/zero_shot/{t}/accuracy"),
            ));
        }
        if knn.contains(task) {
            cols.push(column(
                per_query_key("knn", Some(task)),
                format!("kNN {task} acc"),
                format!("/knn/{t}/accuracy"),
            ));
        }
        if zero_shot.contains(task) {
            cols.push(column(
                per_query_key("ece", Some(task)),
                format!("zero-shot {task} ECE"),
                format!("/zero_shot/{t}/ece"),
            ));
            cols.push(column(
                per_query_key("ece_raw", Some(task)),
                format!("{task} ECE at T = 1"),
                format!("/zero_shot/{t}/uncalibrated/ece"),
            ));
        }
    }
    cols.push(column(
        "auc_s",
        "FP-detection AUC of s",
        "/noise_detection/auc_s",
    ));
    cols.push(column(
        "auc_cos",
        "FP-detection AUC of cos",
        "/noise_detection/auc_cosine",
    ));
    if reports.iter().any(|r| r.get(TRAIN_AUDIT).is_some()) {
        cols.push(column(
            "train_auc_s",
            "train-corpus AUC of s",
            format!("/{TRAIN_AUDIT}/injected/auc_s"),
        ));
        cols.push(column(
            "train_auc_cos",
            "train-corpus AUC of cos",
            format!("/{TRAIN_AUDIT}/injected/auc_cosine"),
        ));
    }
    cols
}

/// Key under which a run's training-corpus audit (`audit-train/summary.json`, `mirage audit
/// --noise-log`) joins its test report.
const TRAIN_AUDIT: &str = "train_audit";

#[derive(Deserialize)]
struct RunKey {
    method: String,
    eta: f64,
    seed: u64,
}

/// A finished run's evaluation of one split.
struct Run {
    method: String,
    /// η in thousandths.
    eta: i64,
    seed: u64,
    report: Value,
    /// `per_query.json` beside the report, if the run saved one.
    per_query: Option<PerQuery>,
}

/// Per-query outcomes by metric key, as `mirage eval` saves them.
type PerQuery = BTreeMap<String, Vec<f64>>;

fn read_runs(dir: &Path, split: &str) -> Result<Vec<Run>> {
    let mut entries: Vec<PathBuf> = fs_err::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("run.json").is_file())
        .collect();
    entries.sort();
    let mut runs = Vec::new();
    for run in entries {
        let eval_dir = run.join(format!("eval-{split}"));
        let report_path = eval_dir.join("report.json");
        if !report_path.is_file() {
            continue;
        }
        let key: RunKey = serde_json::from_slice(&fs_err::read(run.join("run.json"))?)
            .with_context(|| format!("{}/run.json", run.display()))?;
        let mut report: Value = serde_json::from_slice(&fs_err::read(&report_path)?)
            .with_context(|| format!("{} is not JSON", report_path.display()))?;
        let audit_path = run.join("audit-train/summary.json");
        if split == "test" && audit_path.is_file() {
            let audit: Value = serde_json::from_slice(&fs_err::read(&audit_path)?)
                .with_context(|| format!("{} is not JSON", audit_path.display()))?;
            report[TRAIN_AUDIT] = audit;
        }
        let pq_path = eval_dir.join("per_query.json");
        let per_query = if pq_path.is_file() {
            Some(
                serde_json::from_slice(&fs_err::read(&pq_path)?)
                    .with_context(|| format!("{} is not per-query outcomes", pq_path.display()))?,
            )
        } else {
            None
        };
        runs.push(Run {
            method: key.method,
            eta: (key.eta * 1000.0).round() as i64,
            seed: key.seed,
            report,
            per_query,
        });
    }
    Ok(runs)
}

/// (method, η in thousandths): one cell of the study's grid.
type CellKey = (String, i64);

/// Per cell: the seeds that finished and, per column key, the values over those seeds.
#[derive(Default)]
struct Cell {
    seeds: Vec<u64>,
    values: BTreeMap<String, Vec<f64>>,
}

fn cells(runs: &[Run], cols: &[Column]) -> BTreeMap<CellKey, Cell> {
    let mut cells: BTreeMap<CellKey, Cell> = BTreeMap::new();
    for run in runs {
        let cell = cells.entry((run.method.clone(), run.eta)).or_default();
        cell.seeds.push(run.seed);
        for c in cols {
            if let Some(v) = run.report.pointer(&c.pointer).and_then(Value::as_f64) {
                cell.values.entry(c.key.clone()).or_default().push(v);
            }
        }
    }
    cells
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

fn header(cols: &[&Column], lead: &str, lead_cols: usize) -> String {
    let mut md = format!("| {lead} |");
    for c in cols {
        md.push_str(&format!(" {} |", c.header));
    }
    md.push_str("\n|");
    md.push_str(&"---|".repeat(lead_cols + cols.len()));
    md.push('\n');
    md
}

fn study_table(cells: &BTreeMap<CellKey, Cell>, cols: &[Column]) -> String {
    let refs: Vec<&Column> = cols.iter().collect();
    let mut md = header(&refs, "method | η | seeds", 3);
    let mut keys: Vec<&CellKey> = cells.keys().collect();
    keys.sort_by_key(|(m, eta)| (*eta, m.clone()));
    for key in keys {
        let (method, eta) = key;
        let cell = &cells[key];
        md.push_str(&format!(
            "| {method} | {:.1} | {} |",
            *eta as f64 / 1000.0,
            cell.seeds.len()
        ));
        for c in cols {
            match cell.values.get(&c.key) {
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

/// One method's paired difference to the baseline at one η.
struct Difference {
    method: String,
    eta: i64,
    seeds: Vec<u64>,
    by_metric: BTreeMap<String, Interval>,
}

/// Paired differences (method − `baseline`) per η over the seeds both finished with
/// per-query outcomes of the same queries.
fn differences(runs: &[Run], cols: &[Column], baseline: &str) -> Result<Vec<Difference>> {
    let mut by_cell: BTreeMap<(i64, String), BTreeMap<u64, &PerQuery>> = BTreeMap::new();
    for run in runs {
        if let Some(pq) = &run.per_query {
            by_cell
                .entry((run.eta, run.method.clone()))
                .or_default()
                .insert(run.seed, pq);
        }
    }
    let mut out = Vec::new();
    for ((eta, method), seeds) in &by_cell {
        if method == baseline {
            continue;
        }
        let Some(base) = by_cell.get(&(*eta, baseline.to_owned())) else {
            continue;
        };
        let paired: Vec<u64> = seeds
            .keys()
            .filter(|s| base.contains_key(s))
            .copied()
            .collect();
        if paired.is_empty() {
            continue;
        }
        let mut by_metric = BTreeMap::new();
        for c in cols {
            let a: Option<Vec<Vec<f64>>> = paired
                .iter()
                .map(|s| seeds[s].get(&c.key).cloned())
                .collect();
            let b: Option<Vec<Vec<f64>>> = paired
                .iter()
                .map(|s| base[s].get(&c.key).cloned())
                .collect();
            if let (Some(a), Some(b)) = (a, b) {
                let i =
                    paired_difference(&a, &b, DEFAULT_RESAMPLES, LEVEL, 0).with_context(|| {
                        format!(
                            "{method} vs {baseline} at η {}: {}",
                            *eta as f64 / 1000.0,
                            c.key
                        )
                    })?;
                by_metric.insert(c.key.clone(), i);
            }
        }
        out.push(Difference {
            method: method.clone(),
            eta: *eta,
            seeds: paired,
            by_metric,
        });
    }
    Ok(out)
}

/// The columns some difference has an interval for.
fn difference_columns<'c>(diffs: &[Difference], cols: &'c [Column]) -> Vec<&'c Column> {
    cols.iter()
        .filter(|c| diffs.iter().any(|d| d.by_metric.contains_key(&c.key)))
        .collect()
}

fn difference_table(diffs: &[Difference], cols: &[Column], baseline: &str) -> String {
    let shown = difference_columns(diffs, cols);
    let mut md = header(&shown, "method | η | paired seeds", 3);
    for d in diffs {
        md.push_str(&format!(
            "| {} − {baseline} | {:.1} | {} |",
            d.method,
            d.eta as f64 / 1000.0,
            d.seeds.len()
        ));
        for c in &shown {
            match d.by_metric.get(&c.key) {
                // Bold where the interval excludes 0.
                Some(i) if i.excludes_zero() => md.push_str(&format!(
                    " **{:+.3} [{:+.3}, {:+.3}]** |",
                    i.estimate, i.low, i.high
                )),
                Some(i) => md.push_str(&format!(
                    " {:+.3} [{:+.3}, {:+.3}] |",
                    i.estimate, i.low, i.high
                )),
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
    md
}

/// Tabulates the finished runs of the study folder `dir` (one sub-folder per run with `run.json`
/// = {method, eta, seed} and `eval-test/report.json`, optionally `eval-test/per_query.json`,
/// `audit-train/summary.json` and `eval-valid/report.json`, as scripts/noise-study.sh leaves
/// them): writes `study.md`,
/// `study.json` and one `study-{metric}.png` per column into `dir`, and returns the Markdown.
///
/// # Errors
///
/// No finished run, an unreadable run, per-query outcomes that do not pair up, or a write
/// failure.
pub fn study_report(dir: &Path, baseline: &str) -> Result<String> {
    let test_runs = read_runs(dir, "test")?;
    ensure!(
        !test_runs.is_empty(),
        "{} holds no finished run (a folder with run.json and eval-test/report.json)",
        dir.display()
    );
    let valid_runs = read_runs(dir, "valid")?;
    let reports: Vec<&Value> = test_runs
        .iter()
        .chain(&valid_runs)
        .map(|r| &r.report)
        .collect();
    let cols = columns(&reports);
    let test = cells(&test_runs, &cols);
    let mut md = String::from(
        "# Noise-robustness study\n\nClean test split; mean ± sample standard deviation over seeds. \
         Recall counts images that share a caption as one answer; the FP-detection AUCs score the \
         test pairs after a seeded share of their captions (`mirage eval --noise`) was swapped. \
         ECE is of the served zero-shot probabilities (the bundle's fitted temperature, if any) \
         and at T = 1.\n\n",
    );
    md.push_str(&study_table(&test, &cols));
    let diffs = differences(&test_runs, &cols, baseline)?;
    if !diffs.is_empty() {
        md.push_str(&format!(
            "\n## Paired differences to {baseline} (test split)\n\nMean per-query difference \
             over the seeds both methods finished, with a {:.0} % percentile bootstrap interval \
             ({DEFAULT_RESAMPLES} resamples of the test queries, the same draw for every seed); \
             **bold** where the interval excludes 0.\n\n",
            LEVEL * 100.0
        ));
        md.push_str(&difference_table(&diffs, &cols, baseline));
    }
    if !valid_runs.is_empty() {
        md.push_str("\n## Valid split (the only split knobs were chosen on)\n\n");
        md.push_str(&study_table(&cells(&valid_runs, &cols), &cols));
    }
    fs_err::write(dir.join("study.md"), &md)?;
    let json_cells: Vec<Value> = test
        .iter()
        .map(|((method, eta), cell)| {
            let stats: serde_json::Map<String, Value> = cell
                .values
                .iter()
                .map(|(k, v)| {
                    let (m, sd) = mean_sd(v);
                    (k.clone(), json!({"mean": m, "sd": sd, "values": v}))
                })
                .collect();
            json!({"method": method, "eta": *eta as f64 / 1000.0, "seeds": cell.seeds, "test": stats})
        })
        .collect();
    let json_diffs: Vec<Value> = diffs
        .iter()
        .map(|d| {
            json!({"method": d.method, "baseline": baseline, "eta": d.eta as f64 / 1000.0,
                   "seeds": d.seeds, "test": d.by_metric})
        })
        .collect();
    fs_err::write(
        dir.join("study.json"),
        serde_json::to_vec_pretty(&json!({"cells": json_cells, "differences": json_diffs}))?,
    )?;
    let methods: BTreeSet<&String> = test.keys().map(|(m, _)| m).collect();
    for c in &cols {
        let series: Vec<Series> = methods
            .iter()
            .map(|method| Series {
                name: method.to_uppercase(),
                points: test
                    .iter()
                    .filter(|((m, _), _)| m == *method)
                    .filter_map(|((_, eta), cell)| {
                        let v = cell.values.get(&c.key)?;
                        Some((*eta as f64 / 1000.0, mean_sd(v).0))
                    })
                    .collect(),
            })
            .collect();
        if series.iter().all(|s| s.points.is_empty()) {
            continue;
        }
        line_chart(
            &dir.join(format!("study-{}.png", c.key)),
            &format!("{} vs injected noise (test)", c.header),
            "FP noise rate η",
            &c.header,
            &series,
        )?;
    }
    // One chart per metric with intervals: each comparison's interval as a vertical bar at its
    // place (the ablation's forest plot), with the zero line.
    for c in difference_columns(&diffs, &cols) {
        let series: Vec<Series> = diffs
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let iv = d.by_metric.get(&c.key)?;
                let x = i as f64;
                Some(Series {
                    name: format!("{} (η {:.1})", d.method, d.eta as f64 / 1000.0),
                    points: vec![(x, iv.low), (x, iv.estimate), (x, iv.high)],
                })
            })
            .chain(std::iter::once(Series {
                name: "no difference".into(),
                points: vec![(-0.5, 0.0), (diffs.len() as f64 - 0.5, 0.0)],
            }))
            .collect();
        line_chart(
            &dir.join(format!("difference-{}.png", c.key)),
            &format!("{} − {baseline} (95 % interval)", c.header),
            "comparison",
            "difference",
            &series,
        )?;
    }
    Ok(md)
}
