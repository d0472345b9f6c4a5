//! The MRI-atlas dataset behind `mirage data mri-atlas`: a PMC-OA-format image–caption dataset from real anatomy with exact
//! labels — the Colin-27 T1 MRI and the AAL atlas (116 named regions, same voxel grid) shipped in
//! Debian's `mricron-data` (docs/DATA.md (c)). Every slice of the three planes that shows enough brain
//! becomes a PNG plus augmented copies (intensity, crop/scale, small rotation), captioned in plain
//! words with the plane, the hemisphere and the dominant atlas regions; label files give the plane
//! and the presence of chosen structures for zero-shot tasks. Splits go by slice position in
//! blocks with gaps of `gap` slices, so no valid or test slice lies within `gap` of a train slice
//! of the same plane. The output is a pure function of the inputs and the seed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{imageops, GrayImage, Luma};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::splits::SplitWriter;

/// A NIfTI-1 volume of unsigned bytes (what mricron-data ships), x fastest.
pub(crate) struct Volume {
    pub(crate) dims: [usize; 3],
    pub(crate) data: Vec<u8>,
    /// World x of voxel i is `i + x_offset` (scale 1): negative x is the left hemisphere.
    pub(crate) x_offset: f32,
}

/// Reads a gzipped NIfTI-1 file with datatype uint8 and 1 mm voxels.
pub(crate) fn read_nifti(path: &Path) -> Result<Volume> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: not a gzip file", path.display()))?;
    if bytes.len() < 352 || i32::from_le_bytes(bytes[0..4].try_into()?) != 348 {
        bail!("{}: not a little-endian NIfTI-1 file", path.display());
    }
    let i16_at = |o: usize| i16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let f32_at = |o: usize| f32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let (rank, datatype) = (i16_at(40), i16_at(70));
    if rank != 3 || datatype != 2 {
        bail!(
            "{}: expected a 3-D uint8 volume, found rank {rank}, NIfTI datatype {datatype}",
            path.display()
        );
    }
    let dims = [i16_at(42), i16_at(44), i16_at(46)].map(|d| d.max(0) as usize);
    let offset = f32_at(108) as usize;
    let n = dims.iter().product::<usize>();
    if bytes.len() < offset + n {
        bail!(
            "{}: truncated ({} of {} voxel bytes)",
            path.display(),
            bytes.len().saturating_sub(offset),
            n
        );
    }
    // sform row x = (sx, 0, 0, tx): the atlas and the T1 share it exactly.
    let x_offset = f32_at(280 + 12);
    Ok(Volume {
        dims,
        data: bytes[offset..offset + n].to_vec(),
        x_offset,
    })
}

impl Volume {
    fn at(&self, i: usize, j: usize, k: usize) -> u8 {
        self.data[i + self.dims[0] * (j + self.dims[1] * k)]
    }
}

/// A plane and its slicing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plane {
    Axial,
    Coronal,
    Sagittal,
}

impl Plane {
    pub(crate) const ALL: [Plane; 3] = [Plane::Axial, Plane::Coronal, Plane::Sagittal];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Plane::Axial => "axial",
            Plane::Coronal => "coronal",
            Plane::Sagittal => "sagittal",
        }
    }

    /// Slices along this plane's normal, and the (rows, cols) of each slice.
    fn shape(self, d: [usize; 3]) -> (usize, usize, usize) {
        match self {
            Plane::Axial => (d[2], d[1], d[0]),
            Plane::Coronal => (d[1], d[2], d[0]),
            Plane::Sagittal => (d[0], d[2], d[1]),
        }
    }

    /// Voxel (i, j, k) at display (row, col) of slice `s`: superior and anterior up, the
    /// subject's left on the image left (neurological convention).
    fn voxel(self, d: [usize; 3], s: usize, row: usize, col: usize) -> (usize, usize, usize) {
        match self {
            Plane::Axial => (col, d[1] - 1 - row, s),
            Plane::Coronal => (col, s, d[2] - 1 - row),
            Plane::Sagittal => (s, d[1] - 1 - col, d[2] - 1 - row),
        }
    }
}

