//! The on-disk layout every `mirage data …` image dataset shares, written in one place:
//! `train|valid|test.jsonl` (PMC-OA rows: `image`, `caption` and the builder's own fields),
//! `images/`, `labels.jsonl` (one row per image: `image`, `split` and its task labels) and
//! `dataset.json` (the builder's metadata, `images` per split and the `tasks` that `mirage eval`
//! reads).

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

/// The three splits, in the order their files are written.
pub(crate) const SPLITS: [&str; 3] = ["train", "valid", "test"];

/// Writes one dataset folder; [`SplitWriter::finish`] writes `dataset.json` last, so a folder
/// with it is complete.
pub(crate) struct SplitWriter {
    out: PathBuf,
    images: PathBuf,
    files: BTreeMap<&'static str, BufWriter<std::fs::File>>,
    labels: BufWriter<std::fs::File>,
    counts: BTreeMap<&'static str, usize>,
}

impl SplitWriter {
    /// Creates `out`, `out/images` and the split and label files (truncating earlier ones).
    pub(crate) fn create(out: &Path) -> Result<Self> {
        let images = out.join("images");
        std::fs::create_dir_all(&images)
            .with_context(|| format!("creating {}", images.display()))?;
        let create = |name: String| -> Result<BufWriter<std::fs::File>> {
            let path = out.join(name);
            let file = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            Ok(BufWriter::new(file))
        };
        let mut files = BTreeMap::new();
        for split in SPLITS {
            files.insert(split, create(format!("{split}.jsonl"))?);
        }
        Ok(Self {
            out: out.to_owned(),
            images,
            files,
            labels: create("labels.jsonl".into())?,
            counts: BTreeMap::new(),
        })
    }

    /// Where image `file` goes.
    pub(crate) fn image_path(&self, file: &str) -> PathBuf {
        self.images.join(file)
    }

    /// One image's caption row in `split` and its label row (`image` and `split` added to both
    /// as needed).
    pub(crate) fn add(
        &mut self,
        split: &'static str,
        file: &str,
        row: Value,
        labels: Value,
    ) -> Result<()> {
        let mut caption_row = Map::new();
        caption_row.insert("image".into(), file.into());
        caption_row.extend(fields(row)?);
        let mut label_row = Map::new();
        label_row.insert("image".into(), file.into());
        label_row.insert("split".into(), split.into());
        label_row.extend(fields(labels)?);
        let out = self
            .files
            .get_mut(split)
            .with_context(|| format!("unknown split {split:?}"))?;
        writeln!(out, "{}", Value::Object(caption_row))?;
        writeln!(self.labels, "{}", Value::Object(label_row))?;
        *self.counts.entry(split).or_default() += 1;
        Ok(())
    }

    /// Flushes the files and writes `dataset.json` (`meta` plus `images` per split); returns the
    /// number of images per split.
    pub(crate) fn finish(mut self, meta: Value) -> Result<BTreeMap<&'static str, usize>> {
        let mut meta = fields(meta)?;
        for f in self.files.values_mut() {
            f.flush()?;
        }
        self.labels.flush()?;
        meta.insert("images".into(), serde_json::to_value(&self.counts)?);
        let path = self.out.join("dataset.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&Value::Object(meta))?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(self.counts)
    }
}

fn fields(value: Value) -> Result<Map<String, Value>> {
    match value {
        Value::Object(map) => Ok(map),
        other => bail!("a dataset row must be a JSON object, not {other}"),
    }
}
