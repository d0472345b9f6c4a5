//! Readers for the corpora users index. [`read_corpus`] turns one file into a stream of
//! [`CorpusRecord`]s: an id, optional text, an optional image and a JSON payload for filtering.
//!
//! Formats ([`CorpusFormat`]):
//!
//! - `pmcoa`: PMC-OA JSON lines, `{"image": "PMC123_fig1.jpg", "caption": "…", …}`. `image` is
//!   required; the id is `id` (string or integer) when present, else the image path; every other
//!   field goes to the payload verbatim.
//! - `jsonl`: plain JSON lines, `{"id": …, "text": "…", "image": "…", "metadata": {…}}`. `id` is
//!   required, a row needs `text` or `image`, `metadata` becomes the payload. Any other top-level
//!   field is a bad row, so that a typo (`"txt"`) is reported instead of silently dropping data.
//! - `roco`: a caption table plus an image folder, either a CSV with a header (`id`, `caption`,
//!   optionally `name` = the image file name; other columns go to the payload) or ROCO's own
//!   `captions.txt` (`ID<TAB>caption` per line, no header; chosen for a `.txt` file or when the
//!   first line has a tab and is not a comma-separated header naming the id column). Without a
//!   `name` the image is the first of `{id}.jpg`, `{id}.png`, `{id}.jpeg`, `{id}.dcm` found under
//!   the image root, or `{id}.jpg` when none is (whoever loads it reports the missing file).
//! - `mimic`: a CSV of reports with a header: id column `study_id` and text column `report` by
//!   default; every other column goes to the payload.
//!
//! CSV payload cells in plain decimal notation become JSON numbers so that range filters work;
//! cells whose text would not survive as a number (zero-padded codes such as `007`, `+1`, `NaN`,
//! integers beyond `i64`) stay strings, and empty cells are left out.
//!
//! Text is trimmed and blank text counts as absent. Blank JSON lines are skipped. A problem with the
//! whole file (cannot open it, no header, a required column missing) is a [`CorpusError`] from
//! [`read_corpus`]; a problem with one row is a [`BadRow`] yielded in its place, and reading goes
//! on with the next row.
//!
//! Image references are relative to [`CorpusOptions::image_root`] and must stay inside it
//! ([`resolve_under_root`]): a corpus often comes from elsewhere, and must not make the indexer read
//! (and embed, and serve) arbitrary files of this machine.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Map, Value};

/// The corpus formats [`read_corpus`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CorpusFormat {
    /// PMC-OA JSON lines: `image`, `caption`, anything else kept in the payload.
    PmcOa,
    /// ROCO: a caption CSV or `captions.txt`, plus an image folder.
    Roco,
    /// MIMIC-style CSV of reports.
    Mimic,
    /// Plain JSON lines: `id`, `text`, `image`, `metadata`.
    Jsonl,
}

impl CorpusFormat {
    /// Every format, in the order messages list them.
    pub const ALL: [Self; 4] = [Self::PmcOa, Self::Roco, Self::Mimic, Self::Jsonl];

    /// The name used on the command line and in configuration (`pmcoa`, `roco`, `mimic`, `jsonl`).
    pub fn name(self) -> &'static str {
        match self {
            Self::PmcOa => "pmcoa",
            Self::Roco => "roco",
            Self::Mimic => "mimic",
            Self::Jsonl => "jsonl",
        }
    }
}

impl fmt::Display for CorpusFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for CorpusFormat {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for CorpusFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for CorpusFormat {
    type Err = CorpusError;

    /// Parses a format name, ignoring ASCII case and surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Self::ALL
            .into_iter()
            .find(|format| format.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| CorpusError::UnknownFormat {
                given: s.to_owned(),
            })
    }
}

/// How to read a corpus file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusOptions {
    /// The file's format.
    pub format: CorpusFormat,
    /// The folder image references are relative to. Required as soon as a row references an image:
    /// such a row is a [`BadRow`] without it.
    pub image_root: Option<PathBuf>,
    /// Id column of a CSV corpus (`mimic`: `study_id`, `roco`: `id`); the JSON formats ignore it.
    pub id_column: Option<String>,
    /// Text column of a CSV corpus (`mimic`: `report`, `roco`: `caption`); the JSON formats ignore
    /// it.
    pub text_column: Option<String>,
}

impl CorpusOptions {
    /// Options for `format` with no image root and the format's default columns.
    pub fn new(format: CorpusFormat) -> Self {
        Self {
            format,
            image_root: None,
            id_column: None,
            text_column: None,
        }
    }
}

/// One row of a corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusRecord {
    /// 1-based line number (JSON lines, `captions.txt`), or for CSV the 1-based record number
    /// counting the header as 1 (a record whose quoted field spans lines still counts once).
    pub line: usize,
    /// The row's id, trimmed and never empty.
    pub id: String,
    /// The text, trimmed; blank text is `None`.
    pub text: Option<String>,
    /// The image: the image root joined with the reference, checked by [`resolve_under_root`].
    /// The file need not exist; whoever loads it reports a missing one.
    pub image: Option<PathBuf>,
    /// The image reference as the corpus wrote it (for `roco` without a `name`: the file name
    /// chosen by probing).
    pub image_ref: Option<String>,
    /// Everything else the row carries, for filtering and display.
    pub payload: Map<String, Value>,
}

/// A row that could not be read; reading goes on with the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// Line (or CSV record) number, counted as in [`CorpusRecord::line`].
    pub line: usize,
    /// What is wrong with the row.
    pub reason: String,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for BadRow {}

/// A problem with a whole corpus file (or with the options), as opposed to one [`BadRow`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorpusError {
    /// The file could not be opened or read; the message names the path.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The CSV header could not be parsed (for instance it is not UTF-8).
    #[error("{path}: cannot read the CSV header: {source}")]
    Csv {
        /// The corpus file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: csv::Error,
    },
    /// A column the format needs is not in the header; maybe set `id_column` / `text_column`.
    #[error("{path}: missing required column `{column}` (columns found: {})", .found.join(", "))]
    MissingColumn {
        /// The corpus file.
        path: PathBuf,
        /// The column looked for.
        column: String,
        /// The header's columns, in order.
        found: Vec<String>,
    },
    /// The CSV file has no header row (it is empty).
    #[error("{path}: no header row (the file is empty)")]
    NoHeader {
        /// The corpus file.
        path: PathBuf,
    },
    /// The format name is not one of [`CorpusFormat::ALL`].
    #[error("unknown corpus format `{given}` (expected one of: pmcoa, roco, mimic, jsonl)")]
    UnknownFormat {
        /// The name given.
        given: String,
    },
}

