//! Image input: PNG, JPEG and DICOM decoding to RGB in [0, 1], then resize and normalisation as the
//! bundle prescribes. Every failure is a typed error naming the input; nothing here panics on data.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::OpenFileOptions;
use dicom_pixeldata::{ConvertOptions, PixelDecoder, VoiLutFunction, VoiLutOption, WindowLevel};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use image::imageops::FilterType;
use image::{ImageBuffer, Rgb, Rgb32FImage};

use crate::config::{ImagePreprocess, Interpolation, ResizeMode};

#[path = "dicom_raw.rs"]
mod raw;
use crate::{Error, Result};

/// Largest side, in pixels, of an image we decode. A forged header must not make us allocate
/// gigabytes; no medical modality comes near this.
pub const MAX_SIDE: u32 = 16_384;

/// Formats we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// PNG (8 or 16 bit, gray or colour).
    Png,
    /// Baseline or progressive JPEG.
    Jpeg,
    /// DICOM Part 10 file.
    Dicom,
}

impl ImageFormat {
    /// Recognises a format from its leading bytes (not from a file extension, which lies).
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.get(128..132) == Some(b"DICM") || bytes.starts_with(b"DICM") {
            Some(Self::Dicom)
        } else {
            None
        }
    }
}

/// Options for decoding.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeOptions {
    /// Frame of a multi-frame DICOM to use (0 = first).
    pub frame: u32,
}

/// A decoded image: RGB, values in [0, 1].
#[derive(Debug, Clone)]
pub struct DecodedImage {
    /// Pixels.
    pub rgb: Rgb32FImage,
    /// Format it came from.
    pub format: ImageFormat,
    /// Non-identifying DICOM header fields (modality, body part, descriptions, geometry) that
    /// indexes store as filterable payload. Patient identifiers are never copied.
    pub dicom_tags: BTreeMap<String, String>,
}

impl DecodedImage {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.rgb.width()
    }
    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.rgb.height()
    }
}

/// Reads and decodes an image file.
pub fn load_image(path: &Path, options: DecodeOptions) -> Result<DecodedImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, &path.display().to_string(), options)
}

/// Decodes PNG, JPEG or DICOM bytes; `source_name` names the input in errors.
pub fn decode_image(
    bytes: &[u8],
    source_name: &str,
    options: DecodeOptions,
) -> Result<DecodedImage> {
    let format = ImageFormat::sniff(bytes).ok_or_else(|| Error::UnsupportedImageFormat {
        source_name: source_name.to_owned(),
    })?;
    match format {
        ImageFormat::Png | ImageFormat::Jpeg => {
            let fmt = if format == ImageFormat::Png {
                image::ImageFormat::Png
            } else {
                image::ImageFormat::Jpeg
            };
            let mut reader = image::ImageReader::with_format(Cursor::new(bytes), fmt);
            let mut limits = image::Limits::default();
            limits.max_image_width = Some(MAX_SIDE);
            limits.max_image_height = Some(MAX_SIDE);
            reader.limits(limits);
            let img = reader.decode().map_err(|e| Error::ImageDecode {
                source_name: source_name.to_owned(),
                reason: e.to_string(),
            })?;
            Ok(DecodedImage {
                rgb: img.to_rgb32f(),
                format,
                dicom_tags: BTreeMap::new(),
            })
        }
        ImageFormat::Dicom => decode_dicom(bytes, source_name, options),
    }
}

const PAYLOAD_TAGS: &[(&str, dicom_object::Tag)] = &[
    ("Modality", tags::MODALITY),
    ("BodyPartExamined", tags::BODY_PART_EXAMINED),
    ("StudyDescription", tags::STUDY_DESCRIPTION),
    ("SeriesDescription", tags::SERIES_DESCRIPTION),
    ("ViewPosition", tags::VIEW_POSITION),
    (
        "PhotometricInterpretation",
        tags::PHOTOMETRIC_INTERPRETATION,
    ),
    ("Rows", tags::ROWS),
    ("Columns", tags::COLUMNS),
    ("NumberOfFrames", tags::NUMBER_OF_FRAMES),
    ("Manufacturer", tags::MANUFACTURER),
];

