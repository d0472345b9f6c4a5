//! The radlabels report corpus behind `mirage data radlabels`: 1,000 synthetic chest-radiograph
//! reports with 48 machine finding labels (docs/DATA.md), written as plain JSON lines (`id`, `text`,
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

/// The judged queries of the radlabels retrieval benchmark, one pair per finding label: the term
/// a radiologist writes ("exact") and a plain-words description that avoids it ("paraphrase").
/// Written for this benchmark; a report is relevant to both when radlabels marks the finding
/// "definitely present" in it.
pub const BENCHMARK_QUERIES: [(&str, &str, &str); 48] = [
    (
        "acute_rib_fracture",
        "acute rib fracture",
        "a recently broken bone of the chest cage",
    ),
    (
        "air_space_opacity",
        "airspace opacity",
        "hazy whiteness filling the small air sacs",
    ),
    ("atelectasis", "atelectasis", "partly deflated lung tissue"),
    (
        "bullous_disease",
        "bullous disease",
        "large thin-walled air pockets within the lung",
    ),
    (
        "calcification_of_the_aorta",
        "aortic calcification",
        "calcium deposits in the wall of the main artery leaving the heart",
    ),
    (
        "cardiomegaly",
        "cardiomegaly",
        "the heart is bigger than normal",
    ),
    (
        "central_venous_catheter",
        "central venous catheter",
        "a long intravenous line whose tip sits in a big vein near the heart",
    ),
    (
        "consolidation",
        "consolidation",
        "a region of lung filled with fluid or pus instead of air",
    ),
    (
        "emphysema",
        "emphysema",
        "destroyed air sacs from chronic smoking-related lung disease",
    ),
    (
        "endotracheal_tube",
        "endotracheal tube",
        "a breathing tube placed through the mouth into the windpipe",
    ),
    (
        "enlarged_cardiomediastinum",
        "enlarged cardiomediastinal silhouette",
        "a widened central shadow of the heart and middle of the chest",
    ),
    (
        "enteric_tube",
        "nasogastric tube",
        "a feeding tube passed through the nose into the stomach",
    ),
    ("fracture_generic", "fracture", "a broken bone"),
    (
        "ground_glass_opacity",
        "ground glass opacity",
        "a faint hazy increase in lung density that still shows the vessels",
    ),
    (
        "hiatus_hernia",
        "hiatal hernia",
        "part of the stomach pushed up through the diaphragm",
    ),
    (
        "hilar_lymphadenopathy",
        "hilar lymphadenopathy",
        "swollen lymph nodes at the root of the lung",
    ),
    (
        "hyperinflation",
        "hyperinflation",
        "over-expanded lungs with flattened diaphragms",
    ),
    (
        "implantable_electronic_device",
        "implantable electronic device",
        "a battery-powered gadget implanted under the skin",
    ),
    (
        "infiltration",
        "infiltrate",
        "abnormal material spreading into the lung tissue",
    ),
    (
        "intercostal_drain",
        "chest tube",
        "a drain inserted between the ribs to let out air or fluid",
    ),
    (
        "interstitial_thickening",
        "interstitial thickening",
        "thickened supporting tissue between the air sacs",
    ),
    (
        "lobar_segmental_collapse",
        "lobar collapse",
        "one section of a lung has shrunk and lost its air",
    ),
    ("lung_lesion", "lung lesion", "an abnormal spot in the lung"),
    (
        "lung_nodule_or_mass",
        "pulmonary nodule",
        "a round growth in the lung that might be a tumour",
    ),
    (
        "lung_opacity",
        "lung opacity",
        "an area of the lung that looks whiter than it should",
    ),
    (
        "non_acute_rib_fracture",
        "healed rib fracture",
        "an old broken rib that has mended",
    ),
    (
        "nonsurgical_internal_foreign_body",
        "foreign body",
        "an object inside the body that does not belong there",
    ),
    (
        "other_hernia",
        "hernia",
        "an organ bulging through a weak spot in the body wall",
    ),
    (
        "pacemaker_electronic_cardiac_device_or_wires",
        "pacemaker",
        "a device with wires that keeps the heartbeat regular",
    ),
    (
        "peribronchial_cuffing",
        "peribronchial cuffing",
        "thickened walls around the airways seen end on",
    ),
    (
        "pleural_effusion",
        "pleural effusion",
        "fluid collecting around the lung",
    ),
    (
        "pleural_other",
        "pleural abnormality",
        "a problem with the lining around the lungs",
    ),
    (
        "pleural_thickening",
        "pleural thickening",
        "the lining around the lung has become thicker",
    ),
    (
        "pneumomediastinum",
        "pneumomediastinum",
        "air leaking into the middle of the chest around the heart",
    ),
    ("pneumonia", "pneumonia", "a lung infection"),
    (
        "pneumoperitoneum",
        "pneumoperitoneum",
        "free air in the belly under the diaphragm",
    ),
    (
        "pneumothorax",
        "pneumothorax",
        "air between the lung and the chest wall, a collapsed lung",
    ),
    (
        "pulmonary_artery_enlargement",
        "enlarged pulmonary artery",
        "the main vessel to the lungs is dilated",
    ),
    (
        "pulmonary_congestion_pulmonary_venous_congestion",
        "pulmonary vascular congestion",
        "engorged blood vessels in the lungs from a failing heart",
    ),
    (
        "pulmonary_edema",
        "pulmonary edema",
        "fluid leaking into the lungs from heart failure",
    ),
    (
        "pulmonary_fibrosis",
        "pulmonary fibrosis",
        "scarring of the lungs",
    ),
    (
        "shoulder_dislocation",
        "shoulder dislocation",
        "the upper arm bone has come out of its socket",
    ),
    (
        "subcutaneous_emphysema",
        "subcutaneous emphysema",
        "air trapped under the skin of the chest wall",
    ),
    (
        "support_devices_generic",
        "support devices",
        "medical lines and tubes in place",
    ),
    (
        "tortuous_aorta",
        "tortuous aorta",
        "the main artery is twisted and winding",
    ),
    (
        "tracheal_deviation",
        "tracheal deviation",
        "the windpipe is pushed to one side",
    ),
    (
        "tracheostomy_tube",
        "tracheostomy tube",
        "a breathing tube placed through a hole in the front of the neck",
    ),
    (
        "whole_lung_or_majority_collapse",
        "complete lung collapse",
        "an entire lung has lost its air",
    ),
];