/// Opens a corpus; the returned reader streams its rows.
///
/// # Errors
///
/// [`CorpusError`] when the file cannot be opened, or a CSV corpus has no header or lacks a
/// required column. Problems with single rows come later, from the iterator, as [`BadRow`]s.
pub fn read_corpus(path: &Path, options: &CorpusOptions) -> Result<CorpusReader, CorpusError> {
    let mut file = BufReader::new(fs_err::File::open(path)?);
    let images = ImageRoot {
        root: options.image_root.clone(),
        canonical: None,
    };
    let rows = match options.format {
        CorpusFormat::PmcOa => Rows::lines(file, Vec::new(), LineLayout::PmcOa),
        CorpusFormat::Jsonl => Rows::lines(file, Vec::new(), LineLayout::Jsonl),
        CorpusFormat::Mimic => {
            let columns = CsvColumns {
                id: column_option(&options.id_column, "study_id"),
                text: column_option(&options.text_column, "report"),
                name: None,
            };
            Rows::csv(path, file, Vec::new(), &columns, CsvLayout::Mimic)?
        }
        CorpusFormat::Roco => {
            let id_column = column_option(&options.id_column, "id");
            // The layout is decided by the first line; it is read here and replayed in front of
            // the rest so that pipes work as well as files.
            let mut first = Vec::new();
            file.read_until(b'\n', &mut first)?;
            if is_captions_txt(path, &first, id_column) {
                Rows::lines(file, first, LineLayout::RocoCaptions)
            } else {
                let columns = CsvColumns {
                    id: id_column,
                    text: column_option(&options.text_column, "caption"),
                    name: Some("name"),
                };
                Rows::csv(path, file, first, &columns, CsvLayout::Roco)?
            }
        }
    };
    Ok(CorpusReader {
        rows,
        images,
        finished: false,
    })
}

/// Streams the rows of a corpus opened by [`read_corpus`], one `Result` per row, without holding
/// the file in memory. A read error of the file itself ends the stream after one last [`BadRow`].
#[derive(Debug)]
pub struct CorpusReader {
    rows: Rows,
    images: ImageRoot,
    finished: bool,
}

impl Iterator for CorpusReader {
    type Item = Result<CorpusRecord, BadRow>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        loop {
            let step = match &mut self.rows {
                Rows::Lines(lines) => lines.next_row(&mut self.images),
                Rows::Csv(csv) => csv.next_row(&mut self.images),
            };
            match step {
                Step::Row(row) => return Some(row),
                Step::Skip => {}
                Step::End => {
                    self.finished = true;
                    return None;
                }
                Step::Fatal(bad) => {
                    self.finished = true;
                    return Some(Err(bad));
                }
            }
        }
    }
}

impl std::iter::FusedIterator for CorpusReader {}

/// Resolves an image reference from a corpus against the image root.
///
/// The reference must be relative: absolute paths, Windows drive or backslash-rooted paths, and
/// paths whose `.`/`..` components lead out of the root are rejected. Backslashes count as
/// separators, since corpora made on Windows use them. When the path exists, its canonical form
/// must still lie under the canonical root, which rejects symlinks that lead out. Returns the root
/// joined with the lexically normalised reference (`a/../b.png` gives `root/b.png`), not
/// canonicalised.
///
/// # Errors
///
/// A message saying why the reference is refused, e.g. "image path escapes the image root: `../x.png`".
pub fn resolve_under_root(root: &Path, reference: &str) -> Result<PathBuf, String> {
    let joined = join_relative(root, reference)?;
    check_canonical(root, &joined, reference, &mut None)?;
    Ok(joined)
}

/// The file, replaying the line already read to detect the layout in front of the rest.
type Source = io::Chain<io::Cursor<Vec<u8>>, BufReader<fs_err::File>>;

/// Text of the row problem for rows with nothing to embed.
const NOTHING_TO_EMBED: &str = "row has neither text nor an image";

/// ROCO image extensions, in the order they are tried.
const ROCO_EXTENSIONS: [&str; 4] = ["jpg", "png", "jpeg", "dcm"];

/// The top-level fields of a plain JSON lines row.
const JSONL_FIELDS: [&str; 4] = ["id", "text", "image", "metadata"];

#[derive(Debug)]
enum Rows {
    Lines(LineRows),
    Csv(CsvRows),
}

impl Rows {
    fn lines(file: BufReader<fs_err::File>, first: Vec<u8>, layout: LineLayout) -> Self {
        Self::Lines(LineRows {
            source: io::Cursor::new(first).chain(file),
            buf: Vec::new(),
            line: 0,
            layout,
        })
    }

    fn csv(
        path: &Path,
        file: BufReader<fs_err::File>,
        first: Vec<u8>,
        columns: &CsvColumns<'_>,
        layout: CsvLayout,
    ) -> Result<Self, CorpusError> {
        // Flexible, so that one row with a wrong field count is a bad row rather than the end of
        // the file; the count is checked per row instead.
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::Headers)
            .from_reader(io::Cursor::new(first).chain(file));
        let header = reader.headers().map_err(|source| CorpusError::Csv {
            path: path.to_path_buf(),
            source,
        })?;
        let names: Vec<String> = header.iter().map(str::to_owned).collect();
        if names.is_empty() {
            return Err(CorpusError::NoHeader {
                path: path.to_path_buf(),
            });
        }
        let find = |column: &str| names.iter().position(|name| name == column);
        let required = |column: &str| {
            find(column).ok_or_else(|| CorpusError::MissingColumn {
                path: path.to_path_buf(),
                column: column.to_owned(),
                found: names.clone(),
            })
        };
        let id = required(columns.id)?;
        let text = required(columns.text)?;
        let name = columns.name.and_then(find);
        Ok(Self::Csv(CsvRows {
            reader,
            record: csv::StringRecord::new(),
            line: 1,
            names,
            id,
            text,
            name,
            layout,
        }))
    }
}