/// AAL name (`Frontal_Sup_Orb_L`) → (plain words, hemisphere).
pub(crate) fn plain_region(name: &str) -> (String, Option<&'static str>) {
    let (base, side) = match name.rsplit_once('_') {
        Some((b, "L")) => (b, Some("left")),
        Some((b, "R")) => (b, Some("right")),
        _ => (name, None),
    };
    let whole = match base {
        "Supp_Motor_Area" => Some("supplementary motor area"),
        "Cingulum_Ant" => Some("anterior cingulate gyrus"),
        "Cingulum_Mid" => Some("middle cingulate gyrus"),
        "Cingulum_Post" => Some("posterior cingulate gyrus"),
        "Rectus" => Some("gyrus rectus"),
        "Paracentral_Lobule" => Some("paracentral lobule"),
        "Heschl" => Some("Heschl gyrus"),
        "Temporal_Pole_Sup" => Some("superior temporal pole"),
        "Temporal_Pole_Mid" => Some("middle temporal pole"),
        _ => None,
    };
    if let Some(w) = whole {
        return (w.to_owned(), side);
    }
    let mut words: Vec<String> = Vec::new();
    let mut noun = None;
    for part in base.split('_') {
        let w = match part {
            "Sup" => "superior",
            "Mid" => "middle",
            "Inf" => "inferior",
            "Med" => "medial",
            "Orb" => "orbital",
            "Oper" => "opercular",
            "Tri" => "triangular",
            "Rol" => "rolandic operculum",
            "Frontal" | "Occipital" | "Parietal" | "Temporal" => {
                noun = Some(format!("{} gyrus", part.to_lowercase()));
                continue;
            }
            "Cerebelum" => {
                noun = Some("cerebellum".into());
                continue;
            }
            "Vermis" => {
                noun = Some("vermis".into());
                continue;
            }
            "ParaHippocampal" => "parahippocampal gyrus",
            "SupraMarginal" => "supramarginal gyrus",
            "Lingual" => "lingual gyrus",
            "Fusiform" => "fusiform gyrus",
            "Angular" => "angular gyrus",
            "Calcarine" => "calcarine cortex",
            "Precentral" => "precentral gyrus",
            "Postcentral" => "postcentral gyrus",
            "Crus1" => "crus I",
            "Crus2" => "crus II",
            other => {
                words.push(other.to_lowercase());
                continue;
            }
        };
        words.push(w.to_owned());
    }
    let mut out = words.join(" ");
    if let Some(n) = noun {
        out = if out.is_empty() {
            n
        } else if n == "cerebellum" || n == "vermis" {
            format!("{n} {out}")
        } else {
            format!("{out} {n}")
        };
    }
    (out, side)
}

/// An AAL name without its hemisphere suffix (`Hippocampus_L` → `Hippocampus`).
fn aal_base(name: &str) -> &str {
    match name.rsplit_once('_') {
        Some((base, "L" | "R")) => base,
        _ => name,
    }
}

/// Structures whose presence is a zero-shot label: (label, AAL base names).
pub(crate) const STRUCTURES: [(&str, &[&str]); 7] = [
    ("hippocampus", &["Hippocampus"]),
    ("thalamus", &["Thalamus"]),
    (
        "cerebellum",
        &[
            "Cerebelum_Crus1",
            "Cerebelum_Crus2",
            "Cerebelum_3",
            "Cerebelum_4_5",
            "Cerebelum_6",
            "Cerebelum_7b",
            "Cerebelum_8",
            "Cerebelum_9",
            "Cerebelum_10",
        ],
    ),
    ("caudate nucleus", &["Caudate"]),
    ("putamen", &["Putamen"]),
    ("insula", &["Insula"]),
    ("amygdala", &["Amygdala"]),
];

/// Options of the builder ([`build`]).
#[derive(Debug, Clone)]
pub struct AtlasOptions {
    /// mricron-data's templates folder (`ch2.nii.gz`, `aal.nii.gz`, `aal.nii.txt`).
    pub templates: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Side of the square PNGs (at least 16).
    pub size: u32,
    /// Augmented copies per slice besides the plain one.
    pub augment: usize,
    /// Slices between held-out and training slices of a plane (1 mm each; at least 1).
    pub gap: usize,
    /// Use every `step`-th slice (at least 1).
    pub step: usize,
    /// Seed of the augmentations.
    pub seed: u64,
}

