//! DICOM decoding over the real test files shipped in the pydicom wheel.

use mirage_model::image_input::{decode_image, DecodeOptions, ImageFormat};
use mirage_model::Error;

/// Transfer syntaxes whose pixel data this build cannot decode (JPEG-LS needs CharLS, a C++ lib).
const UNSUPPORTED: &[&str] = &["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];

/// pydicom test files that do not decode, with the reason the test expects to see. Every other
/// `.dcm` file in the suite must decode.
const EXPECTED_FAILURES: &[(&str, &str)] = &[
    // no image in them
    ("empty_charset_LEI.dcm", "no pixel data"),
    ("priv_SQ.dcm", "no pixel data"),
    ("reportsi.dcm", "no pixel data"),
    ("reportsi_with_empty_number_tags.dcm", "no pixel data"),
    ("rtplan.dcm", "no pixel data"),
    ("test-SR.dcm", "no pixel data"),
    ("waveform_ecg.dcm", "no pixel data"),
    ("UN_sequence.dcm", "not a readable DICOM file"),
    // not DICOM Part 10 files (no preamble and no file meta group)
    ("no_meta.dcm", "unsupported image format"),
    ("rtstruct.dcm", "unsupported image format"),
    ("ExplVR_BigEndNoMeta.dcm", "unsupported image format"),
    ("ExplVR_LitEndNoMeta.dcm", "unsupported image format"),
    // 12-bit JPEG Extended: the transfer syntax is supported, 12-bit precision is not (jpeg-decoder)
    ("JPEG-lossy.dcm", "cannot decode JPEG Extended"),
    ("JPGExtended.dcm", "cannot decode JPEG Extended"),
    // broken on purpose in pydicom's suite
    (
        "JPEG2000-embedded-sequence-delimiter.dcm",
        "cannot decode JPEG 2000",
    ),
    ("meta_missing_tsyntax.dcm", "not a readable DICOM file"),
    ("no_meta_group_length.dcm", "not a readable DICOM file"),
    ("rtplan_truncated.dcm", "not a readable DICOM file"),
    ("MR_truncated.dcm", "not a readable DICOM file"),
    ("badVR.dcm", "NumberOfFrames"),
    ("nested_priv_SQ.dcm", "Columns"),
    // dicom-object 0.10 cannot parse this file's data set (pydicom can); see the closing note
    ("SC_rgb_jpeg.dcm", "not a readable DICOM file"),
];

fn pydicom_dir() -> Option<std::path::PathBuf> {
    crate::common::require(
        crate::common::assets_dir().join("pydicom"),
        "scripts/fetch-assets.sh",
    )
}

#[test]
fn every_pydicom_test_image_decodes_or_names_its_transfer_syntax() {
    let Some(dir) = pydicom_dir() else {
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    assert!(
        files.len() > 50,
        "expected the pydicom test files in {}",
        dir.display()
    );
    let (mut decoded, mut unsupported, mut expected) = (0, 0, 0);
    let mut wrong = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(path).unwrap();
        let result = decode_image(&bytes, &name, DecodeOptions::default());
        let expected_failure = EXPECTED_FAILURES.iter().find(|(n, _)| *n == name);
        match (result, expected_failure) {
            (Ok(img), None) => {
                decoded += 1;
                assert!(img.width() > 0 && img.height() > 0);
                assert!(
                    img.rgb
                        .pixels()
                        .all(|p| p.0.iter().all(|v| (0.0..=1.0).contains(v))),
                    "{name}: values outside [0,1]"
                );
                assert_eq!(img.format, ImageFormat::Dicom);
                let min = img.rgb.pixels().flat_map(|p| p.0).fold(1.0f32, f32::min);
                let max = img.rgb.pixels().flat_map(|p| p.0).fold(0.0f32, f32::max);
                assert!(max > min, "{name}: decoded to a flat image");
            }
            (Err(Error::UnsupportedTransferSyntax { uid, .. }), None)
                if UNSUPPORTED.contains(&uid.as_str()) =>
            {
                unsupported += 1;
            }
            (Err(e), Some((_, reason))) if e.to_string().contains(reason) => expected += 1,
            (Ok(_), Some(_)) => wrong.push(format!(
                "{name}: decoded, but the test expects a failure (update the table)"
            )),
            (Err(e), _) => wrong.push(format!("{name}: {e}")),
        }
    }
    println!("decoded {decoded}, unsupported transfer syntax {unsupported}, expected failures {expected}");
    assert!(
        wrong.is_empty(),
        "unexpected outcomes:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn multi_frame_files_decode_the_requested_frame() {
    let Some(dir) = pydicom_dir() else {
        return;
    };
    for name in ["SC_rgb_rle_2frame.dcm", "rtdose.dcm"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let first = decode_image(&bytes, name, DecodeOptions { frame: 0 }).unwrap();
        let second = decode_image(&bytes, name, DecodeOptions { frame: 1 }).unwrap();
        assert_eq!(first.rgb.dimensions(), second.rgb.dimensions());
        assert_ne!(
            first.rgb.as_raw(),
            second.rgb.as_raw(),
            "{name}: frames 0 and 1 are identical"
        );
        let e = decode_image(&bytes, name, DecodeOptions { frame: 99 }).unwrap_err();
        assert!(e.to_string().contains("frame 99 requested"), "{e}");
    }
}

#[test]
fn big_endian_and_little_endian_copies_decode_alike() {
    let Some(dir) = pydicom_dir() else {
        return;
    };
    for (a, b) in [
        ("MR_small.dcm", "MR_small_bigendian.dcm"),
        ("rtdose.dcm", "rtdose_expb.dcm"),
        ("rtdose.dcm", "rtdose_rle.dcm"),
        ("SC_rgb_rle_32bit.dcm", "SC_rgb_rle.dcm"),
        ("liver_1frame.dcm", "liver_expb_1frame.dcm"),
    ] {
        let load = |n: &str| {
            decode_image(
                &std::fs::read(dir.join(n)).unwrap(),
                n,
                DecodeOptions::default(),
            )
            .unwrap()
        };
        let (x, y) = (load(a), load(b));
        let diff = x
            .rgb
            .as_raw()
            .iter()
            .zip(y.rgb.as_raw())
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 0.01, "{a} vs {b}: max difference {diff}");
    }
}
