//! A small DICOM sample reader for what dicom-pixeldata does not convert: 1-bit and 32-bit
//! samples (uncompressed or RLE Lossless) and uncompressed YBR_FULL_422. Output is RGB in [0, 1]
//! with the same modality/VOI policy as the main path.

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use image::{ImageBuffer, Rgb, Rgb32FImage};

use super::{apply_voi, int_attr, str_attr};

const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
const EXPLICIT_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

struct Geometry {
    rows: usize,
    cols: usize,
    samples: usize,
    bits: usize,
    signed: bool,
    frames: usize,
}

fn geometry(obj: &DefaultDicomObject) -> Result<Geometry, String> {
    let get =
        |tag, name: &str| int_attr(obj, tag).ok_or_else(|| format!("missing or invalid {name}"));
    let g = Geometry {
        rows: get(tags::ROWS, "Rows")? as usize,
        cols: get(tags::COLUMNS, "Columns")? as usize,
        samples: int_attr(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as usize,
        bits: get(tags::BITS_ALLOCATED, "BitsAllocated")? as usize,
        signed: int_attr(obj, tags::PIXEL_REPRESENTATION) == Some(1),
        frames: match obj.element(tags::NUMBER_OF_FRAMES) {
            Err(_) => 1,
            Ok(e) => e
                .to_int::<i64>()
                .map_err(|_| "NumberOfFrames is not an integer".to_owned())?
                as usize,
        },
    };
    if g.rows == 0 || g.cols == 0 || !matches!(g.samples, 1 | 3) {
        return Err(format!(
            "unsupported geometry {}×{}×{}",
            g.rows, g.cols, g.samples
        ));
    }
    Ok(g)
}

fn pixel_data(obj: &DefaultDicomObject) -> Result<&dicom_object::mem::InMemElement, String> {
    obj.element(tags::PIXEL_DATA)
        .map_err(|_| "no pixel data".to_owned())
}

/// PackBits-decodes one RLE segment.
fn unpack_bits(seg: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < seg.len() {
        let n = seg[i] as i8;
        i += 1;
        if n >= 0 {
            let len = n as usize + 1;
            let end = (i + len).min(seg.len());
            out.extend_from_slice(&seg[i..end]);
            i = end;
        } else if n != -128 {
            if let Some(&b) = seg.get(i) {
                out.extend(std::iter::repeat_n(b, (1 - isize::from(n)) as usize));
            }
            i += 1;
        }
    }
}

/// Sample values of one RLE frame, interleaved by pixel ([p0s0, p0s1, …]).
fn rle_frame(fragment: &[u8], g: &Geometry) -> Result<Vec<u32>, String> {
    let header = |i: usize| -> Option<usize> {
        fragment
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let bytes_per_sample = g.bits / 8;
    let segments = header(0).ok_or("RLE header truncated")?;
    if segments != g.samples * bytes_per_sample {
        return Err(format!(
            "RLE frame has {segments} segments, expected {}",
            g.samples * bytes_per_sample
        ));
    }
    let pixels = g.rows * g.cols;
    let mut values = vec![0u32; pixels * g.samples];
    for s in 0..segments {
        let start = header(s + 1).ok_or("RLE header truncated")?;
        let end = if s + 1 < segments {
            header(s + 2).ok_or("RLE header truncated")?
        } else {
            fragment.len()
        };
        let seg = fragment
            .get(start..end)
            .ok_or("RLE segment offset out of range")?;
        let mut plane = Vec::with_capacity(pixels);
        unpack_bits(seg, &mut plane);
        if plane.len() < pixels {
            return Err(format!(
                "RLE segment {s} holds {} bytes for {pixels} pixels",
                plane.len()
            ));
        }
        // Segments run sample by sample, most significant byte first.
        let (sample, byte) = (s / bytes_per_sample, s % bytes_per_sample);
        let shift = 8 * (bytes_per_sample - 1 - byte);
        for (p, &b) in plane.iter().take(pixels).enumerate() {
            values[p * g.samples + sample] |= u32::from(b) << shift;
        }
    }
    Ok(values)
}

/// The pixel data as a little-endian byte stream, whatever the file's byte order. The parser hands
/// OW data of a big-endian file over as native 16-bit words, so 32-bit samples are rebuilt from
/// word pairs (high word first) and OB bytes are reversed per sample.
fn little_endian_stream(
    obj: &DefaultDicomObject,
    big_endian: bool,
    bytes_per_sample: usize,
) -> Result<Vec<u8>, String> {
    use dicom_core::PrimitiveValue;
    let elem = pixel_data(obj)?;
    let value = elem
        .value()
        .primitive()
        .ok_or("pixel data is not a primitive value")?;
    Ok(match value {
        PrimitiveValue::U16(words) if big_endian && bytes_per_sample == 4 => words
            .chunks_exact(2)
            .flat_map(|w| ((u32::from(w[0]) << 16) | u32::from(w[1])).to_le_bytes())
            .collect(),
        PrimitiveValue::U16(words) => words.iter().flat_map(|w| w.to_le_bytes()).collect(),
        PrimitiveValue::U32(v) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        PrimitiveValue::I32(v) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        PrimitiveValue::U8(bytes) if big_endian && bytes_per_sample > 1 => bytes
            .chunks(bytes_per_sample)
            .flat_map(|c| c.iter().rev().copied().collect::<Vec<_>>())
            .collect(),
        other => other.to_bytes().into_owned(),
    })
}

/// Sample values of one uncompressed frame.
fn native_frame(
    obj: &DefaultDicomObject,
    ts_uid: &str,
    g: &Geometry,
    frame: usize,
) -> Result<Vec<u32>, String> {
    let bytes = (g.bits / 8).max(1);
    let data = little_endian_stream(obj, ts_uid == EXPLICIT_BIG_ENDIAN, bytes)?;
    let count = g.rows * g.cols * g.samples;
    if g.bits == 1 {
        let start = frame * count;
        return (start..start + count)
            .map(|i| {
                data.get(i / 8)
                    .map(|b| u32::from((b >> (i % 8)) & 1))
                    .ok_or_else(|| "pixel data truncated".to_owned())
            })
            .collect();
    }
    let frame_len = count * bytes;
    let chunk = data
        .get(frame * frame_len..(frame + 1) * frame_len)
        .ok_or_else(|| {
            format!(
                "pixel data holds {} bytes, frame {frame} needs {frame_len}",
                data.len()
            )
        })?;
    Ok(chunk
        .chunks_exact(bytes)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u32, |v, (i, &b)| v | (u32::from(b) << (8 * i)))
        })
        .collect())
}

