//! DICOM decoding over the real test files shipped in the pydicom wheel.

mod common;

use mirage_model::image_input::{decode_image, DecodeOptions, ImageFormat};
use mirage_model::Error;

/// Transfer syntaxes whose pixel data this build cannot decode (JPEG-LS needs CharLS, a C++ lib).
const UNSUPPORTED: &[&str] = &["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];

/// Files that are broken on purpose in pydicom's suite, with what breaks them.
const BROKEN_ON_PURPOSE: &[(&str, &str)] = &[];

#[test]
fn every_pydicom_test_image_decodes_or_names_its_transfer_syntax() {
    let Some(dir) = common::require(
        common::assets_dir().join("pydicom"),
        "scripts/fetch-assets.sh",
    ) else {
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
    let (mut decoded, mut unsupported, mut not_images) = (0, 0, 0);
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(path).unwrap();
        let result = decode_image(&bytes, &name, DecodeOptions::default());
        println!(
            "{name}: {}",
            match &result {
                Ok(img) => format!(
                    "ok {}x{} {:?}",
                    img.width(),
                    img.height(),
                    img.dicom_tags.get("TransferSyntax")
                ),
                Err(e) => format!("err {e}"),
            }
        );
        match result {
            Ok(img) => {
                decoded += 1;
                assert!(img.width() > 0 && img.height() > 0);
                assert!(
                    img.rgb
                        .pixels()
                        .all(|p| p.0.iter().all(|v| (0.0..=1.0).contains(v))),
                    "{name}: values outside [0,1]"
                );
                assert_eq!(img.format, ImageFormat::Dicom);
            }
            Err(Error::UnsupportedTransferSyntax { uid, .. }) => {
                unsupported += 1;
                assert!(
                    UNSUPPORTED.contains(&uid.as_str()),
                    "{name}: transfer syntax {uid} should be supported"
                );
            }
            Err(e) => {
                not_images += 1;
                let _ = BROKEN_ON_PURPOSE;
                println!("  (not an image: {e})");
            }
        }
    }
    println!("decoded {decoded}, unsupported {unsupported}, not images {not_images}");
}
