//! The radlabels report corpus behind `mirage data radlabels`: 1,000 synthetic chest-radiograph
//! reports with 48 machine finding labels (DATA.md), written as plain JSON lines (`id`, `text`,
//! `metadata` with the labels by certainty) that `mirage index build --format jsonl` reads.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// The label lists of one report, by certainty, in the words radlabels uses.
fn label_metadata(findings: &serde_json::Map<String, Value>) -> Result<Value> {
    let mut by_certainty: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (label, certainty) in findings {
        let key = match certainty.as_str() {
            Some("definitely present") => "present",
            Some("definitely absent") => "absent",
            Some("uncertain") => "uncertain",
            other => bail!("finding {label:?} has an unknown certainty {other:?}"),
        };
        by_certainty.entry(key).or_default().push(label);
    }
    let list = |k: &str| json!(by_certainty.get(k).cloned().unwrap_or_default());
    Ok(json!({
        "source": "radlabels 0.2.0 (synthetic reports, machine labels; not for clinical use)",
        "findings": findings,
        "present": list("present"),
        "absent": list("absent"),
        "uncertain": list("uncertain"),
    }))
}

/// Writes the corpus of the unpacked radlabels package `dir` to `out` (atomically: a partial file
/// is renamed into place at the end); returns the number of reports.
///
/// # Errors
///
/// `dir` is not an unpacked radlabels package, a report is missing or empty, a label has an
/// unknown certainty, or a write fails.
pub fn build(dir: &Path, out: &Path) -> Result<usize> {
    let labels_path = dir.join("synthetic_labels.json");
    let reports_dir = dir.join("synthetic_reports");
    if !labels_path.is_file() || !reports_dir.is_dir() {
        bail!(
            "{} is not an unpacked radlabels package (expected synthetic_labels.json and synthetic_reports/); run scripts/fetch-assets.sh or pass --radlabels",
            dir.display()
        );
    }
    let labels: BTreeMap<String, serde_json::Map<String, Value>> =
        serde_json::from_slice(&fs_err::read(&labels_path)?)
            .with_context(|| format!("{}", labels_path.display()))?;
    let mut lines = Vec::new();
    for (id, findings) in &labels {
        let path = reports_dir.join(format!("{id}.txt"));
        let text = fs_err::read_to_string(&path)?;
        let text = text.trim();
        if text.is_empty() {
            bail!("{} is empty", path.display());
        }
        let row = json!({"id": id, "text": text, "metadata": label_metadata(findings)?});
        lines.push(serde_json::to_string(&row)?);
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs_err::create_dir_all(parent)?;
    }
    let tmp = out.with_extension("partial");
    let mut f = std::io::BufWriter::new(fs_err::File::create(&tmp)?);
    for l in &lines {
        writeln!(f, "{l}")?;
    }
    f.into_inner()?.sync_all()?;
    fs_err::rename(&tmp, out)?;
    Ok(lines.len())
}