/// What the reader does next.
enum Step {
    Row(Result<CorpusRecord, BadRow>),
    /// A blank line.
    Skip,
    End,
    /// The file itself failed; nothing after this can be trusted.
    Fatal(BadRow),
}

#[derive(Debug, Clone, Copy)]
enum LineLayout {
    PmcOa,
    Jsonl,
    RocoCaptions,
}

#[derive(Debug)]
struct LineRows {
    source: Source,
    buf: Vec<u8>,
    line: usize,
    layout: LineLayout,
}

impl LineRows {
    fn next_row(&mut self, images: &mut ImageRoot) -> Step {
        self.buf.clear();
        // Bytes rather than `lines()`, so that a line that is not UTF-8 is one bad row instead of
        // an I/O error that ends the file.
        match self.source.read_until(b'\n', &mut self.buf) {
            Ok(0) => return Step::End,
            Ok(_) => self.line += 1,
            Err(e) => {
                return Step::Fatal(BadRow {
                    line: self.line + 1,
                    reason: format!("read error: {e}"),
                })
            }
        }
        let line = self.line;
        let mut bytes = self.buf.as_slice();
        bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if line == 1 {
            bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                return Step::Row(Err(BadRow {
                    line,
                    reason: format!("not valid UTF-8: {e}"),
                }))
            }
        };
        if text.trim().is_empty() {
            return Step::Skip;
        }
        let parsed = match self.layout {
            LineLayout::PmcOa => json_object(text).and_then(|row| pmcoa_row(line, row, images)),
            LineLayout::Jsonl => json_object(text).and_then(|row| jsonl_row(line, row, images)),
            LineLayout::RocoCaptions => roco_caption_line(line, text, images),
        };
        Step::Row(parsed.map_err(|reason| BadRow { line, reason }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CsvLayout {
    Roco,
    Mimic,
}

/// Column names a CSV layout looks for.
struct CsvColumns<'a> {
    id: &'a str,
    text: &'a str,
    name: Option<&'a str>,
}

#[derive(Debug)]
struct CsvRows {
    reader: csv::Reader<Source>,
    record: csv::StringRecord,
    line: usize,
    names: Vec<String>,
    id: usize,
    text: usize,
    name: Option<usize>,
    layout: CsvLayout,
}

impl CsvRows {
    fn next_row(&mut self, images: &mut ImageRoot) -> Step {
        let read = self.reader.read_record(&mut self.record);
        let line = self.line + 1;
        match read {
            Ok(false) => Step::End,
            Ok(true) => {
                self.line = line;
                Step::Row(
                    self.row(line, images)
                        .map_err(|reason| BadRow { line, reason }),
                )
            }
            Err(e) => {
                self.line = line;
                match e.kind() {
                    csv::ErrorKind::Io(_) => Step::Fatal(BadRow {
                        line,
                        reason: format!("read error: {e}"),
                    }),
                    // The csv reader has consumed the record, so the next one can still be read.
                    csv::ErrorKind::Utf8 { err, .. } => Step::Row(Err(BadRow {
                        line,
                        reason: format!("not valid UTF-8: {err}"),
                    })),
                    _ => Step::Row(Err(BadRow {
                        line,
                        reason: e.to_string(),
                    })),
                }
            }
        }
    }

    fn row(&self, line: usize, images: &mut ImageRoot) -> Result<CorpusRecord, String> {
        let record = &self.record;
        if record.len() != self.names.len() {
            return Err(format!(
                "expected {} fields, found {}",
                self.names.len(),
                record.len()
            ));
        }
        let id = non_empty_id(&record[self.id])?;
        let text = non_blank(&record[self.text]);
        let mut payload = Map::new();
        for (index, (name, cell)) in self.names.iter().zip(record.iter()).enumerate() {
            if index == self.id || index == self.text || Some(index) == self.name {
                continue;
            }
            if let Some(value) = typed_cell(cell) {
                payload.insert(name.clone(), value);
            }
        }
        let (image_ref, image) = match self.layout {
            CsvLayout::Mimic => {
                if text.is_none() {
                    return Err(NOTHING_TO_EMBED.to_owned());
                }
                (None, None)
            }
            CsvLayout::Roco => {
                let named = self
                    .name
                    .map(|index| record[index].trim())
                    .filter(|name| !name.is_empty());
                let (reference, path) = match named {
                    Some(name) => (name.to_owned(), images.resolve(name)?),
                    None => images.probe(&id)?,
                };
                (Some(reference), Some(path))
            }
        };
        Ok(CorpusRecord {
            line,
            id,
            text,
            image,
            image_ref,
            payload,
        })
    }
}

/// The root images resolve under, with its canonical form computed once per corpus.
#[derive(Debug)]
struct ImageRoot {
    root: Option<PathBuf>,
    canonical: Option<PathBuf>,
}

impl ImageRoot {
    fn resolve(&mut self, reference: &str) -> Result<PathBuf, String> {
        let Some(root) = &self.root else {
            return Err(format!(
                "row references image `{reference}` but no image root was given"
            ));
        };
        let joined = join_relative(root, reference)?;
        check_canonical(root, &joined, reference, &mut self.canonical)?;
        Ok(joined)
    }

    /// ROCO rows without a file name: the first candidate that exists, else `{id}.jpg`.
    fn probe(&mut self, id: &str) -> Result<(String, PathBuf), String> {
        for extension in ROCO_EXTENSIONS {
            let reference = format!("{id}.{extension}");
            let path = self.resolve(&reference)?;
            if path.is_file() {
                return Ok((reference, path));
            }
        }
        let reference = format!("{id}.{}", ROCO_EXTENSIONS[0]);
        let path = self.resolve(&reference)?;
        Ok((reference, path))
    }
}

/// The lexical half of [`resolve_under_root`].
fn join_relative(root: &Path, reference: &str) -> Result<PathBuf, String> {
    if reference.trim().is_empty() {
        return Err("empty image path".to_owned());
    }
    let bytes = reference.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if drive || reference.starts_with(['/', '\\']) || Path::new(reference).is_absolute() {
        return Err(format!(
            "image path must be relative to the image root: `{reference}`"
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in reference.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("image path escapes the image root: `{reference}`"));
                }
            }
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(format!(
            "image path names the image root itself: `{reference}`"
        ));
    }
    let mut joined = root.to_path_buf();
    joined.extend(&parts);
    // Pushing a component with a prefix (`C:x` on Windows) replaces the path instead of extending
    // it; whatever the platform's rules, the result must still be under the root.
    if !joined.starts_with(root) {
        return Err(format!(
            "image path must be relative to the image root: `{reference}`"
        ));
    }
    Ok(joined)
}

/// The file-system half of [`resolve_under_root`]: a symlink inside the root may lead anywhere.
fn check_canonical(
    root: &Path,
    joined: &Path,
    reference: &str,
    canonical_root: &mut Option<PathBuf>,
) -> Result<(), String> {
    if !joined.exists() {
        return Ok(());
    }
    let canonical = fs_err::canonicalize(joined).map_err(|e| e.to_string())?;
    let root_canonical = match canonical_root.take() {
        Some(known) => known,
        None => fs_err::canonicalize(root).map_err(|e| e.to_string())?,
    };
    let inside = canonical.starts_with(&root_canonical);
    *canonical_root = Some(root_canonical);
    if inside {
        Ok(())
    } else {
        Err(format!(
            "image path escapes the image root: `{reference}` leads to {}",
            canonical.display()
        ))
    }
}

fn column_option<'a>(option: &'a Option<String>, default: &'a str) -> &'a str {
    option.as_deref().unwrap_or(default)
}

fn is_captions_txt(path: &Path, first_line: &[u8], id_column: &str) -> bool {
    if path
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("txt"))
    {
        return true;
    }
    let first = String::from_utf8_lossy(first_line);
    let first = first.trim_start_matches('\u{feff}');
    first.contains('\t')
        && !first
            .split(',')
            .any(|name| name.trim().trim_matches('"') == id_column)
}

