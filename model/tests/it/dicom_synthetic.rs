//! Windowing, rescale and MONOCHROME1 on DICOM files written here with known values.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use mirage_model::image_input::{load_image, DecodeOptions};

fn write(path: &std::path::Path, photometric: &str, pixels: &[u16], window: Option<(&str, &str)>) {
    write_with_rows(path, photometric, pixels, window, 1);
}

fn write_with_rows(
    path: &std::path::Path,
    photometric: &str,
    pixels: &[u16],
    window: Option<(&str, &str)>,
    rows: u16,
) {
    let mut obj = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.1"),
        ),
        DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.4"),
        ),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("CR")),
        DataElement::new(
            tags::BODY_PART_EXAMINED,
            VR::CS,
            PrimitiveValue::from("CHEST"),
        ),
        DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe^Jane")),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from(photometric),
        ),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows)),
        DataElement::new(
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(pixels.len() as u16),
        ),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(16u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16)),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ),
        DataElement::new(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from("2")),
        DataElement::new(
            tags::RESCALE_INTERCEPT,
            VR::DS,
            PrimitiveValue::from("-100"),
        ),
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(pixels.iter().copied().collect()),
        ),
    ]);
    if let Some((c, w)) = window {
        obj.put(DataElement::new(
            tags::WINDOW_CENTER,
            VR::DS,
            PrimitiveValue::from(c),
        ));
        obj.put(DataElement::new(
            tags::WINDOW_WIDTH,
            VR::DS,
            PrimitiveValue::from(w),
        ));
    }
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax("1.2.840.10008.1.2.1")
                .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.1")
                .media_storage_sop_instance_uid("1.2.3.4"),
        )
        .unwrap();
    file.write_to_file(path).unwrap();
}

fn gray(path: &std::path::Path) -> Vec<f32> {
    load_image(path, DecodeOptions::default())
        .unwrap()
        .rgb
        .pixels()
        .map(|p| p[0])
        .collect()
}

#[test]
fn rescale_then_window_then_inversion() {
    let dir = tempfile::tempdir().unwrap();
    // stored 0, 100, 150, 300 → modality (×2 − 100) −100, 100, 200, 500
    let stored = [0u16, 100, 150, 300];
    let p = dir.path().join("m2.dcm");
    write(&p, "MONOCHROME2", &stored, Some(("200", "401")));
    let g = gray(&p);
    // linear window: ((x − (c − 0.5)) / (w − 1) + 0.5), clamped
    let expect = |x: f32| (((x - 199.5) / 400.0) + 0.5).clamp(0.0, 1.0);
    for (got, x) in g.iter().zip([-100.0f32, 100.0, 200.0, 500.0]) {
        assert!((got - expect(x)).abs() < 1e-3, "{got} vs {}", expect(x));
    }
    let p1 = dir.path().join("m1.dcm");
    write(&p1, "MONOCHROME1", &stored, Some(("200", "401")));
    for (a, b) in gray(&p1).iter().zip(&g) {
        assert!(
            (a - (1.0 - b)).abs() < 1e-3,
            "MONOCHROME1 must invert: {a} vs {b}"
        );
    }
}

#[test]
fn without_window_the_full_range_is_used_and_tags_become_payload() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nowin.dcm");
    write(&p, "MONOCHROME2", &[10, 20, 30], None);
    let g = gray(&p);
    assert!(
        (g[0]).abs() < 1e-4 && (g[1] - 0.5).abs() < 1e-3 && (g[2] - 1.0).abs() < 1e-4,
        "{g:?}"
    );
    let img = load_image(&p, DecodeOptions::default()).unwrap();
    assert_eq!(
        img.dicom_tags.get("Modality").map(String::as_str),
        Some("CR")
    );
    assert_eq!(
        img.dicom_tags.get("BodyPartExamined").map(String::as_str),
        Some("CHEST")
    );
    assert!(
        !img.dicom_tags.values().any(|v| v.contains("Doe")),
        "patient identifiers must not be copied"
    );
}

#[test]
fn forged_geometry_is_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.dcm");
    write_with_rows(&p, "MONOCHROME2", &[1, 2, 3], None, 60_000);
    let e = load_image(&p, DecodeOptions::default()).unwrap_err();
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
    // Rows that do not match the pixel data are an error, not a panic.
    let p = dir.path().join("short.dcm");
    write_with_rows(&p, "MONOCHROME2", &[1, 2, 3], None, 7);
    assert!(load_image(&p, DecodeOptions::default()).is_err());
}

#[test]
fn png_with_forged_huge_size_is_refused() {
    // A valid 1×1 PNG whose IHDR claims 100000×100000 (CRC fixed so only the size is wrong).
    let mut png = Vec::new();
    image::GrayImage::from_pixel(1, 1, image::Luma([7]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let e = mirage_model::image_input::decode_image(&png, "bomb.png", DecodeOptions::default())
        .unwrap_err();
    assert!(matches!(e, mirage_model::Error::ImageDecode { .. }), "{e}");
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}
