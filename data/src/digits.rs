//! The handwritten-digits dataset behind `mirage data digits`: a PMC-OA-format image–caption
//! dataset from real scanned handwriting with exact labels — the 1,797 8×8 digit images
//! (UCI optical recognition of handwritten digits, 13 writers) that scikit-learn ships as
//! `sklearn/datasets/data/digits.csv.gz` (docs/DATA.md (e); `scripts/fetch-assets.sh sklearn`).
//!
//! Each image gets a caption built only from facts measured on it: the digit, its stroke weight
//! (ink relative to the other images of the same digit: thirds) and its slant (the ink's shear,
//! thirds over the whole set), e.g. "a handwritten seven with thick strokes, slanted right".
//! All three are zero-shot tasks in `dataset.json`. Splits are 70/15/15 within each digit from a
//! seeded shuffle; the source records no writer, so one writer's digits can fall in several
//! splits. The output is a pure function of the source file, the size and the seed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{imageops, GrayImage, Luma};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::splits::SplitWriter;

/// The digits as caption words, index = digit.
pub const DIGIT_WORDS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];
/// Stroke-weight classes, lightest first.
pub const STROKES: [&str; 3] = ["thin", "regular", "thick"];
/// Slant classes, from leaning left to leaning right.
pub const SLANTS: [&str; 3] = ["slanted left", "upright", "slanted right"];

/// Pixels of the source grid (8 × 8) and their maximum value (on-pixels counted in 4 × 4 blocks).
const SIDE: usize = 8;
const MAX_PIXEL: u8 = 16;

/// Options of the builder ([`build`]).
#[derive(Debug, Clone)]
pub struct DigitsOptions {
    /// scikit-learn's `digits.csv.gz` (64 pixel values 0–16 and the digit per row).
    pub source: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Side of the square PNGs (at least 8; the 8 × 8 grid is scaled up bilinearly).
    pub size: u32,
    /// Seed of the split shuffle.
    pub seed: u64,
}

/// One source image.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Digit {
    pub(crate) pixels: [u8; SIDE * SIDE],
    pub(crate) digit: u8,
}

/// Reads the gzipped CSV; a malformed row is an error naming its line.
pub(crate) fn read_digits(path: &Path) -> Result<Vec<Digit>> {
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "opening {} (scripts/fetch-assets.sh sklearn unpacks it, or pass --source FILE)",
            path.display()
        )
    })?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .with_context(|| format!("{}: not a gzipped text file", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let values = line
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<Result<Vec<f64>, _>>()
            .with_context(|| format!("{}: a value is not a number", at()))?;
        if values.len() != SIDE * SIDE + 1 {
            bail!(
                "{}: {} values, expected {} pixels and the digit",
                at(),
                values.len(),
                SIDE * SIDE
            );
        }
        let as_int = |v: f64, max: u8, what: &str| -> Result<u8> {
            if v.fract() != 0.0 || !(0.0..=f64::from(max)).contains(&v) {
                bail!("{}: {what} {v} is not an integer in 0..={max}", at());
            }
            Ok(v as u8)
        };
        let mut pixels = [0u8; SIDE * SIDE];
        for (p, &v) in pixels.iter_mut().zip(&values) {
            *p = as_int(v, MAX_PIXEL, "pixel")?;
        }
        let digit = as_int(values[SIDE * SIDE], 9, "digit")?;
        out.push(Digit { pixels, digit });
    }
    if out.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok(out)
}

impl Digit {
    /// Total ink (sum of the on-pixel counts).
    pub(crate) fn ink(&self) -> u32 {
        self.pixels.iter().map(|&p| u32::from(p)).sum()
    }

    /// Horizontal shear of the ink: how far x moves per row going up, from the ink-weighted
    /// covariance of column and row over the row variance. Positive = the top leans right.
    pub(crate) fn shear(&self) -> f64 {
        let (mut w, mut sx, mut sy) = (0.0, 0.0, 0.0);
        for (i, &p) in self.pixels.iter().enumerate() {
            let (x, y, p) = ((i % SIDE) as f64, (i / SIDE) as f64, f64::from(p));
            w += p;
            sx += p * x;
            sy += p * y;
        }
        if w == 0.0 {
            return 0.0;
        }
        let (mx, my) = (sx / w, sy / w);
        let (mut cov, mut var_y) = (0.0, 0.0);
        for (i, &p) in self.pixels.iter().enumerate() {
            let (x, y, p) = ((i % SIDE) as f64, (i / SIDE) as f64, f64::from(p));
            cov += p * (x - mx) * (y - my);
            var_y += p * (y - my) * (y - my);
        }
        // Rows count downwards, so a right lean has x falling as y grows.
        if var_y == 0.0 {
            0.0
        } else {
            -cov / var_y
        }
    }

    fn render(&self, size: u32) -> GrayImage {
        let grid = GrayImage::from_fn(SIDE as u32, SIDE as u32, |x, y| {
            let p = u32::from(self.pixels[y as usize * SIDE + x as usize]);
            Luma([(p * 255 / u32::from(MAX_PIXEL)) as u8])
        });
        imageops::resize(&grid, size, size, imageops::FilterType::Triangle)
    }
}

/// The class (0, 1, 2) of `value` by the thirds of `sorted`.
pub(crate) fn third(sorted: &[f64], value: f64) -> usize {
    let cut = |q: f64| sorted[(sorted.len() as f64 * q) as usize];
    if value < cut(1.0 / 3.0) {
        0
    } else if value < cut(2.0 / 3.0) {
        1
    } else {
        2
    }
}

fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Builds the dataset; returns the number of images per split.
///
/// # Errors
///
/// `--size` under 8, a missing or malformed source file, or a write error.
pub fn build(o: &DigitsOptions) -> Result<BTreeMap<&'static str, usize>> {
    if o.size < SIDE as u32 {
        bail!("--size must be at least {SIDE} (the source grid is {SIDE} x {SIDE})");
    }
    let digits = read_digits(&o.source)?;
    let shears = sorted(digits.iter().map(Digit::shear));
    let inks: Vec<Vec<f64>> = (0..10u8)
        .map(|d| {
            sorted(
                digits
                    .iter()
                    .filter(|x| x.digit == d)
                    .map(|x| f64::from(x.ink())),
            )
        })
        .collect();
    // 70 / 15 / 15 within each digit, so every split has every class in proportion.
    let mut split_of = vec![""; digits.len()];
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    for d in 0..10u8 {
        let mut members: Vec<usize> = (0..digits.len())
            .filter(|&i| digits[i].digit == d)
            .collect();
        members.shuffle(&mut rng);
        let n = members.len();
        let (train, valid) = ((n * 70).div_ceil(100), (n * 15).div_ceil(100));
        for (rank, i) in members.into_iter().enumerate() {
            split_of[i] = match rank {
                r if r < train => "train",
                r if r < train + valid => "valid",
                _ => "test",
            };
        }
    }
    let mut writer = SplitWriter::create(&o.out)?;
    for (i, d) in digits.iter().enumerate() {
        let word = DIGIT_WORDS[usize::from(d.digit)];
        let stroke = STROKES[third(&inks[usize::from(d.digit)], f64::from(d.ink()))];
        let slant = SLANTS[third(&shears, d.shear())];
        let file = format!("digit_{i:04}.png");
        d.render(o.size)
            .save(writer.image_path(&file))
            .with_context(|| format!("writing {file}"))?;
        let caption = format!("a handwritten {word} with {stroke} strokes, {slant}");
        let split = split_of[i];
        writer.add(
            split,
            &file,
            json!({"caption": caption, "digit": word, "stroke": stroke, "slant": slant, "source_row": i + 1}),
            json!({"digit": word, "stroke": stroke, "slant": slant}),
        )?;
    }
    writer.finish(json!({
        "source": {"digits": o.source},
        "size": o.size,
        "seed": o.seed,
        // `mirage eval` reads these: single-label tasks with `classes`; `prompts` are the
        // ensemble templates ({} = class).
        "tasks": {
            "digit": {
                "classes": DIGIT_WORDS,
                "prompts": ["a handwritten {}", "a handwritten digit {}", "the number {} written by hand", "a scanned handwritten {}"],
            },
            "stroke": {
                "classes": STROKES,
                "prompts": ["a handwritten digit with {} strokes", "a handwritten number written with {} strokes", "{} handwriting"],
            },
            "slant": {
                "classes": SLANTS,
                "prompts": ["a handwritten digit, {}", "a handwritten number, {}", "handwriting {}"],
            },
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("digits.csv.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        path
    }

    /// A one-pixel-wide line from (x0, 0) at the top to (x1, 7) at the bottom.
    fn line(x0: usize, x1: usize) -> Digit {
        let mut pixels = [0u8; 64];
        for y in 0..SIDE {
            let x = x0 as f64 + (x1 as f64 - x0 as f64) * y as f64 / 7.0;
            pixels[y * SIDE + x.round() as usize] = 16;
        }
        Digit { pixels, digit: 1 }
    }

    #[test]
    fn shear_follows_the_lean_of_the_stroke() {
        // "/" leans right: its top is right of its bottom.
        assert!(line(6, 1).shear() > 0.5, "{}", line(6, 1).shear());
        assert!(line(1, 6).shear() < -0.5, "{}", line(1, 6).shear());
        assert!(line(4, 4).shear().abs() < 1e-12);
        assert_eq!(
            Digit {
                pixels: [0; 64],
                digit: 0
            }
            .shear(),
            0.0
        );
    }

    #[test]
    fn thirds_split_a_sorted_sample() {
        let s: Vec<f64> = (0..9).map(f64::from).collect();
        let classes: Vec<usize> = (0..9).map(|v| third(&s, f64::from(v))).collect();
        assert_eq!(classes, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn malformed_rows_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let row = |last: &str| format!("{}{last}", "0,".repeat(64));
        let ok = gz(dir.path(), &format!("{}\n{}\n", row("3"), row("9")));
        let read = read_digits(&ok).unwrap();
        assert_eq!((read.len(), read[0].digit, read[1].digit), (2, 3, 9));
        for (text, needle) in [
            (format!("{}\n{}\n", row("3"), row("10")), ":2: digit 10"),
            (format!("{}\n", row("3,4")), ":1: 66 values"),
            (format!("17,{}\n", &row("3")[2..]), ":1: pixel 17"),
            (format!("0.5,{}\n", &row("3")[2..]), ":1: pixel 0.5"),
            (
                format!("x,{}\n", &row("3")[2..]),
                ":1: a value is not a number",
            ),
            (String::new(), "no rows"),
        ] {
            let path = gz(dir.path(), &text);
            let err = format!("{:#}", read_digits(&path).unwrap_err());
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
        std::fs::write(dir.path().join("plain.csv"), row("1")).unwrap();
        let err = format!(
            "{:#}",
            read_digits(&dir.path().join("plain.csv")).unwrap_err()
        );
        assert!(err.contains("not a gzipped text file"), "{err}");
        let err = format!(
            "{:#}",
            read_digits(&dir.path().join("absent.gz")).unwrap_err()
        );
        assert!(err.contains("fetch-assets.sh sklearn"), "{err}");
    }
}