fn roco_caption_line(
    line: usize,
    text: &str,
    images: &mut ImageRoot,
) -> Result<CorpusRecord, String> {
    let Some((id, caption)) = text.split_once('\t') else {
        return Err("expected `ID<TAB>caption`".to_owned());
    };
    let id = non_empty_id(id)?;
    let (reference, path) = images.probe(&id)?;
    Ok(CorpusRecord {
        line,
        id,
        text: non_blank(caption),
        image: Some(path),
        image_ref: Some(reference),
        payload: Map::new(),
    })
}

fn pmcoa_row(
    line: usize,
    mut row: Map<String, Value>,
    images: &mut ImageRoot,
) -> Result<CorpusRecord, String> {
    let reference = match row.remove("image") {
        Some(Value::String(reference)) if !reference.trim().is_empty() => reference,
        Some(Value::String(_)) => return Err("empty `image`".to_owned()),
        None | Some(Value::Null) => return Err("missing `image`".to_owned()),
        Some(other) => return Err(format!("`image` must be a string, found {}", kind(&other))),
    };
    let text = optional_string(&mut row, "caption")?
        .as_deref()
        .and_then(non_blank);
    let id = match row.remove("id") {
        None | Some(Value::Null) => non_empty_id(&reference)?,
        Some(value) => json_id(value)?,
    };
    let image = images.resolve(&reference)?;
    Ok(CorpusRecord {
        line,
        id,
        text,
        image: Some(image),
        image_ref: Some(reference),
        payload: row,
    })
}

fn jsonl_row(
    line: usize,
    mut row: Map<String, Value>,
    images: &mut ImageRoot,
) -> Result<CorpusRecord, String> {
    let mut unknown: Vec<String> = row
        .keys()
        .filter(|key| !JSONL_FIELDS.contains(&key.as_str()))
        .map(|key| format!("`{key}`"))
        .collect();
    if !unknown.is_empty() {
        // Sorted, so the message does not depend on serde_json's map order feature.
        unknown.sort();
        let plural = if unknown.len() == 1 { "" } else { "s" };
        return Err(format!(
            "unknown field{plural} {} (expected {})",
            unknown.join(", "),
            JSONL_FIELDS.join(", ")
        ));
    }
    let id = match row.remove("id") {
        None | Some(Value::Null) => return Err("missing `id`".to_owned()),
        Some(value) => json_id(value)?,
    };
    let text = optional_string(&mut row, "text")?
        .as_deref()
        .and_then(non_blank);
    // Exports often write "" for a text-only row's image; that means no image, not a bad path.
    let reference =
        optional_string(&mut row, "image")?.filter(|reference| !reference.trim().is_empty());
    let payload = match row.remove("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(metadata)) => metadata,
        Some(other) => {
            return Err(format!(
                "`metadata` must be an object, found {}",
                kind(&other)
            ))
        }
    };
    if text.is_none() && reference.is_none() {
        return Err(NOTHING_TO_EMBED.to_owned());
    }
    let image = reference
        .as_deref()
        .map(|reference| images.resolve(reference))
        .transpose()?;
    Ok(CorpusRecord {
        line,
        id,
        text,
        image,
        image_ref: reference,
        payload,
    })
}

fn json_object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(row)) => Ok(row),
        Ok(other) => Err(format!("expected a JSON object, found {}", kind(&other))),
        Err(e) => {
            // serde_json counts lines within the text it parsed, which is one line; its "line 1"
            // would contradict the row's real line number.
            let full = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            Err(match full.strip_suffix(&position) {
                Some(message) => format!("invalid JSON at column {}: {message}", e.column()),
                None => format!("invalid JSON: {full}"),
            })
        }
    }
}

/// An optional string field; `null` counts as absent.
fn optional_string(row: &mut Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match row.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(other) => Err(format!(
            "`{field}` must be a string, found {}",
            kind(&other)
        )),
    }
}

