//! The three pair-file formats, image resolution and skipped rows.

use mirage_trainer::config::DataFormat;
use mirage_trainer::data::read_pairs;

#[test]
fn pmcoa_jsonl_and_csv_read_the_same_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("p.jsonl"),
        "{\"image\": \"a.png\", \"caption\": \"left lung\", \"pmcid\": \"PMC1\"}\n\n\
         {\"image\": \"b.png\", \"caption\": \"  \"}\n{\"image\": \"c.png\", \"caption\": \"brain\"}\n",
    )
    .unwrap();
    let (pairs, report) =
        read_pairs(&d.join("p.jsonl"), DataFormat::Pmcoa, Some(&d.join("imgs"))).unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!((report.rows, report.empty_captions), (3, 1));
    assert_eq!(pairs[0].image, d.join("imgs/a.png"));
    assert_eq!(pairs[1].caption, "brain");

    std::fs::write(
        d.join("j.jsonl"),
        "{\"image\": \"a.png\", \"text\": \"left lung\"}\n{\"image\": \"c.png\", \"caption\": \"brain\"}\n",
    )
    .unwrap();
    let (pairs, _) = read_pairs(&d.join("j.jsonl"), DataFormat::Jsonl, None).unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].caption, "left lung");
    assert_eq!(
        pairs[0].image,
        d.join("a.png"),
        "images resolve against the file's folder"
    );

    std::fs::write(
        d.join("c.csv"),
        "id,image,caption\n1,a.png,\"left lung, axial\"\n2,c.png,\n3,d.png,heart\n",
    )
    .unwrap();
    let (pairs, report) = read_pairs(&d.join("c.csv"), DataFormat::Csv, None).unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(report.empty_captions, 1);
    assert_eq!(pairs[0].caption, "left lung, axial");
}

#[test]
fn bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("noimage.jsonl"), "{\"caption\": \"x\"}\n").unwrap();
    let e = read_pairs(&d.join("noimage.jsonl"), DataFormat::Pmcoa, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("noimage.jsonl:1") && e.contains("image"), "{e}");
    std::fs::write(d.join("nocol.csv"), "file,caption\na.png,x\n").unwrap();
    let e = read_pairs(&d.join("nocol.csv"), DataFormat::Csv, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("image"), "{e}");
    std::fs::write(d.join("empty.jsonl"), "").unwrap();
    let e = read_pairs(&d.join("empty.jsonl"), DataFormat::Pmcoa, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no usable pairs"), "{e}");
}
