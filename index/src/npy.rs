//! NumPy `.npy` matrices: how vectors embedded elsewhere (a GPU box, another tool) come in, and
//! how a batch of query vectors is given to `mirage search --vectors`.
//!
//! Reads format versions 1–3 holding a C-ordered 2-D array of little-endian `f4` or `f8`
//! (`np.save(path, x.astype("float32"))`); anything else is refused with what was found.

use std::io::Write;
use std::path::Path;

use crate::error::{IndexError, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// A row-major matrix of f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows (vectors).
    pub rows: usize,
    /// Number of columns (dimension).
    pub cols: usize,
    /// `rows × cols` values, row after row.
    pub data: Vec<f32>,
}

impl Matrix {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Every row, in order.
    pub fn iter_rows(&self) -> impl Iterator<Item = &[f32]> + '_ {
        self.data.chunks_exact(self.cols.max(1)).take(self.rows)
    }
}

fn bad(path: &Path, why: impl std::fmt::Display) -> IndexError {
    IndexError::invalid(format!(
        "{}: not a usable .npy matrix: {why}",
        path.display()
    ))
}

/// Reads a 2-D f32 (or f64, converted) `.npy` file.
pub fn read_matrix(path: &Path) -> Result<Matrix> {
    let bytes = fs_err::read(path)?;
    parse_matrix(&bytes).map_err(|why| bad(path, why))
}

fn parse_matrix(bytes: &[u8]) -> std::result::Result<Matrix, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("it does not start with the NumPy magic string".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("format version {v} (this build reads 1–3)")),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or("the header is cut short")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let descr = header_value(header, "descr").ok_or("the header has no 'descr'")?;
    let width = match descr.trim_matches(|c| c == '\'' || c == '"') {
        "<f4" => 4,
        "<f8" => 8,
        other => {
            return Err(format!(
                "dtype {other} (give float32 or float64, little-endian: x.astype('float32'))"
            ))
        }
    };
    let fortran =
        header_value(header, "fortran_order").ok_or("the header has no 'fortran_order'")?;
    if fortran.trim() != "False" {
        return Err("it is in Fortran order (save np.ascontiguousarray(x))".into());
    }
    let shape = header_value(header, "shape").ok_or("the header has no 'shape'")?;
    let dims: Vec<usize> = shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| format!("shape {shape} is not numeric"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(format!(
            "shape {shape} has {} dimensions; give a 2-D array (vectors × dimension)",
            dims.len()
        ));
    };
    let body = &bytes[start + header_len..];
    let expected = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(width))
        .ok_or("the shape overflows")?;
    if body.len() != expected {
        return Err(format!(
            "shape {shape} needs {expected} bytes of data, the file has {}",
            body.len()
        ));
    }
    let data = if width == 4 {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        body.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect()
    };
    Ok(Matrix { rows, cols, data })
}

/// The text after `'key':` in a header dict, up to the next top-level comma.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}':"))
        .or_else(|| header.find(&format!("\"{key}\":")))?;
    let rest = header[at + key.len() + 3..].trim_start();
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// The ids file beside a vector matrix: one id per line, in row order.
pub fn read_ids(path: &Path) -> Result<Vec<String>> {
    Ok(fs_err::read_to_string(path)?
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect())
}

/// The payload file beside a vector matrix: one JSON object per line, in row order.
pub fn read_payloads(path: &Path) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    fs_err::read_to_string(path)?
        .lines()
        .enumerate()
        .map(|(i, line)| match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            Ok(_) => Err(IndexError::invalid(format!(
                "{} line {}: not a JSON object",
                path.display(),
                i + 1
            ))),
            Err(e) => Err(IndexError::invalid(format!(
                "{} line {}: {e}",
                path.display(),
                i + 1
            ))),
        })
        .collect()
}

/// Items carrying row `i` of `vectors` in the `target` space, with id `ids[i]` (default: the row
/// number) and payload `payloads[i]` (default: none). Counts must agree; the vectors are checked
/// (dimension, finite, non-zero) and scaled to unit length by the store on upsert.
pub fn vector_items(
    vectors: &Matrix,
    ids: Option<Vec<String>>,
    payloads: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    target: crate::VectorName,
) -> Result<Vec<crate::Item>> {
    let ids = match ids {
        Some(ids) if ids.len() != vectors.rows => {
            return Err(IndexError::invalid(format!(
                "{} ids for {} vectors: give one id per row",
                ids.len(),
                vectors.rows
            )))
        }
        Some(ids) => ids,
        None => (0..vectors.rows).map(|i| i.to_string()).collect(),
    };
    let payloads = match payloads {
        Some(p) if p.len() != vectors.rows => {
            return Err(IndexError::invalid(format!(
                "{} payloads for {} vectors: give one JSON object per row",
                p.len(),
                vectors.rows
            )))
        }
        Some(p) => p,
        None => vec![Default::default(); vectors.rows],
    };
    Ok(vectors
        .iter_rows()
        .zip(ids)
        .zip(payloads)
        .map(|((v, id), payload)| {
            let v = Some(v.to_vec());
            let (text_vector, image_vector) = match target {
                crate::VectorName::Text => (v, None),
                crate::VectorName::Image => (None, v),
            };
            crate::Item {
                id,
                text: None,
                image: None,
                payload,
                text_vector,
                image_vector,
            }
        })
        .collect())
}

/// Writes `matrix` as a version-1 `.npy` file of little-endian f32.
pub fn write_matrix(path: &Path, matrix: &Matrix) -> Result<()> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        matrix.rows, matrix.cols
    );
    // The data starts 64-byte aligned, as NumPy writes it.
    while !(MAGIC.len() + 4 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + matrix.data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in &matrix.data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    fs_err::File::create(path)?.write_all(&out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_matrix_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        let m = Matrix {
            rows: 3,
            cols: 2,
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5],
        };
        write_matrix(&path, &m).unwrap();
        assert_eq!(read_matrix(&path).unwrap(), m);
        assert_eq!(m.row(2), &[5.0, -6.5]);
    }

    fn npy(descr: &str, fortran: &str, shape: &str, body: &[u8]) -> Vec<u8> {
        let header =
            format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}\n");
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn f64_is_converted_and_everything_else_is_refused_by_name() {
        let body: Vec<u8> = [0.5f64, -1.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let m = parse_matrix(&npy("<f8", "False", "(1, 2)", &body)).unwrap();
        assert_eq!(m.data, vec![0.5, -1.0]);
        let f4: Vec<u8> = [1.0f32; 6].iter().flat_map(|x| x.to_le_bytes()).collect();
        for (bytes, says) in [
            (b"PK\x03\x04 a zip".to_vec(), "magic"),
            (npy("<i8", "False", "(1, 2)", &body), "dtype <i8"),
            (npy(">f4", "False", "(1, 2)", &body), "dtype >f4"),
            (npy("<f4", "True", "(2, 3)", &f4), "Fortran"),
            (npy("<f4", "False", "(6,)", &f4), "1 dimensions"),
            (npy("<f4", "False", "(2, 3, 1)", &f4), "3 dimensions"),
            (npy("<f4", "False", "(4, 3)", &f4), "needs 48 bytes"),
        ] {
            let err = parse_matrix(&bytes).unwrap_err();
            assert!(err.contains(says), "{says}: {err}");
        }
    }
}