fn json_id(value: Value) -> Result<String, String> {
    match value {
        Value::String(id) => non_empty_id(&id),
        Value::Number(number) if number.is_i64() || number.is_u64() => Ok(number.to_string()),
        other => Err(format!(
            "`id` must be a string or an integer, found {}",
            kind(&other)
        )),
    }
}

fn non_empty_id(id: &str) -> Result<String, String> {
    let id = id.trim();
    if id.is_empty() {
        Err("empty id".to_owned())
    } else {
        Ok(id.to_owned())
    }
}

fn non_blank(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A CSV payload cell: `None` when empty, a number when the text is one, else the trimmed text.
fn typed_cell(cell: &str) -> Option<Value> {
    let cell = cell.trim();
    if cell.is_empty() {
        return None;
    }
    Some(number(cell).unwrap_or_else(|| Value::String(cell.to_owned())))
}

/// Numbers in plain decimal notation. Text that would not survive the trip through a number stays
/// text: zero-padded codes (`007`), a leading `+`, `inf`/`NaN` (not JSON numbers), and integers
/// beyond `i64`, which as floats would lose digits.
fn number(cell: &str) -> Option<Value> {
    let unsigned = cell.strip_prefix('-').unwrap_or(cell);
    let bytes = unsigned.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|&b| b.is_ascii_digit() || b == b'.');
    let chars_ok = bytes
        .iter()
        .all(|&b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    let zero_padded = bytes.len() > 1 && bytes[0] == b'0' && bytes[1].is_ascii_digit();
    if !first_ok || !chars_ok || zero_padded {
        return None;
    }
    if bytes.iter().all(u8::is_ascii_digit) {
        return cell.parse::<i64>().ok().map(Value::from);
    }
    let float: f64 = cell.parse().ok()?;
    serde_json::Number::from_f64(float).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn options(format: CorpusFormat, root: Option<&Path>) -> CorpusOptions {
        CorpusOptions {
            image_root: root.map(Path::to_path_buf),
            ..CorpusOptions::new(format)
        }
    }

    fn read_all(path: &Path, options: &CorpusOptions) -> Vec<Result<CorpusRecord, BadRow>> {
        read_corpus(path, options).unwrap().collect()
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn bad(line: usize, reason: &str) -> Result<CorpusRecord, BadRow> {
        Err(BadRow {
            line,
            reason: reason.to_owned(),
        })
    }

    #[test]
    fn format_names_parse_and_display() {
        for (name, format) in [
            ("pmcoa", CorpusFormat::PmcOa),
            ("roco", CorpusFormat::Roco),
            ("mimic", CorpusFormat::Mimic),
            ("jsonl", CorpusFormat::Jsonl),
        ] {
            assert_eq!(name.parse::<CorpusFormat>().unwrap(), format);
            assert_eq!(format.to_string(), name);
        }
        assert_eq!(
            " PmcOA ".parse::<CorpusFormat>().unwrap(),
            CorpusFormat::PmcOa
        );
        let err = "pmc-oa".parse::<CorpusFormat>().unwrap_err();
        assert!(matches!(&err, CorpusError::UnknownFormat { given } if given == "pmc-oa"));
        assert_eq!(
            err.to_string(),
            "unknown corpus format `pmc-oa` (expected one of: pmcoa, roco, mimic, jsonl)"
        );
        // The message's list is written out; it must follow `ALL`.
        let listed: Vec<&str> = CorpusFormat::ALL
            .iter()
            .map(|format| format.name())
            .collect();
        assert!(err
            .to_string()
            .ends_with(&format!("(expected one of: {})", listed.join(", "))));
    }

    #[test]
    fn pmcoa_rows_with_ids_captions_and_payload() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        write(&root, "fig1.jpg", "x");
        let corpus = write(
            dir.path(),
            "pmc.jsonl",
            concat!(
                "{\"image\": \"fig1.jpg\", \"caption\": \"  Chest X-ray. \", \"pmcid\": \"PMC1\", \"year\": 2019, \"tags\": [\"a\"]}\n",
                "\n",
                "{\"id\": 42, \"image\": \"sub/fig2.png\", \"caption\": \"   \"}\r\n",
                "{\"id\": \"abc\", \"image\": \"fig3.png\"}",
            ),
        );
        let rows = read_all(&corpus, &options(CorpusFormat::PmcOa, Some(&root)));
        assert_eq!(
            rows,
            vec![
                Ok(CorpusRecord {
                    line: 1,
                    id: "fig1.jpg".into(),
                    text: Some("Chest X-ray.".into()),
                    image: Some(root.join("fig1.jpg")),
                    image_ref: Some("fig1.jpg".into()),
                    payload: object(json!({"pmcid": "PMC1", "year": 2019, "tags": ["a"]})),
                }),
                Ok(CorpusRecord {
                    line: 3,
                    id: "42".into(),
                    text: None,
                    image: Some(root.join("sub").join("fig2.png")),
                    image_ref: Some("sub/fig2.png".into()),
                    payload: Map::new(),
                }),
                Ok(CorpusRecord {
                    line: 4,
                    id: "abc".into(),
                    text: None,
                    image: Some(root.join("fig3.png")),
                    image_ref: Some("fig3.png".into()),
                    payload: Map::new(),
                }),
            ]
        );
    }

    #[test]
    fn pmcoa_bad_rows_are_reported_and_reading_continues() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = write(
            dir.path(),
            "pmc.jsonl",
            concat!(
                "{\"caption\": \"no image\"}\n",
                "{\"image\": \"a.png\", \"caption\": 3}\n",
                "{\"image\": \"a.png\", \"caption\": \"ok\"\n",
                "[1, 2]\n",
                "{\"image\": \"../up.png\", \"caption\": \"escape\"}\n",
                "{\"image\": \"a.png\", \"id\": 1.5}\n",
                "{\"image\": \"a.png\", \"id\": \" \"}\n",
                "{\"image\": \"\"}\n",
                "{\"image\": \"b.png\", \"caption\": \"fine\"}\n",
            ),
        );
        let rows = read_all(&corpus, &options(CorpusFormat::PmcOa, Some(dir.path())));
        assert_eq!(rows.len(), 9);
        assert_eq!(rows[0], bad(1, "missing `image`"));
        assert_eq!(
            rows[1],
            bad(2, "`caption` must be a string, found a number")
        );
        assert_eq!(
            rows[2],
            bad(3, "invalid JSON at column 34: EOF while parsing an object")
        );
        assert_eq!(rows[3], bad(4, "expected a JSON object, found an array"));
        assert_eq!(
            rows[4],
            bad(5, "image path escapes the image root: `../up.png`")
        );
        assert_eq!(
            rows[5],
            bad(6, "`id` must be a string or an integer, found a number")
        );
        assert_eq!(rows[6], bad(7, "empty id"));
        assert_eq!(rows[7], bad(8, "empty `image`"));
        let last = rows[8].as_ref().unwrap();
        assert_eq!(
            (last.line, last.id.as_str(), last.text.as_deref()),
            (9, "b.png", Some("fine"))
        );
    }

    #[test]
    fn pmcoa_without_image_root_is_a_bad_row() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = write(
            dir.path(),
            "pmc.jsonl",
            "{\"image\": \"a.png\", \"caption\": \"c\"}\n",
        );
        let rows = read_all(&corpus, &options(CorpusFormat::PmcOa, None));
        assert_eq!(
            rows,
            vec![bad(
                1,
                "row references image `a.png` but no image root was given"
            )]
        );
        assert_eq!(
            rows[0].as_ref().unwrap_err().to_string(),
            "line 1: row references image `a.png` but no image root was given"
        );
    }

    #[test]
    fn jsonl_rows_with_metadata_payload() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = write(
            dir.path(),
            "plain.jsonl",
            concat!(
                "\u{feff}{\"id\": 7, \"text\": \" effusion \", \"metadata\": {\"site\": \"A\", \"age\": 61}}\n",
                "{\"id\": \"img-1\", \"image\": \"x/y.dcm\", \"text\": null}\n",
                "{\"id\": \"both\", \"text\": \"t\", \"image\": \"\", \"metadata\": null}\n",
            ),
        );
        let root = dir.path().join("img");
        let rows = read_all(&corpus, &options(CorpusFormat::Jsonl, Some(&root)));
        assert_eq!(
            rows,
            vec![
                Ok(CorpusRecord {
                    line: 1,
                    id: "7".into(),
                    text: Some("effusion".into()),
                    image: None,
                    image_ref: None,
                    payload: object(json!({"site": "A", "age": 61})),
                }),
                Ok(CorpusRecord {
                    line: 2,
                    id: "img-1".into(),
                    text: None,
                    image: Some(root.join("x").join("y.dcm")),
                    image_ref: Some("x/y.dcm".into()),
                    payload: Map::new(),
                }),
                Ok(CorpusRecord {
                    line: 3,
                    id: "both".into(),
                    text: Some("t".into()),
                    image: None,
                    image_ref: None,
                    payload: Map::new(),
                }),
            ]
        );
    }

    #[test]
    fn jsonl_bad_rows_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = write(
            dir.path(),
            "plain.jsonl",
            concat!(
                "{\"id\": 1, \"txt\": \"typo\", \"meta\": {}}\n",
                "{\"id\": 2, \"caption\": \"x\"}\n",
                "{\"text\": \"no id\"}\n",
                "{\"id\": 3, \"text\": \"x\", \"metadata\": [1]}\n",
                "{\"id\": 4, \"text\": \"  \"}\n",
                "{\"id\": true, \"text\": \"x\"}\n",
                "{\"id\": 5, \"image\": \"a.png\"}\n",
                "   \n",
                "not json\n",
                "{\"id\": 6, \"text\": \"fine\"}\n",
            ),
        );
        let rows = read_all(&corpus, &options(CorpusFormat::Jsonl, None));
        assert_eq!(
            rows,
            vec![
                bad(
                    1,
                    "unknown fields `meta`, `txt` (expected id, text, image, metadata)"
                ),
                bad(
                    2,
                    "unknown field `caption` (expected id, text, image, metadata)"
                ),
                bad(3, "missing `id`"),
                bad(4, "`metadata` must be an object, found an array"),
                bad(5, "row has neither text nor an image"),
                bad(6, "`id` must be a string or an integer, found a boolean"),
                bad(
                    7,
                    "row references image `a.png` but no image root was given"
                ),
                bad(9, "invalid JSON at column 2: expected ident"),
                Ok(CorpusRecord {
                    line: 10,
                    id: "6".into(),
                    text: Some("fine".into()),
                    image: None,
                    image_ref: None,
                    payload: Map::new(),
                }),
            ]
        );
    }

    #[test]
    fn invalid_utf8_line_is_one_bad_row() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("bytes.jsonl");
        let mut bytes = b"{\"id\": 1, \"text\": \"a\"}\n{\"id\": 2, \"text\": \"".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        bytes.extend_from_slice(b"\"}\n{\"id\": 3, \"text\": \"c\"}\n");
        std::fs::write(&corpus, bytes).unwrap();
        let rows = read_all(&corpus, &options(CorpusFormat::Jsonl, None));
        let summary: Vec<Result<String, usize>> = rows
            .iter()
            .map(|row| row.as_ref().map(|r| r.id.clone()).map_err(|b| b.line))
            .collect();
        assert_eq!(summary, vec![Ok("1".into()), Err(2), Ok("3".into())]);
        assert!(rows[1]
            .as_ref()
            .unwrap_err()
            .reason
            .starts_with("not valid UTF-8: "));
    }

    #[test]
    fn resolve_rejects_escapes_and_accepts_inner_dotdot() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(
            resolve_under_root(root, "a/../b.png").unwrap(),
            root.join("b.png")
        );
        assert_eq!(
            resolve_under_root(root, "./a//b.png").unwrap(),
            root.join("a").join("b.png")
        );
        assert_eq!(
            resolve_under_root(root, "a\\b.png").unwrap(),
            root.join("a").join("b.png")
        );
        assert_eq!(
            resolve_under_root(root, "../x.png").unwrap_err(),
            "image path escapes the image root: `../x.png`"
        );
        assert_eq!(
            resolve_under_root(root, "a/../../x").unwrap_err(),
            "image path escapes the image root: `a/../../x`"
        );
        assert_eq!(
            resolve_under_root(root, "a\\..\\..\\x").unwrap_err(),
            "image path escapes the image root: `a\\..\\..\\x`"
        );
        for absolute in [
            "/etc/passwd",
            "C:\\Windows\\x.png",
            "c:x.png",
            "\\\\server\\share\\x.png",
            "\\x.png",
        ] {
            assert_eq!(
                resolve_under_root(root, absolute).unwrap_err(),
                format!("image path must be relative to the image root: `{absolute}`")
            );
        }
        assert_eq!(
            resolve_under_root(root, "").unwrap_err(),
            "empty image path"
        );
        assert_eq!(
            resolve_under_root(root, "a/..").unwrap_err(),
            "image path names the image root itself: `a/..`"
        );
    }

    #[cfg(unix)]
    #[test]
    fn resolve_rejects_symlinks_leading_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = write(dir.path(), "secret.png", "s");
        write(&root, "real/inside.png", "i");
        std::os::unix::fs::symlink(&outside, root.join("leak.png")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("alias")).unwrap();

        let canonical_secret = std::fs::canonicalize(&outside).unwrap();
        assert_eq!(
            resolve_under_root(&root, "leak.png").unwrap_err(),
            format!(
                "image path escapes the image root: `leak.png` leads to {}",
                canonical_secret.display()
            )
        );
        assert!(resolve_under_root(&root, "up/secret.png")
            .unwrap_err()
            .starts_with("image path escapes the image root: `up/secret.png`"));
        // A symlink that stays inside the root is fine, and the path is not canonicalised.
        assert_eq!(
            resolve_under_root(&root, "alias/inside.png").unwrap(),
            root.join("alias/inside.png")
        );

        // The reader applies the same check to every row.
        let corpus = write(
            dir.path(),
            "c.jsonl",
            "{\"id\": 1, \"image\": \"leak.png\"}\n{\"id\": 2, \"image\": \"real/inside.png\"}\n",
        );
        let rows = read_all(&corpus, &options(CorpusFormat::Jsonl, Some(&root)));
        assert_eq!(rows[0].as_ref().unwrap_err().line, 1);
        assert!(rows[0]
            .as_ref()
            .unwrap_err()
            .reason
            .starts_with("image path escapes the image root"));
        assert_eq!(
            rows[1].as_ref().unwrap().image,
            Some(root.join("real/inside.png"))
        );
    }

    #[test]
    fn roco_captions_txt_probes_image_extensions() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        write(&root, "ROCO_00002.png", "p");
        write(&root, "ROCO_00003.jpeg", "j");
        write(&root, "ROCO_00003.dcm", "d");
        let corpus = write(
            dir.path(),
            "captions.txt",
            concat!(
                "ROCO_00002\t Computed tomography of the chest. \n",
                "\n",
                "ROCO_00003\tMRI\twith a tab\n",
                "no tab here\n",
                "ROCO_00004\t\n",
                "\t orphan caption\n",
            ),
        );
        let rows = read_all(&corpus, &options(CorpusFormat::Roco, Some(&root)));
        assert_eq!(
            rows,
            vec![
                Ok(CorpusRecord {
                    line: 1,
                    id: "ROCO_00002".into(),
                    text: Some("Computed tomography of the chest.".into()),
                    image: Some(root.join("ROCO_00002.png")),
                    image_ref: Some("ROCO_00002.png".into()),
                    payload: Map::new(),
                }),
                Ok(CorpusRecord {
                    line: 3,
                    id: "ROCO_00003".into(),
                    text: Some("MRI\twith a tab".into()),
                    image: Some(root.join("ROCO_00003.jpeg")),
                    image_ref: Some("ROCO_00003.jpeg".into()),
                    payload: Map::new(),
                }),
                bad(4, "expected `ID<TAB>caption`"),
                Ok(CorpusRecord {
                    line: 5,
                    id: "ROCO_00004".into(),
                    text: None,
                    image: Some(root.join("ROCO_00004.jpg")),
                    image_ref: Some("ROCO_00004.jpg".into()),
                    payload: Map::new(),
                }),
                bad(6, "empty id"),
            ]
        );
    }

    #[test]
    fn roco_tab_lines_without_txt_extension_are_captions() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = write(
            dir.path(),
            "captions.tsv",
            "\u{feff}R1\tfirst, with a comma\nR2\tsecond\n",
        );
        let rows = read_all(&corpus, &options(CorpusFormat::Roco, Some(dir.path())));
        let ids: Vec<(usize, String, Option<String>)> = rows
            .into_iter()
            .map(|row| row.unwrap())
            .map(|record| (record.line, record.id, record.text))
            .collect();
        assert_eq!(
            ids,
            vec![
                (1, "R1".into(), Some("first, with a comma".into())),
                (2, "R2".into(), Some("second".into()))
            ]
        );
    }

    #[test]
    fn roco_csv_uses_name_column_and_types_payload() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        write(&root, "R2.png", "p");
        let corpus = write(
            dir.path(),
            "roco.csv",
            concat!(
                "id, name ,caption,modality,year\n",
                "R1,PMC1_fig.jpg,\"CT, axial\",CT,2015\n",
                "R2,,MRI of the knee,MR,\n",
                "R3,x.jpg,too few\n",
                "R4,../../etc/passwd,escape,CT,2016\n",
                "R5,r5.jpg,\"tab\there\",XR,2017.5\n",
            ),
        );
        let rows = read_all(&corpus, &options(CorpusFormat::Roco, Some(&root)));
        assert_eq!(
            rows,
            vec![
                Ok(CorpusRecord {
                    line: 2,
                    id: "R1".into(),
                    text: Some("CT, axial".into()),
                    image: Some(root.join("PMC1_fig.jpg")),
                    image_ref: Some("PMC1_fig.jpg".into()),
                    payload: object(json!({"modality": "CT", "year": 2015})),
                }),
                Ok(CorpusRecord {
                    line: 3,
                    id: "R2".into(),
                    text: Some("MRI of the knee".into()),
                    image: Some(root.join("R2.png")),
                    image_ref: Some("R2.png".into()),
                    payload: object(json!({"modality": "MR"})),
                }),
                bad(4, "expected 5 fields, found 3"),
                bad(5, "image path escapes the image root: `../../etc/passwd`"),
                Ok(CorpusRecord {
                    line: 6,
                    id: "R5".into(),
                    text: Some("tab\there".into()),
                    image: Some(root.join("r5.jpg")),
                    image_ref: Some("r5.jpg".into()),
                    payload: object(json!({"modality": "XR", "year": 2017.5})),
                }),
            ]
        );
    }

    #[test]
    fn roco_csv_with_custom_columns_and_missing_column() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = write(dir.path(), "roco.csv", "image_id,text\nR1,hello\n");
        let mut opts = options(CorpusFormat::Roco, Some(dir.path()));
        let err = read_corpus(&corpus, &opts).unwrap_err();
        assert!(
            matches!(&err, CorpusError::MissingColumn { column, found, .. }
            if column == "id" && found == &["image_id", "text"])
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{}: missing required column `id` (columns found: image_id, text)",
                corpus.display()
            )
        );
        opts.id_column = Some("image_id".into());
        let err = read_corpus(&corpus, &opts).unwrap_err();
        assert!(err
            .to_string()
            .ends_with("missing required column `caption` (columns found: image_id, text)"));
        opts.text_column = Some("text".into());
        let rows = read_all(&corpus, &opts);
        let record = rows[0].as_ref().unwrap();
        assert_eq!(
            (record.id.as_str(), record.text.as_deref()),
            ("R1", Some("hello"))
        );
        assert_eq!(record.image_ref.as_deref(), Some("R1.jpg"));
    }

    #[test]
    fn mimic_types_payload_cells_and_omits_empty_ones() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = write(
            dir.path(),
            "reports.csv",
            concat!(
                "\u{feff}subject_id,study_id,report,age,weight,mrn,code,note,big,neg,sci,nan,plus\n",
                "10001,50001,\"FINDINGS: clear.\nIMPRESSION: normal.\",64,72.5,007,A12, ,99999999999999999999,-3,1e3,NaN,+5\n",
                "10002,50002,No acute process.,,,,,,,,,,\n",
            ),
        );
        let rows = read_all(&corpus, &options(CorpusFormat::Mimic, None));
        assert_eq!(
            rows,
            vec![
                Ok(CorpusRecord {
                    line: 2,
                    id: "50001".into(),
                    text: Some("FINDINGS: clear.\nIMPRESSION: normal.".into()),
                    image: None,
                    image_ref: None,
                    payload: object(json!({
                        "subject_id": 10001,
                        "age": 64,
                        "weight": 72.5,
                        "mrn": "007",
                        "code": "A12",
                        "big": "99999999999999999999",
                        "neg": -3,
                        "sci": 1000.0,
                        "nan": "NaN",
                        "plus": "+5",
                    })),
                }),
                Ok(CorpusRecord {
                    line: 3,
                    id: "50002".into(),
                    text: Some("No acute process.".into()),
                    image: None,
                    image_ref: None,
                    payload: object(json!({"subject_id": 10002})),
                }),
            ]
        );
        let payload = &rows[0].as_ref().unwrap().payload;
        assert!(payload["age"].is_i64());
        assert!(payload["weight"].is_f64());
        assert!(payload["sci"].is_f64());
    }

    #[test]
    fn mimic_bad_rows_and_record_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = write(
            dir.path(),
            "reports.csv",
            concat!(
                "study_id,report,view\n",
                "s1,\"multi\nline\",PA\n",
                "s2,extra,PA,oops\n",
                ",no id,AP\n",
                "s4,   ,AP\n",
                "s5,last,LL\n",
            ),
        );
        let rows = read_all(&corpus, &options(CorpusFormat::Mimic, None));
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0].as_ref().unwrap().line, 2);
        assert_eq!(rows[1], bad(3, "expected 3 fields, found 4"));
        assert_eq!(rows[2], bad(4, "empty id"));
        assert_eq!(rows[3], bad(5, "row has neither text nor an image"));
        let last = rows[4].as_ref().unwrap();
        assert_eq!((last.line, last.id.as_str()), (6, "s5"));
        assert_eq!(last.payload, object(json!({"view": "LL"})));
    }

    #[test]
    fn mimic_custom_columns_missing_column_and_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = write(dir.path(), "reports.csv", "study,findings\n1,ok\n");
        let err = read_corpus(&corpus, &options(CorpusFormat::Mimic, None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: missing required column `study_id` (columns found: study, findings)",
                corpus.display()
            )
        );
        let opts = CorpusOptions {
            id_column: Some("study".into()),
            text_column: Some("findings".into()),
            ..options(CorpusFormat::Mimic, None)
        };
        let record = read_all(&corpus, &opts).remove(0).unwrap();
        assert_eq!(
            (record.id.as_str(), record.text.as_deref()),
            ("1", Some("ok"))
        );

        let empty = write(dir.path(), "empty.csv", "");
        let err = read_corpus(&empty, &options(CorpusFormat::Mimic, None)).unwrap_err();
        assert!(matches!(&err, CorpusError::NoHeader { path } if path == &empty));
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.jsonl");
        let err = read_corpus(&missing, &options(CorpusFormat::Jsonl, None)).unwrap_err();
        assert!(matches!(err, CorpusError::Io(_)));
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn numbers_keep_text_that_would_change() {
        let cases = [
            ("0", json!(0)),
            ("-12", json!(-12)),
            ("0.25", json!(0.25)),
            (".5", json!(0.5)),
            ("-1.5e2", json!(-150.0)),
            ("9223372036854775807", json!(i64::MAX)),
            ("9223372036854775808", json!("9223372036854775808")),
            ("00.5", json!("00.5")),
            ("1e400", json!("1e400")),
            ("inf", json!("inf")),
            ("2150-03-04", json!("2150-03-04")),
            ("1.2.3", json!("1.2.3")),
            ("-", json!("-")),
            (" 42 ", json!(42)),
        ];
        for (cell, expected) in cases {
            assert_eq!(typed_cell(cell), Some(expected), "{cell:?}");
        }
        assert_eq!(typed_cell("   "), None);
    }
}