/// What a region contributes to a slice's caption.
const MIN_REGION_VOXELS: usize = 60;
const MIN_STRUCTURE_VOXELS: usize = 30;
const MIN_BRAIN_SHARE: f64 = 0.04;

/// Split of a slice position under blocks of [train 12][gap][valid 2][gap][test 2][gap].
pub(crate) fn split_of(position: usize, gap: usize) -> Option<&'static str> {
    let block = 12 + 2 + 2 + 3 * gap;
    match position % block {
        r if r < 12 => Some("train"),
        r if r >= 12 + gap && r < 14 + gap => Some("valid"),
        r if r >= 14 + 2 * gap && r < 16 + 2 * gap => Some("test"),
        _ => None,
    }
}

struct SliceInfo {
    regions: Vec<(u8, usize)>,
    brain_share: f64,
}

fn caption(plane: Plane, regions: &[(String, Option<&'static str>)]) -> String {
    // Group the dominant regions by hemisphere, keeping their order of size.
    let mut groups: Vec<(Option<&str>, Vec<&str>)> = Vec::new();
    for (name, side) in regions {
        match groups.iter_mut().find(|(s, _)| s == side) {
            Some((_, names)) => names.push(name),
            None => groups.push((*side, vec![name.as_str()])),
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(side, names)| {
            let list = match names.as_slice() {
                [one] => (*one).to_owned(),
                [init @ .., last] => format!("{} and {last}", init.join(", ")),
                [] => String::new(),
            };
            match side {
                Some(s) => format!("the {s} {list}"),
                None => format!("the {list}"),
            }
        })
        .collect();
    format!("{} MRI slice through {}", plane.name(), parts.join(" and "))
}

fn render(t1: &Volume, plane: Plane, s: usize, scale: f32) -> GrayImage {
    let (_, rows, cols) = plane.shape(t1.dims);
    GrayImage::from_fn(cols as u32, rows as u32, |c, r| {
        let (i, j, k) = plane.voxel(t1.dims, s, r as usize, c as usize);
        Luma([(f32::from(t1.at(i, j, k)) * scale).min(255.0) as u8])
    })
}

fn square(img: &GrayImage, size: u32) -> GrayImage {
    let side = img.width().max(img.height());
    let mut canvas = GrayImage::new(side, side);
    imageops::overlay(
        &mut canvas,
        img,
        i64::from((side - img.width()) / 2),
        i64::from((side - img.height()) / 2),
    );
    imageops::resize(&canvas, size, size, imageops::FilterType::Triangle)
}

/// Intensity (gamma, contrast), crop/scale (85–100 % window) and rotation (±8°).
fn augment(img: &GrayImage, size: u32, rng: &mut ChaCha8Rng) -> GrayImage {
    let gamma = rng.random_range(0.75f32..1.35);
    let contrast = rng.random_range(0.85f32..1.15);
    let crop = rng.random_range(0.85f32..=1.0);
    let (w, h) = (img.width() as f32, img.height() as f32);
    let (cw, ch) = ((w * crop) as u32, (h * crop) as u32);
    let x0 = rng.random_range(0..=(img.width() - cw));
    let y0 = rng.random_range(0..=(img.height() - ch));
    let cropped = imageops::crop_imm(img, x0, y0, cw, ch).to_image();
    let resized = imageops::resize(&cropped, size, size, imageops::FilterType::Triangle);
    let (sin, cos) = rng.random_range(-8.0f32..8.0).to_radians().sin_cos();
    let c = (size as f32 - 1.0) / 2.0;
    GrayImage::from_fn(size, size, |x, y| {
        let (dx, dy) = (x as f32 - c, y as f32 - c);
        let (sx, sy) = (
            (cos * dx + sin * dy + c).round(),
            (-sin * dx + cos * dy + c).round(),
        );
        if sx < 0.0 || sy < 0.0 || sx >= size as f32 || sy >= size as f32 {
            return Luma([0]);
        }
        let v = f32::from(resized.get_pixel(sx as u32, sy as u32)[0]) / 255.0;
        Luma([(((v.powf(gamma) - 0.5) * contrast + 0.5).clamp(0.0, 1.0) * 255.0) as u8])
    })
}

/// Builds the dataset; returns the number of images per split.
///
/// # Errors
///
/// Options out of range, a missing or malformed template file, or a write error.
pub fn build(o: &AtlasOptions) -> Result<BTreeMap<&'static str, usize>> {
    if o.size < 16 || o.gap == 0 || o.step == 0 {
        bail!("--size must be at least 16, --gap and --step at least 1");
    }
    let t1_path = o.templates.join("ch2.nii.gz");
    let aal_path = o.templates.join("aal.nii.gz");
    let names_path = o.templates.join("aal.nii.txt");
    for p in [&t1_path, &aal_path, &names_path] {
        if !p.exists() {
            bail!(
                "{} not found: install Debian's mricron-data (apt-get install mricron-data) or pass \
                 --templates DIR",
                p.display()
            );
        }
    }
    let t1 = read_nifti(&t1_path)?;
    let atlas = read_nifti(&aal_path)?;
    if t1.dims != atlas.dims {
        bail!("T1 {:?} and atlas {:?} grids differ", t1.dims, atlas.dims);
    }
    let mut names: BTreeMap<u8, String> = BTreeMap::new();
    for line in std::fs::read_to_string(&names_path)?.lines() {
        let mut f = line.split_whitespace();
        if let (Some(idx), Some(name)) = (f.next(), f.next()) {
            names.insert(
                idx.parse()
                    .with_context(|| format!("{}: {line:?}", names_path.display()))?,
                name.to_owned(),
            );
        }
    }
    // Intensity scale: the 99.5th percentile of brain voxels maps to white.
    let mut brain: Vec<u8> = t1
        .data
        .iter()
        .zip(&atlas.data)
        .filter(|(_, &a)| a > 0)
        .map(|(&v, _)| v)
        .collect();
    brain.sort_unstable();
    if brain.is_empty() {
        bail!("{}: the atlas labels no voxel", aal_path.display());
    }
    let p995 = f32::from(brain[(brain.len() as f64 * 0.995) as usize].max(1));
    let scale = 255.0 / p995;

    let mut writer = SplitWriter::create(&o.out)?;
    for plane in Plane::ALL {
        let (slices, rows, cols) = plane.shape(t1.dims);
        for s in (0..slices).step_by(o.step) {
            let mut voxels: BTreeMap<u8, usize> = BTreeMap::new();
            for r in 0..rows {
                for c in 0..cols {
                    let (i, j, k) = plane.voxel(t1.dims, s, r, c);
                    let a = atlas.at(i, j, k);
                    if a > 0 {
                        *voxels.entry(a).or_default() += 1;
                    }
                }
            }
            let info = SliceInfo {
                brain_share: voxels.values().sum::<usize>() as f64 / (rows * cols) as f64,
                regions: {
                    let mut v: Vec<(u8, usize)> = voxels.into_iter().collect();
                    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                    v
                },
            };
            let position = s / o.step;
            let Some(split) = split_of(position, o.gap) else {
                continue;
            };
            if info.brain_share < MIN_BRAIN_SHARE {
                continue;
            }
            // The largest regions, then deep structures of the zero-shot tasks (small, so rarely
            // the largest) that the slice clearly shows: what a radiologist would name.
            let is_structure = |idx: &u8| {
                names.get(idx).is_some_and(|n| {
                    STRUCTURES
                        .iter()
                        .any(|(_, bases)| bases.contains(&aal_base(n)))
                })
            };
            let mut chosen: Vec<u8> = info
                .regions
                .iter()
                .filter(|(_, n)| *n >= MIN_REGION_VOXELS)
                .take(2)
                .map(|(idx, _)| *idx)
                .collect();
            for (idx, n) in &info.regions {
                if chosen.len() >= 4 {
                    break;
                }
                if *n >= MIN_REGION_VOXELS && is_structure(idx) && !chosen.contains(idx) {
                    chosen.push(*idx);
                }
            }
            let dominant: Vec<(String, Option<&'static str>)> = chosen
                .iter()
                .filter_map(|idx| names.get(idx).map(|n| plain_region(n)))
                .collect();
            if dominant.is_empty() {
                continue;
            }
            let text = caption(plane, &dominant);
            let present: BTreeMap<&str, bool> = STRUCTURES
                .iter()
                .map(|(label, bases)| {
                    let n: usize = info
                        .regions
                        .iter()
                        .filter(|(idx, _)| {
                            names
                                .get(idx)
                                .is_some_and(|name| bases.contains(&aal_base(name)))
                        })
                        .map(|(_, n)| n)
                        .sum();
                    (*label, n >= MIN_STRUCTURE_VOXELS)
                })
                .collect();
            let hemisphere = match plane {
                Plane::Sagittal => {
                    let x = s as f32 + t1.x_offset;
                    if x < -2.0 {
                        "left"
                    } else if x > 2.0 {
                        "right"
                    } else {
                        "midline"
                    }
                }
                _ => "both",
            };
            let raw = render(&t1, plane, s, scale);
            let base = square(&raw, o.size);
            for copy in 0..=o.augment {
                let img = if copy == 0 {
                    base.clone()
                } else {
                    let mut rng = ChaCha8Rng::seed_from_u64(
                        o.seed ^ ((plane as u64) << 48) ^ ((s as u64) << 16) ^ copy as u64,
                    );
                    augment(&square(&raw, o.size * 5 / 4), o.size, &mut rng)
                };
                let file = format!("{}_{s:03}_{copy}.png", plane.name());
                img.save(writer.image_path(&file))
                    .with_context(|| format!("writing {file}"))?;
                let row = json!({
                    "caption": text,
                    "plane": plane.name(),
                    "slice": s,
                    "augmented": copy > 0,
                    "hemisphere": hemisphere,
                    "regions": dominant.iter().map(|(n, side)| match side {
                        Some(s) => format!("{s} {n}"),
                        None => n.clone(),
                    }).collect::<Vec<_>>(),
                });
                let labels =
                    json!({"plane": plane.name(), "hemisphere": hemisphere, "structures": present});
                writer.add(split, &file, row, labels)?;
            }
        }
    }
    let meta = json!({
        "source": {"t1": t1_path, "atlas": aal_path, "names": names_path},
        "size": o.size,
        "augmented_copies_per_slice": o.augment,
        "slice_step": o.step,
        "gap_slices": o.gap,
        "seed": o.seed,
        // `mirage eval` reads these: single-label tasks have `classes`, presence tasks `labels`;
        // `prompts` are the ensemble templates ({} = class or label).
        "tasks": {
            "plane": {
                "classes": ["axial", "coronal", "sagittal"],
                "prompts": ["{} MRI slice of the brain", "{} MRI slice", "{} slice through the brain", "{} view of a brain MRI"],
            },
            "structures": {
                "labels": STRUCTURES.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
                "prompts": ["MRI slice through the {}", "MRI slice through the left {}", "MRI slice through the right {}", "brain MRI showing the {}"],
            },
        },
    });
    writer.finish(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_read_as_words() {
        assert_eq!(
            plain_region("Hippocampus_L"),
            ("hippocampus".into(), Some("left"))
        );
        assert_eq!(
            plain_region("Frontal_Sup_Orb_R").0,
            "superior orbital frontal gyrus"
        );
        assert_eq!(plain_region("Cingulum_Ant_L").0, "anterior cingulate gyrus");
        assert_eq!(plain_region("Cerebelum_Crus1_R").0, "cerebellum crus I");
        assert_eq!(plain_region("Vermis_4_5"), ("vermis 4 5".into(), None));
        assert_eq!(
            plain_region("Temporal_Pole_Sup_L").0,
            "superior temporal pole"
        );
    }

    #[test]
    fn splits_keep_a_gap_between_train_and_held_out_slices() {
        let gap = 3;
        let splits: Vec<Option<&str>> = (0..200).map(|p| split_of(p, gap)).collect();
        for (p, s) in splits.iter().enumerate() {
            if matches!(s, Some("valid" | "test")) {
                let lo = p.saturating_sub(gap);
                let hi = (p + gap).min(199);
                assert!(
                    (lo..=hi).all(|q| splits[q] != Some("train")),
                    "position {p} ({s:?}) neighbours a train slice"
                );
            }
        }
        assert!(splits.iter().filter(|s| **s == Some("test")).count() >= 10);
    }

    #[test]
    fn captions_group_by_hemisphere() {
        let c = caption(
            Plane::Axial,
            &[
                ("hippocampus".into(), Some("left")),
                ("thalamus".into(), Some("left")),
                ("insula".into(), Some("right")),
            ],
        );
        assert_eq!(
            c,
            "axial MRI slice through the left hippocampus and thalamus and the right insula"
        );
    }
}