fn decode_dicom(bytes: &[u8], source_name: &str, options: DecodeOptions) -> Result<DecodedImage> {
    let err = |reason: String| Error::Dicom {
        source_name: source_name.to_owned(),
        reason,
    };
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(Cursor::new(bytes))
        .map_err(|e| err(format!("not a readable DICOM file: {e}")))?;
    let uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .trim()
        .to_owned();
    let Some(ts) = TransferSyntaxRegistry.get(&uid) else {
        return Err(Error::UnsupportedTransferSyntax {
            source_name: source_name.to_owned(),
            uid,
            name: "unknown".into(),
        });
    };
    let unsupported = || Error::UnsupportedTransferSyntax {
        source_name: source_name.to_owned(),
        uid: uid.clone(),
        name: ts.name().to_owned(),
    };
    if !ts.can_decode_all() {
        return Err(unsupported());
    }
    let mut dicom_tags = BTreeMap::new();
    for (name, tag) in PAYLOAD_TAGS {
        if let Some(v) = str_attr(&obj, *tag).filter(|v| !v.is_empty()) {
            dicom_tags.insert((*name).to_owned(), v);
        }
    }
    dicom_tags.insert("TransferSyntax".into(), ts.name().to_owned());
    if obj.element(tags::PIXEL_DATA).is_err() {
        return Err(err(
            "the file has no pixel data (not an image object)".into()
        ));
    }
    let (rows, cols) = (
        int_attr(&obj, tags::ROWS).unwrap_or(0),
        int_attr(&obj, tags::COLUMNS).unwrap_or(0),
    );
    if rows > i64::from(MAX_SIDE) || cols > i64::from(MAX_SIDE) {
        return Err(err(format!(
            "{cols}×{rows} pixels exceeds the limit of {MAX_SIDE} per side"
        )));
    }
    let bits_allocated = int_attr(&obj, tags::BITS_ALLOCATED).unwrap_or(0);
    let photometric = str_attr(&obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    // dicom-pixeldata converts 8/16-bit samples; 1-bit (segmentations), 32-bit (dose grids, some
    // RLE) and uncompressed YBR_FULL_422 go through our own sample reader instead.
    if bits_allocated == 1
        || bits_allocated == 32
        || (photometric == "YBR_FULL_422" && !ts.is_encapsulated_pixel_data())
    {
        let rgb = raw::decode(&obj, ts.uid(), options.frame).map_err(err)?;
        return Ok(DecodedImage {
            rgb,
            format: ImageFormat::Dicom,
            dicom_tags,
        });
    }
    let decoded = obj.decode_pixel_data().map_err(|e| {
        let text = e.to_string();
        if text.contains("TransferSyntax") || text.contains("transfer syntax") {
            unsupported()
        } else {
            err(format!("cannot decode {} pixel data: {text}", ts.name()))
        }
    })?;
    let frames = decoded.number_of_frames();
    if options.frame >= frames {
        return Err(err(format!(
            "frame {} requested but the file has {frames} frame(s)",
            options.frame
        )));
    }
    let (w, h) = (decoded.columns(), decoded.rows());
    let pi = decoded.photometric_interpretation().clone();
    let rgb: Rgb32FImage = if pi.is_monochrome() {
        // Modality LUT (rescale slope/intercept) from the library; the VOI window ourselves, so
        // the policy (first window, else the frame's full range) is explicit and tested.
        let opts = ConvertOptions::new().with_voi_lut(VoiLutOption::Identity);
        let values: Vec<f32> = decoded
            .to_vec_frame_with_options(options.frame, &opts)
            .map_err(|e| err(format!("cannot convert pixel data: {e}")))?;
        if values.len() != (w as usize) * (h as usize) {
            return Err(err(format!(
                "frame holds {} samples for {w}×{h} pixels",
                values.len()
            )));
        }
        let window = decoded
            .window()
            .ok()
            .flatten()
            .and_then(|ws| ws.first().cloned());
        let function = decoded
            .voi_lut_function()
            .ok()
            .flatten()
            .and_then(|f| f.first().copied());
        let mut gray = apply_voi(&values, window, function);
        if photometric == "MONOCHROME1" {
            for v in &mut gray {
                *v = 1.0 - *v;
            }
        }
        ImageBuffer::from_fn(w, h, |x, y| {
            let g = gray[(y * w + x) as usize];
            Rgb([g, g, g])
        })
    } else {
        decoded
            .to_dynamic_image(options.frame)
            .map_err(|e| err(format!("cannot convert {pi} pixel data to RGB: {e}")))?
            .to_rgb32f()
    };
    Ok(DecodedImage {
        rgb,
        format: ImageFormat::Dicom,
        dicom_tags,
    })
}

pub(crate) fn int_attr(
    obj: &dicom_object::DefaultDicomObject,
    tag: dicom_object::Tag,
) -> Option<i64> {
    obj.element(tag).ok().and_then(|e| e.to_int::<i64>().ok())
}

/// A string attribute without DICOM's space/NUL padding.
pub(crate) fn str_attr(
    obj: &dicom_object::DefaultDicomObject,
    tag: dicom_object::Tag,
) -> Option<String> {
    let elem = obj.element(tag).ok()?;
    let v = elem.to_str().ok()?;
    Some(v.trim().trim_end_matches('\0').to_owned())
}

/// Maps modality values to [0, 1]: the DICOM window (PS3.3 C.11.2.1.2) when the file has one,
/// otherwise the frame's own min..max range.
pub fn apply_voi(
    values: &[f32],
    window: Option<WindowLevel>,
    function: Option<VoiLutFunction>,
) -> Vec<f32> {
    match window {
        Some(w) if w.width > 0.0 => {
            let (c, width) = (w.center as f32, w.width as f32);
            values
                .iter()
                .map(|&x| {
                    let y = match function {
                        Some(VoiLutFunction::Sigmoid) => {
                            1.0 / (1.0 + (-4.0 * (x - c) / width).exp())
                        }
                        Some(VoiLutFunction::LinearExact) => (x - c) / width + 0.5,
                        _ if width > 1.0 => (x - (c - 0.5)) / (width - 1.0) + 0.5,
                        _ => {
                            if x > c - 0.5 {
                                1.0
                            } else {
                                0.0
                            }
                        }
                    };
                    y.clamp(0.0, 1.0)
                })
                .collect()
        }
        _ => {
            let (lo, hi) = values
                .iter()
                .filter(|v| v.is_finite())
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            let range = hi - lo;
            values
                .iter()
                .map(|&v| {
                    if range > 0.0 && v.is_finite() {
                        (v - lo) / range
                    } else {
                        0.0
                    }
                })
                .collect()
        }
    }
}

/// Resizes and normalises a decoded image into a CHW f32 buffer of `3 × size × size`.
pub fn preprocess(img: &DecodedImage, p: &ImagePreprocess) -> Result<Vec<f32>> {
    let size = u32::try_from(p.image_size)
        .map_err(|_| Error::InvalidConfig(format!("image_size {} too large", p.image_size)))?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(Error::InvalidInput("image has zero width or height".into()));
    }
    let filter = match p.interpolation {
        Interpolation::Nearest => FilterType::Nearest,
        Interpolation::Bilinear => FilterType::Triangle,
        Interpolation::Bicubic => FilterType::CatmullRom,
    };
    let resized = match p.resize {
        ResizeMode::Squash => image::imageops::resize(&img.rgb, size, size, filter),
        ResizeMode::ShorterSideCenterCrop => {
            let scale = size as f64 / f64::from(w.min(h));
            let nw = ((f64::from(w) * scale).round() as u32).max(size);
            let nh = ((f64::from(h) * scale).round() as u32).max(size);
            let big = image::imageops::resize(&img.rgb, nw, nh, filter);
            image::imageops::crop_imm(&big, (nw - size) / 2, (nh - size) / 2, size, size).to_image()
        }
    };
    let plane = (size as usize) * (size as usize);
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in resized.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (px[c] - p.mean[c]) / p.std[c];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_formats_by_content() {
        assert_eq!(
            ImageFormat::sniff(b"\x89PNG\r\n\x1a\nrest"),
            Some(ImageFormat::Png)
        );
        assert_eq!(
            ImageFormat::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        let mut dcm = vec![0u8; 128];
        dcm.extend_from_slice(b"DICM");
        assert_eq!(ImageFormat::sniff(&dcm), Some(ImageFormat::Dicom));
        assert_eq!(ImageFormat::sniff(b"GIF89a"), None);
    }

    #[test]
    fn window_follows_the_dicom_linear_formula() {
        let w = WindowLevel {
            center: 40.0,
            width: 400.0,
        };
        let out = apply_voi(&[-1000.0, 40.0, 1000.0, -160.0], Some(w), None);
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 0.50125).abs() < 1e-4, "{}", out[1]);
        assert_eq!(out[2], 1.0);
        assert!(out[3] < 0.01);
    }

    #[test]
    fn no_window_uses_the_full_range() {
        let out = apply_voi(&[10.0, 20.0, 30.0], None, None);
        assert_eq!(out, vec![0.0, 0.5, 1.0]);
        assert_eq!(apply_voi(&[5.0, 5.0], None, None), vec![0.0, 0.0]);
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let e = decode_image(b"not an image", "x.bin", DecodeOptions::default()).unwrap_err();
        assert!(matches!(e, Error::UnsupportedImageFormat { .. }), "{e}");
        let e = decode_image(
            b"\x89PNG\r\n\x1a\ntruncated",
            "x.png",
            DecodeOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::ImageDecode { .. }), "{e}");
        let mut dcm = vec![0u8; 128];
        dcm.extend_from_slice(b"DICMgarbage");
        let e = decode_image(&dcm, "x.dcm", DecodeOptions::default()).unwrap_err();
        assert!(matches!(e, Error::Dicom { .. }), "{e}");
    }

    #[test]
    fn preprocess_normalises_into_chw() {
        let img = DecodedImage {
            rgb: ImageBuffer::from_pixel(8, 4, Rgb([1.0, 0.5, 0.0])),
            format: ImageFormat::Png,
            dicom_tags: BTreeMap::new(),
        };
        let p = ImagePreprocess {
            image_size: 2,
            mean: [0.5, 0.5, 0.5],
            std: [0.5, 0.5, 0.5],
            channels: 3,
            interpolation: Interpolation::Bilinear,
            resize: ResizeMode::ShorterSideCenterCrop,
        };
        let out = preprocess(&img, &p).unwrap();
        assert_eq!(out.len(), 12);
        assert!(out[..4].iter().all(|v| (v - 1.0).abs() < 1e-6));
        assert!(out[4..8].iter().all(|v| v.abs() < 1e-6));
        assert!(out[8..].iter().all(|v| (v + 1.0).abs() < 1e-6));
    }
}