pub(super) fn decode(
    obj: &DefaultDicomObject,
    ts_uid: &str,
    frame: u32,
) -> Result<Rgb32FImage, String> {
    let g = geometry(obj)?;
    let frame = frame as usize;
    if frame >= g.frames {
        return Err(format!(
            "frame {frame} requested but the file has {} frame(s)",
            g.frames
        ));
    }
    let photometric = str_attr(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    if photometric == "YBR_FULL_422" {
        return ybr_422(obj, &g, frame);
    }
    if !matches!(g.bits, 1 | 8 | 16 | 32) {
        return Err(format!("BitsAllocated {} is not supported", g.bits));
    }
    let values = if ts_uid == RLE_LOSSLESS {
        let elem = pixel_data(obj)?;
        let fragments = elem
            .value()
            .fragments()
            .ok_or("RLE pixel data is not encapsulated")?;
        let fragment = fragments
            .get(frame)
            .ok_or_else(|| format!("no RLE fragment for frame {frame}"))?;
        rle_frame(fragment, &g)?
    } else {
        native_frame(obj, ts_uid, &g, frame)?
    };
    let (w, h) = (g.cols as u32, g.rows as u32);
    if g.samples == 3 {
        let max = ((1u64 << g.bits) - 1) as f32;
        return Ok(ImageBuffer::from_fn(w, h, |x, y| {
            let i = ((y * w + x) as usize) * 3;
            Rgb([
                values[i] as f32 / max,
                values[i + 1] as f32 / max,
                values[i + 2] as f32 / max,
            ])
        }));
    }
    let slope = obj
        .element(tags::RESCALE_SLOPE)
        .ok()
        .and_then(|e| e.to_float64().ok())
        .unwrap_or(1.0);
    let intercept = obj
        .element(tags::RESCALE_INTERCEPT)
        .ok()
        .and_then(|e| e.to_float64().ok())
        .unwrap_or(0.0);
    let modality: Vec<f32> = values
        .iter()
        .map(|&v| {
            let raw = if g.signed && g.bits == 32 {
                f64::from(v as i32)
            } else {
                f64::from(v)
            };
            (raw * slope + intercept) as f32
        })
        .collect();
    let window = match (
        obj.element(tags::WINDOW_CENTER)
            .ok()
            .and_then(|e| e.to_float64().ok()),
        obj.element(tags::WINDOW_WIDTH)
            .ok()
            .and_then(|e| e.to_float64().ok()),
    ) {
        (Some(center), Some(width)) => Some(dicom_pixeldata::WindowLevel { center, width }),
        _ => None,
    };
    let mut gray = apply_voi(&modality, window, None);
    if photometric == "MONOCHROME1" {
        gray.iter_mut().for_each(|v| *v = 1.0 - *v);
    }
    Ok(ImageBuffer::from_fn(w, h, |x, y| {
        let v = gray[(y * w + x) as usize];
        Rgb([v, v, v])
    }))
}

/// Uncompressed YBR_FULL_422: each pair of pixels is stored as Y0 Y1 Cb Cr (PS3.3 C.7.6.3.1.2).
fn ybr_422(obj: &DefaultDicomObject, g: &Geometry, frame: usize) -> Result<Rgb32FImage, String> {
    if g.bits != 8 || g.samples != 3 {
        return Err("YBR_FULL_422 is supported with 8-bit samples only".into());
    }
    let data = little_endian_stream(obj, false, 1)?;
    let frame_len = g.rows * g.cols * 2;
    let d = data
        .get(frame * frame_len..(frame + 1) * frame_len)
        .ok_or_else(|| {
            format!(
                "pixel data holds {} bytes, expected {frame_len} per frame",
                data.len()
            )
        })?;
    let (w, h) = (g.cols as u32, g.rows as u32);
    Ok(ImageBuffer::from_fn(w, h, |x, y| {
        let p = (y * w + x) as usize;
        let base = (p / 2) * 4;
        let (yy, cb, cr) = (
            f32::from(d[base + p % 2]),
            f32::from(d[base + 2]) - 128.0,
            f32::from(d[base + 3]) - 128.0,
        );
        let c = |v: f32| (v / 255.0).clamp(0.0, 1.0);
        Rgb([
            c(yy + 1.402 * cr),
            c(yy - 0.344_136 * cb - 0.714_136 * cr),
            c(yy + 1.772 * cb),
        ])
    }))
}