/// What [`build_beir`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BeirCounts {
    /// Reports in `corpus.jsonl`.
    pub documents: usize,
    /// Queries in `queries.jsonl` (two per label with at least one report).
    pub queries: usize,
    /// Judgements in `qrels/test.tsv`.
    pub judgements: usize,
}

/// Writes the radlabels retrieval benchmark in the BEIR layout under `out`: `corpus.jsonl`
/// (`_id`, `title`, `text`, `metadata` with the labels by certainty), `queries.jsonl` (`_id`,
/// `text`, `metadata`: `label`, `kind` exact|paraphrase) and `qrels/test.tsv` (relevance 1 for
/// every report in which the query's finding is definitely present). Labels no report has are
/// left out.
///
/// # Errors
///
/// As [`build`], or a label of [`BENCHMARK_QUERIES`] radlabels does not know.
pub fn build_beir(dir: &Path, out: &Path) -> Result<BeirCounts> {
    let corpus_tmp = out.join("corpus.jsonl.partial");
    fs_err::create_dir_all(out.join("qrels"))?;
    let documents = build(dir, &corpus_tmp)?;
    let labels: BTreeMap<String, serde_json::Map<String, Value>> =
        serde_json::from_slice(&fs_err::read(dir.join("synthetic_labels.json"))?)?;
    let known: std::collections::BTreeSet<&str> = labels
        .values()
        .flat_map(|f| f.keys().map(String::as_str))
        .collect();
    // BEIR's corpus names its id `_id`.
    let mut corpus = std::io::BufWriter::new(fs_err::File::create(out.join("corpus.jsonl"))?);
    for line in fs_err::read_to_string(&corpus_tmp)?.lines() {
        let mut row: serde_json::Map<String, Value> = serde_json::from_str(line)?;
        let id = row.remove("id").unwrap_or(Value::Null);
        let text = row.remove("text").unwrap_or(Value::Null);
        let metadata = row.remove("metadata").unwrap_or(Value::Null);
        let row = json!({"_id": id, "title": "", "text": text, "metadata": metadata});
        writeln!(corpus, "{row}")?;
    }
    corpus.into_inner()?.sync_all()?;
    fs_err::remove_file(&corpus_tmp)?;
    let mut queries = Vec::new();
    let mut qrels = vec!["query-id\tcorpus-id\tscore".to_owned()];
    for (label, exact, paraphrase) in BENCHMARK_QUERIES {
        if !known.contains(label) {
            bail!("benchmark label {label:?} is not a radlabels finding");
        }
        let relevant: Vec<&String> = labels
            .iter()
            .filter(|(_, f)| f.get(label).and_then(Value::as_str) == Some("definitely present"))
            .map(|(id, _)| id)
            .collect();
        if relevant.is_empty() {
            continue;
        }
        for (kind, text) in [("exact", exact), ("paraphrase", paraphrase)] {
            let qid = format!("{label}:{kind}");
            queries.push(
                json!({"_id": qid, "text": text, "metadata": {"label": label, "kind": kind}}),
            );
            qrels.extend(relevant.iter().map(|doc| format!("{qid}\t{doc}\t1")));
        }
    }
    let mut q = std::io::BufWriter::new(fs_err::File::create(out.join("queries.jsonl"))?);
    for row in &queries {
        writeln!(q, "{row}")?;
    }
    q.into_inner()?.sync_all()?;
    fs_err::write(out.join("qrels/test.tsv"), qrels.join("\n") + "\n")?;
    Ok(BeirCounts {
        documents,
        queries: queries.len(),
        judgements: qrels.len() - 1,
    })
}
