//! `mirage data …`: build the offline demo and benchmark corpora from the assets cache.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Subcommand)]
pub(crate) enum DataCommand {
    /// The 1,000 radlabels chest-radiograph reports as a plain-JSONL report corpus (`id`, `text`,
    /// `metadata` with the 48 finding labels), for report retrieval and RAG.
    Radlabels(RadlabelsArgs),
    /// A PMC-OA-format image–caption dataset of real brain MRI slices with exact atlas captions,
    /// from Debian's mricron-data (Colin-27 T1 + AAL): `train|valid|test.jsonl`, `images/`,
    /// `labels.jsonl` (plane, hemisphere, structure presence) and `dataset.json`.
    MriAtlas(MriAtlasArgs),
}

#[derive(Args)]
pub(crate) struct MriAtlasArgs {
    /// mricron-data's templates folder.
    #[arg(long, default_value = "/usr/share/mricron/templates")]
    templates: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Side of the square PNGs.
    #[arg(long, default_value_t = 128)]
    size: u32,
    /// Augmented copies per slice besides the plain one.
    #[arg(long, default_value_t = 2)]
    augment: usize,
    /// Slices between held-out and training slices of a plane (1 mm each).
    #[arg(long, default_value_t = 3)]
    gap: usize,
    /// Use every `step`-th slice.
    #[arg(long, default_value_t = 1)]
    step: usize,
    /// Seed of the augmentations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
pub(crate) struct RadlabelsArgs {
    /// The unpacked radlabels package (scripts/fetch-assets.sh puts it in $MIRAGE_CACHE/assets/radlabels).
    #[arg(long, env = "MIRAGE_RADLABELS")]
    radlabels: Option<PathBuf>,
    /// Output JSONL file (index it with `mirage index build --format jsonl`).
    #[arg(long)]
    out: PathBuf,
}

fn default_radlabels() -> PathBuf {
    let cache = std::env::var_os("MIRAGE_CACHE").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/mirage"),
        PathBuf::from,
    );
    std::env::var_os("MIRAGE_ASSETS")
        .map_or_else(|| cache.join("assets"), PathBuf::from)
        .join("radlabels")
}

pub(crate) fn run_data(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Radlabels(args) => {
            let dir = args.radlabels.unwrap_or_else(default_radlabels);
            let n = radlabels(&dir, &args.out)?;
            eprintln!("wrote {n} reports to {}", args.out.display());
            Ok(())
        }
        DataCommand::MriAtlas(a) => {
            let counts = crate::mri_atlas::build(&crate::mri_atlas::AtlasOptions {
                templates: a.templates,
                out: a.out.clone(),
                size: a.size,
                augment: a.augment,
                gap: a.gap,
                step: a.step,
                seed: a.seed,
            })?;
            println!("{}", json!({"out": a.out, "images": counts}));
            Ok(())
        }
    }
}

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

fn radlabels(dir: &Path, out: &Path) -> Result<usize> {
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
