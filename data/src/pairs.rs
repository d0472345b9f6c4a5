//! Image–caption pairs for training and evaluation, read with the corpus reader ([`read_corpus`])
//! so that a file the trainer learns from and a file the indexer serves obey the same formats and
//! the same image-path containment ([`crate::corpus::resolve_under_root`]).
//!
//! On top of the corpus reader, a pair file is stricter: a row the reader refuses (bad JSON, a
//! missing id in `jsonl`, an image path that escapes the root) stops reading with its line, and so
//! does a row without an image (`mimic` corpora never have one). Rows whose caption is blank are
//! counted in [`ReadReport::empty_captions`] and skipped; whoever trains decides how many it
//! tolerates.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::corpus::{read_corpus, CorpusError, CorpusFormat, CorpusOptions};

/// Why a pair file cannot be read; each names the file and, for a row, its line.
#[derive(Debug, thiserror::Error)]
pub enum PairsError {
    /// The file as a whole: cannot be opened, lacks a required column, unknown format.
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    /// A row the corpus reader refuses (bad JSON, a missing id, an image escaping the root).
    #[error("{}:{line}: {reason}", path.display())]
    BadRow {
        /// The pair file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A row without an image.
    #[error("{}:{line}: no image; a {format} pair file needs one on every row", path.display())]
    NoImage {
        /// The pair file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The file's format.
        format: CorpusFormat,
    },
    /// No row has a caption.
    #[error("{}{}: no usable pairs ({rows} rows read)", path.display(), first_empty.map_or_else(String::new, |line| format!(":{line}: no caption")))]
    NoPairs {
        /// The pair file.
        path: PathBuf,
        /// Rows read.
        rows: usize,
        /// Line of the first row with an empty caption, if any.
        first_empty: Option<usize>,
    },
}

/// One image–caption pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The row's id (for `pmcoa` without an `id`: the image reference).
    pub id: String,
    /// The image: root joined with the reference, inside the root.
    pub image: PathBuf,
    /// The image reference as the file wrote it (what label files key on).
    pub image_ref: String,
    /// The caption, trimmed and never empty.
    pub caption: String,
    /// The row's other fields.
    pub payload: Map<String, Value>,
}

/// What reading a pair file counted and skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReadReport {
    /// Rows read (blank JSON lines do not count).
    pub rows: usize,
    /// Rows dropped for an empty or missing caption.
    pub empty_captions: usize,
    /// Line of the first of them, for readers that refuse any.
    pub first_empty_caption: Option<usize>,
}

/// Reads the pairs of `path` in `format`; image references resolve against `image_root`, or the
/// file's folder when there is none.
///
/// # Errors
///
/// The file cannot be opened or lacks a required column, a row is malformed or has no image
/// (named by `path:line`), or no row has a caption.
pub fn read_pairs(
    path: &Path,
    format: CorpusFormat,
    image_root: Option<&Path>,
) -> Result<(Vec<Pair>, ReadReport), PairsError> {
    let root = image_root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
    let options = CorpusOptions {
        image_root: Some(root),
        ..CorpusOptions::new(format)
    };
    let mut report = ReadReport::default();
    let mut pairs = Vec::new();
    for row in read_corpus(path, &options)? {
        report.rows += 1;
        let record = match row {
            Ok(record) => record,
            Err(bad) => {
                return Err(PairsError::BadRow {
                    path: path.to_path_buf(),
                    line: bad.line,
                    reason: bad.reason,
                })
            }
        };
        let (Some(image), Some(image_ref)) = (record.image, record.image_ref) else {
            return Err(PairsError::NoImage {
                path: path.to_path_buf(),
                line: record.line,
                format,
            });
        };
        match record.text {
            Some(caption) => pairs.push(Pair {
                id: record.id,
                image,
                image_ref,
                caption,
                payload: record.payload,
            }),
            None => {
                report.empty_captions += 1;
                report.first_empty_caption.get_or_insert(record.line);
            }
        }
    }
    if pairs.is_empty() {
        return Err(PairsError::NoPairs {
            path: path.to_path_buf(),
            rows: report.rows,
            first_empty: report.first_empty_caption,
        });
    }
    Ok((pairs, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_read_the_same_pairs_and_blank_captions_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("p.jsonl"),
            "{\"image\": \"a.png\", \"caption\": \"left lung\", \"pmcid\": \"PMC1\"}\n\n\
             {\"image\": \"b.png\", \"caption\": \"  \"}\n{\"image\": \"c.png\", \"caption\": \"brain\"}\n",
        )
        .unwrap();
        let (pairs, report) = read_pairs(
            &d.join("p.jsonl"),
            CorpusFormat::PmcOa,
            Some(&d.join("imgs")),
        )
        .unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!((report.rows, report.empty_captions), (3, 1));
        assert_eq!(
            report.first_empty_caption,
            Some(3),
            "blank lines keep their number"
        );
        assert_eq!(pairs[0].image, d.join("imgs/a.png"));
        assert_eq!(
            (pairs[0].id.as_str(), pairs[0].image_ref.as_str()),
            ("a.png", "a.png")
        );
        assert_eq!(pairs[0].payload["pmcid"], "PMC1");
        assert_eq!(pairs[1].caption, "brain");

        std::fs::write(
            d.join("j.jsonl"),
            "{\"id\": 1, \"image\": \"a.png\", \"text\": \"left lung\"}\n{\"id\": \"x\", \"image\": \"c.png\", \"text\": \"brain\"}\n",
        )
        .unwrap();
        let (pairs, _) = read_pairs(&d.join("j.jsonl"), CorpusFormat::Jsonl, None).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].caption, "left lung");
        assert_eq!(
            pairs[0].image,
            d.join("a.png"),
            "images resolve against the file's folder"
        );

        std::fs::write(
            d.join("c.csv"),
            "id,name,caption\n1,a.png,\"left lung, axial\"\n2,c.png,\n3,d.png,heart\n",
        )
        .unwrap();
        let (pairs, report) = read_pairs(&d.join("c.csv"), CorpusFormat::Roco, None).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(report.empty_captions, 1);
        assert_eq!(pairs[0].caption, "left lung, axial");
    }

    #[test]
    fn bad_rows_stop_reading_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let err = |name: &str, body: &str, format: CorpusFormat| {
            std::fs::write(d.join(name), body).unwrap();
            read_pairs(&d.join(name), format, None)
                .unwrap_err()
                .to_string()
        };
        let e = err(
            "noimage.jsonl",
            "{\"caption\": \"x\"}\n",
            CorpusFormat::PmcOa,
        );
        assert!(e.contains("noimage.jsonl:1") && e.contains("image"), "{e}");
        let e = err(
            "escape.jsonl",
            "{\"image\": \"a.png\", \"caption\": \"x\"}\n{\"image\": \"../../etc/passwd\", \"caption\": \"y\"}\n",
            CorpusFormat::PmcOa,
        );
        assert!(e.contains("escape.jsonl:2") && e.contains("escapes"), "{e}");
        let e = err(
            "text.jsonl",
            "{\"id\": 1, \"text\": \"x\"}\n",
            CorpusFormat::Jsonl,
        );
        assert!(e.contains("text.jsonl:1") && e.contains("no image"), "{e}");
        let e = err("nocol.csv", "file,caption\na.png,x\n", CorpusFormat::Roco);
        assert!(e.contains("id"), "{e}");
        let e = err("empty.jsonl", "", CorpusFormat::PmcOa);
        assert!(e.contains("no usable pairs"), "{e}");
    }
}
