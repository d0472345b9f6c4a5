//! `--input FILE|-` of `mirage embed`, `classify`, `search` and `rag`: many inputs from a file or
//! standard input, one per line, read as they come (a pipe of 10k texts needs no shell loop).
//!
//! A line is a plain text, or a JSON object `{"text": …, "image": "path"}` (either or both;
//! other keys are ignored). With `--input-format auto` (the default) a line whose first
//! non-blank character is `{` is read as JSON, any other as text; `text` reads every line as
//! text (for texts that start with `{`), `jsonl` every line as JSON. Blank lines are skipped.
//! A line that cannot be used is reported on stderr with its line number and skipped; the
//! command then ends with a non-zero status after every other line was answered.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

/// How input lines are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum InputFormat {
    /// JSON for lines starting with `{`, text otherwise.
    Auto,
    /// Every line is a text.
    Text,
    /// Every line is a JSON object with `text` and/or `image`.
    Jsonl,
}

/// The flags of a command that can read its inputs from a file.
#[derive(Args, Debug, Clone)]
pub(crate) struct InputArgs {
    /// Read inputs from FILE (`-`: standard input), one per line: a text, or JSON
    /// `{"text": …, "image": "path"}`. Output rows carry the input's `line`; bad lines are
    /// reported by line number and skipped, and the command then exits with status 1.
    #[arg(long, value_name = "FILE|-")]
    pub(crate) input: Option<String>,
    /// How lines of --input are read: auto (JSON when a line starts with `{`), text, jsonl.
    #[arg(long, value_enum, default_value = "auto", requires = "input")]
    pub(crate) input_format: InputFormat,
}

/// One usable input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputLine {
    /// 1-based line number.
    pub(crate) line: usize,
    /// The text, if any.
    pub(crate) text: Option<String>,
    /// The image path, if any.
    pub(crate) image: Option<PathBuf>,
}

/// Lines that could not be used, counted for the final status.
#[derive(Debug, Default)]
pub(crate) struct BadLines {
    count: usize,
}

impl BadLines {
    /// Reports line `line` as unusable.
    pub(crate) fn report(&mut self, line: usize, why: impl std::fmt::Display) {
        self.count += 1;
        eprintln!("line {line}: {why}");
    }

    /// `Ok` when every line was used, else the error that gives the command its status.
    pub(crate) fn finish(self, total: usize) -> Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        anyhow::bail!(
            "{} of {total} input lines could not be used (reported above by line number)",
            self.count
        )
    }
}

/// Parses one non-blank line.
fn parse(line: usize, raw: &str, format: InputFormat) -> Result<InputLine, String> {
    let json = match format {
        InputFormat::Text => false,
        InputFormat::Jsonl => true,
        InputFormat::Auto => raw.trim_start().starts_with('{'),
    };
    if !json {
        return Ok(InputLine {
            line,
            text: Some(raw.to_owned()),
            image: None,
        });
    }
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("not a JSON object: {e}"))?;
    let obj = value
        .as_object()
        .ok_or("not a JSON object: give {\"text\": …} and/or {\"image\": \"path\"}")?;
    let field = |key: &str| -> Result<Option<String>, String> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(serde_json::Value::String(_)) => Err(format!("\"{key}\" is empty")),
            Some(_) => Err(format!("\"{key}\" must be a string")),
        }
    };
    let (text, image) = (field("text")?, field("image")?.map(PathBuf::from));
    if text.is_none() && image.is_none() {
        return Err("give \"text\" and/or \"image\"".into());
    }
    Ok(InputLine { line, text, image })
}

