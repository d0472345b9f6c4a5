//! The noise-robustness study's table and plots (`mirage study-report`): one cell per (method,
//! η), mean ± sample standard deviation over seeds of the metrics of each run's `mirage eval`
//! report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::plot::{line_chart, Series};

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
    let mut entries: Vec<PathBuf> = fs_err::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("run.json").is_file())
        .collect();
    entries.sort();
    for run in entries {
        let report_path = run.join(format!("eval-{split}/report.json"));
        if !report_path.is_file() {
            continue;
        }
        let key: RunKey = serde_json::from_slice(&fs_err::read(run.join("run.json"))?)
            .with_context(|| format!("{}/run.json", run.display()))?;
        let report: Value = serde_json::from_slice(&fs_err::read(&report_path)?)
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

/// Tabulates the finished runs of the study folder `dir` (one sub-folder per run with `run.json`
/// = {method, eta, seed} and `eval-test/report.json`, optionally `eval-valid/report.json`, as
/// scripts/noise-study.sh leaves them): writes `study.md`, `study.json` and one
/// `study-{metric}.png` per metric into `dir`, and returns the Markdown.
///
/// # Errors
///
/// No finished run, an unreadable run, or a write failure.
pub fn study_report(dir: &Path) -> Result<String> {
    let (test, test_seeds) = collect_cells(dir, "test")?;
    ensure!(
        !test.is_empty(),
        "{} holds no finished run (a folder with run.json and eval-test/report.json)",
        dir.display()
    );
    let (valid, valid_seeds) = collect_cells(dir, "valid")?;
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
    fs_err::write(dir.join("study.md"), &md)?;
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
    fs_err::write(
        dir.join("study.json"),
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
            &dir.join(format!("study-{name}.png")),
            &format!("{header} vs injected noise (test)"),
            "FP noise rate η",
            header,
            &series,
        )?;
    }
    Ok(md)
}