/// Reads `spec` (a path, or `-` for standard input) line by line: each non-blank line as an
/// [`InputLine`] or, when it cannot be used, its number and the reason. Reading errors (a
/// missing file, invalid UTF-8) end the iteration with an error.
pub(crate) fn read(
    spec: &str,
    format: InputFormat,
) -> Result<impl Iterator<Item = Result<Result<InputLine, (usize, String)>>>> {
    let reader: Box<dyn BufRead> = if spec == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let path = Path::new(spec);
        Box::new(BufReader::new(
            std::fs::File::open(path).with_context(|| format!("--input {}", path.display()))?,
        ))
    };
    let source = spec.to_owned();
    Ok(reader.lines().enumerate().filter_map(move |(i, line)| {
        let line_no = i + 1;
        let raw = match line.with_context(|| format!("--input {source}: line {line_no}")) {
            Ok(raw) => raw,
            Err(e) => return Some(Err(e)),
        };
        // A file written on Windows.
        let raw = raw.strip_suffix('\r').unwrap_or(&raw);
        (!raw.trim().is_empty())
            .then(|| Ok(parse(line_no, raw, format).map_err(|why| (line_no, why))))
    }))
}

/// `--input` of classify, search and rag: `answer` turns each usable line into output rows, written as
/// JSON lines with the line's number (`line`) in input order; a line that cannot be read or
/// answered is reported by number and skipped, and the command then fails.
pub(crate) fn for_each_line(
    spec: &str,
    format: InputFormat,
    mut answer: impl FnMut(&InputLine) -> Result<Vec<serde_json::Value>>,
) -> Result<()> {
    let mut bad = BadLines::default();
    let mut total = 0;
    let mut out = std::io::stdout().lock();
    for item in read(spec, format)? {
        total += 1;
        let line = match item? {
            Ok(line) => line,
            Err((n, why)) => {
                bad.report(n, why);
                continue;
            }
        };
        match answer(&line) {
            Ok(rows) => {
                for mut row in rows {
                    row["line"] = serde_json::json!(line.line);
                    writeln!(out, "{row}")?;
                }
                out.flush()?;
            }
            Err(e) => bad.report(line.line, format!("{e:#}")),
        }
    }
    bad.finish(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_texts_or_json_objects_and_bad_ones_say_why() {
        let ok = |raw: &str, f| parse(3, raw, f).unwrap();
        assert_eq!(
            ok("left pleural effusion", InputFormat::Auto)
                .text
                .as_deref(),
            Some("left pleural effusion")
        );
        assert_eq!(
            ok("-5 mm nodule", InputFormat::Auto).text.as_deref(),
            Some("-5 mm nodule")
        );
        let both = ok(
            r#"{"text": "edema", "image": "a.png", "id": 7}"#,
            InputFormat::Auto,
        );
        assert_eq!(both.text.as_deref(), Some("edema"));
        assert_eq!(both.image, Some(PathBuf::from("a.png")));
        assert_eq!(both.line, 3);
        assert_eq!(
            ok(r#"{"text": "x"}"#, InputFormat::Text).text.as_deref(),
            Some(r#"{"text": "x"}"#)
        );
        for (raw, format, says) in [
            ("{not json", InputFormat::Auto, "not a JSON object"),
            ("plain", InputFormat::Jsonl, "not a JSON object"),
            ("[1, 2]", InputFormat::Jsonl, "not a JSON object"),
            (r#"{"id": 1}"#, InputFormat::Auto, "give \"text\""),
            (r#"{"text": 5}"#, InputFormat::Auto, "must be a string"),
            (r#"{"text": "  "}"#, InputFormat::Auto, "is empty"),
        ] {
            let e = parse(1, raw, format).unwrap_err();
            assert!(e.contains(says), "{raw}: {e}");
        }
    }

    #[test]
    fn a_file_is_read_in_order_skipping_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "first\r\n\n  \n{\"image\": \"b.png\"}\n{bad\nlast").unwrap();
        let got: Vec<_> = read(path.to_str().unwrap(), InputFormat::Auto)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].as_ref().unwrap().text.as_deref(), Some("first"));
        assert_eq!(got[1].as_ref().unwrap().line, 4);
        assert_eq!(got[2].as_ref().unwrap_err().0, 5);
        assert_eq!(got[3].as_ref().unwrap().line, 6);
        let e = read("/nonexistent/in.txt", InputFormat::Auto)
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("/nonexistent/in.txt"), "{e:#}");
    }
}
