//! Parity of both engines (ONNX Runtime over our ONNX graphs, and the candle towers) with PyTorch
//! on real weights (MiniLM) and on seeded random weights (ResNet-50 with attention pooling,
//! ResNet-18 with mean pooling, a small ViT). The references
//! come from `scripts/reference/*.py` run with pip torch: the MiniLM one is committed
//! (`tests/golden/minilm_radlabels.json`), the vision ones are generated into the cache by
//! `scripts/reference-data.sh` because their weights are too large for git.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use mirage_model::config::{TextPooling, VisionPooling, VisionTower};
use mirage_model::import::{import_hf, ImportOptions};
use mirage_model::testing::embed_pixel_tensor;
use mirage_model::testing::{tiny_config, TinyVision, TINY_TOKENIZER_JSON};
use mirage_model::towers::vision::VisionEncoder;
use mirage_model::{
    names, write_bundle, BundleContents, DeviceChoice, EngineChoice, EngineOptions, MirageModel,
};

/// Both engines (ONNX Runtime only once its library was fetched; CI fails without it).
fn engines() -> Vec<EngineOptions> {
    let mut out = vec![EngineOptions {
        engine: EngineChoice::Candle,
        ..EngineOptions::default()
    }];
    if let Some(lib) = crate::common::require(
        crate::common::assets_dir().join("onnxruntime/libonnxruntime.so"),
        "scripts/fetch-assets.sh",
    ) {
        out.push(EngineOptions {
            engine: EngineChoice::Ort,
            device: DeviceChoice::Cpu,
            threads: 0,
            ort_library: Some(lib),
            assets: None,
        });
    }
    out
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_matches_pytorch_transformers_on_radlabels_sentences() {
    let Some(minilm) = crate::common::require(
        crate::common::assets_dir().join("minilm"),
        "scripts/fetch-assets.sh",
    ) else {
        return;
    };
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            mirage_model::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden/minilm_radlabels.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = ImportOptions {
        text_dir: minilm,
        vision_weights: None,
        vision: VisionTower::Resnet(mirage_model::config::ResNetConfig {
            width: 8,
            attention_heads: 1,
            ..mirage_model::testing::tiny_resnet(false, VisionPooling::Mean)
        }),
        embed_dim: None,
        pooling: TextPooling::Mean,
        max_length: None,
        query_text_dir: None,
        query_max_length: None,
        seed: 7,
        model_id: "minilm-parity".into(),
    };
    import_hf(&opts, out.path()).unwrap();
    for options in engines() {
        minilm_on(&MirageModel::open(out.path(), &options).unwrap(), &golden);
    }
}

fn minilm_on(model: &MirageModel, golden: &serde_json::Value) {
    assert_eq!(
        model.config().tokenizer.max_length as u64,
        golden["max_length"].as_u64().unwrap()
    );
    let items = golden["items"].as_array().unwrap();
    assert!(items.len() >= 100);
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let mut worst = (1.0f32, "");
    for (chunk_items, chunk_texts) in items.chunks(16).zip(texts.chunks(16)) {
        // Through the bundle: identity projection, so the joint embedding is the sentence embedding.
        let ours = model.embed_texts(chunk_texts).unwrap();
        for ((item, text), emb) in chunk_items.iter().zip(chunk_texts).zip(&ours) {
            let reference: Vec<f32> = item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let c = cosine(emb, &reference);
            if c < worst.0 {
                worst = (c, text);
            }
        }
    }
    println!(
        "{:?}: worst cosine over {} sentences: {:.7} ({:?})",
        model.engine(),
        texts.len(),
        worst.0,
        worst.1
    );
    assert!(
        worst.0 >= 0.9999,
        "{:?}: cosine {} < 0.9999 for {:?}",
        model.engine(),
        worst.0,
        worst.1
    );
}

fn check_vision(name: &str) {
    let dir = crate::common::cache_dir().join("parity");
    let Some(path) = crate::common::require(
        dir.join(format!("{name}.safetensors")),
        "scripts/reference-data.sh",
    ) else {
        return;
    };
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    let tower: VisionTower = serde_json::from_value(config).unwrap();
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let input = tensors.remove("input").unwrap();
    let expected = tensors.remove("output").unwrap();
    check_engines(name, &tower, &tensors, &input, &expected);
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let encoder = VisionEncoder::load(&vb.pp("vision"), &tower).unwrap();
    let got = encoder.forward(&input).unwrap();
    assert_eq!(got.dims(), expected.dims());
    let max_err = (&got - &expected)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = expected
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let rel = max_err / scale;
    println!("{name}: max abs err {max_err:.3e}, max |ref| {scale:.3e}, relative {rel:.3e}");
    assert!(rel <= 1e-4, "{name}: relative error {rel} > 1e-4");
}

#[test]
fn resnet50_attention_pool_matches_torchvision() {
    check_vision("resnet50_attention");
}

#[test]
fn resnet18_mean_pool_matches_torchvision() {
    check_vision("resnet18_mean");
}

#[test]
fn vit_matches_torchvision() {
    check_vision("vit_small");
}

/// The reference tower inside a bundle (identity vision projection, tiny text tower), through
/// each engine's whole image path: the joint embedding must be the normalised reference feature.
fn check_engines(
    name: &str,
    tower: &VisionTower,
    vision: &HashMap<String, Tensor>,
    input: &Tensor,
    expected: &Tensor,
) {
    let feature = tower.feature_dim();
    let mut config = tiny_config(TinyVision::ResNetMean, feature);
    config.architecture.vision = tower.clone();
    config.preprocess = mirage_model::config::ImagePreprocess::clip(tower.image_size());
    let mut tensors = mirage_model::init::random_tensors(
        &names::model_tensors(&config.architecture),
        1,
        &Device::Cpu,
    )
    .unwrap();
    tensors.extend(vision.iter().map(|(k, v)| (k.clone(), v.clone())));
    tensors.insert(
        format!("{}.weight", names::VISION_PROJ),
        Tensor::eye(feature, DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        format!("{}.bias", names::VISION_PROJ),
        Tensor::zeros(feature, DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    write_bundle(
        dir.path(),
        BundleContents {
            config,
            tensors: &tensors,
            tokenizer_json: TINY_TOKENIZER_JSON,
            text_bank: None,
        },
    )
    .unwrap();
    let reference = expected.to_vec2::<f32>().unwrap();
    for options in engines() {
        let model = MirageModel::open(dir.path(), &options).unwrap();
        let got = embed_pixel_tensor(&model, input).unwrap();
        for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
            let c = cosine(g, r);
            println!("{name} via {:?}: image {i} cosine {c:.7}", model.engine());
            assert!(
                c >= 0.9999,
                "{name} via {:?}: image {i} cosine {c}",
                model.engine()
            );
        }
    }
}

/// Random BERT cross-encoders of three configurations (one label / two labels; gelu, gelu_new,
/// relu) imported from what transformers saved, on both engines: logits agree with
/// transformers' (cosine over the pairs ≥ 0.9999, and within 1e-3), the tokens read per pair are
/// the same (truncation longest-first at the reranker's limit), and so is the ranking.
#[test]
fn cross_encoders_match_transformers() {
    use mirage_model::reranker::{import_cross_encoder, Reranker};
    let dir = crate::common::cache_dir().join("parity/cross_encoder");
    let Some(dir) = crate::common::require(dir, "scripts/reference-data.sh") else {
        return;
    };
    let mut seen = 0;
    // Every configuration on every engine, so one mismatch does not hide another.
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let src = entry.unwrap().path();
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("reference.json")).unwrap())
                .unwrap();
        let max_length = reference["max_length"].as_u64().unwrap() as usize;
        let out = tempfile::tempdir().unwrap();
        let config = import_cross_encoder(&src, out.path(), None, Some(max_length)).unwrap();
        assert_eq!(
            config.num_labels as u64,
            reference["num_labels"].as_u64().unwrap()
        );
        let query = reference["query"].as_str().unwrap();
        let docs: Vec<&str> = reference["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        let want: Vec<f32> = reference["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        let tokens: Vec<usize> = reference["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as usize)
            .collect();
        for options in engines() {
            let r = Reranker::open(out.path(), &options).unwrap();
            assert_eq!(r.pair_tokens(query, &docs).unwrap(), tokens, "{src:?}");
            let got: Vec<f32> = r.logits(query, &docs).unwrap().concat();
            let cos = cosine(&got, &want);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            if !(cos >= 0.9999 && worst < 1e-3) {
                failures.push(format!(
                    "{src:?} on {:?}: cosine {cos}, largest difference {worst}\n got {got:?}\nwant {want:?}",
                    r.engine()
                ));
                continue;
            }
            let order = |scores: &[f32]| {
                let mut idx: Vec<usize> = (0..scores.len()).collect();
                idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
                idx
            };
            let labels = config.num_labels;
            let positive = |v: &[f32]| -> Vec<f32> {
                v.chunks(labels)
                    .map(|c| if labels == 1 { c[0] } else { c[1] - c[0] })
                    .collect()
            };
            assert_eq!(order(&positive(&got)), order(&positive(&want)));
            let relevance: Vec<f32> = r
                .score(query, &docs)
                .unwrap()
                .iter()
                .map(|s| s.relevance)
                .collect();
            assert_eq!(order(&relevance), order(&positive(&want)));
        }
        seen += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(seen, 3, "three reference configurations");
}

/// What the importer refuses, naming what did not fit.
#[test]
fn cross_encoder_import_refuses_other_layouts() {
    use mirage_model::reranker::{import_cross_encoder, Reranker};
    let Some(src) = crate::common::require(
        crate::common::cache_dir().join("parity/cross_encoder/one-label-gelu"),
        "scripts/reference-data.sh",
    ) else {
        return;
    };
    let copy = |edit: &dyn Fn(&std::path::Path)| {
        let d = tempfile::tempdir().unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(src.join(f), d.path().join(f)).unwrap();
        }
        edit(d.path());
        d
    };
    let set_config = |d: &std::path::Path, key: &str, v: serde_json::Value| {
        let p = d.join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        c[key] = v;
        std::fs::write(p, c.to_string()).unwrap();
    };
    let out = tempfile::tempdir().unwrap();
    let d = copy(&|d| set_config(d, "architectures", serde_json::json!(["BertModel"])));
    let e = import_cross_encoder(d.path(), out.path(), None, None).unwrap_err();
    assert!(
        e.to_string().contains("BertForSequenceClassification"),
        "{e}"
    );
    let d = copy(&|d| set_config(d, "model_type", serde_json::json!("roberta")));
    let e = import_cross_encoder(d.path(), out.path(), None, None).unwrap_err();
    assert!(e.to_string().contains("roberta"), "{e}");
    // A checkpoint of another width: the first tensor that does not fit is named.
    let d = copy(&|d| set_config(d, "hidden_size", serde_json::json!(64)));
    let e = import_cross_encoder(d.path(), out.path(), None, None).unwrap_err();
    assert!(e.to_string().contains("bert.embeddings"), "{e}");
    let d = copy(&|d| std::fs::remove_file(d.join("model.safetensors")).unwrap());
    let e = import_cross_encoder(d.path(), out.path(), None, None).unwrap_err();
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    let e = import_cross_encoder(src.as_path(), out.path(), None, Some(65)).unwrap_err();
    assert!(e.to_string().contains("3–64"), "{e}");
    // Weights changed after import are refused at load.
    import_cross_encoder(src.as_path(), out.path(), Some("ce".into()), None).unwrap();
    let w = out.path().join("model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&w, bytes).unwrap();
    let e = Reranker::open(out.path(), &EngineOptions::default()).unwrap_err();
    assert!(e.to_string().contains("sha256"), "{e}");
}

/// A random Hugging Face `CLIPModel` (CLIP's real 49,408-token vocabulary, every weight random,
/// norms and biases included) imported from `model.safetensors` and from `pytorch_model.bin`,
/// on both engines: the tokenizer gives transformers' ids for 200 sentences (unicode, empty,
/// whitespace, one past the 77-token limit), text and image embeddings have cosine ≥ 0.9999
/// with `get_text_features` / `get_image_features`, and each image ranks the texts in the same
/// order.
#[test]
fn hf_clip_import_matches_transformers() {
    use mirage_model::import_clip::{detect, import_hf_clip, ClipImportOptions, Layout};
    let Some(dir) = clip_reference("") else {
        return;
    };
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let want =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let sentences: Vec<&str> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let ids: Vec<Vec<u32>> = serde_json::from_value(reference["token_ids"].clone()).unwrap();
    let embedded: Vec<usize> = serde_json::from_value(reference["embedded"].clone()).unwrap();
    let texts: Vec<&str> = embedded.iter().map(|&i| sentences[i]).collect();
    let want_text = want["text_embeds"].to_vec2::<f32>().unwrap();
    let want_image = want["image_embeds"].to_vec2::<f32>().unwrap();
    let pixels = &want["pixel_values"];
    let mut failures = Vec::new();
    for source in ["hf_safetensors", "hf_bin"] {
        let src = dir.join(source);
        assert_eq!(detect(&src).unwrap(), Layout::HfClip);
        let out = tempfile::tempdir().unwrap();
        let opts = ClipImportOptions {
            dir: src.clone(),
            model_id: "clip-random".into(),
            ..Default::default()
        };
        import_hf_clip(&opts, out.path()).unwrap();
        mirage_model::add_onnx(out.path()).unwrap();
        for options in engines() {
            let model = MirageModel::open(out.path(), &options).unwrap();
            let tag = format!("{source} on {:?}", model.engine());
            for (s, want_ids) in sentences.iter().zip(&ids) {
                let got = model.tokenizer().encode_ids(&[s]).unwrap();
                if &got.ids[..got.lengths[0]] != want_ids.as_slice() {
                    failures.push(format!("{tag}: tokens of {s:?}: {:?}", got.ids));
                }
            }
            let got_text = model.embed_texts(&texts).unwrap();
            for (i, (a, b)) in got_text.iter().zip(&want_text).enumerate() {
                let c = cosine(a, b);
                if c < 0.9999 {
                    failures.push(format!("{tag}: text {:?}: cosine {c}", texts[i]));
                }
            }
            let got_image = embed_pixel_tensor(&model, pixels).unwrap();
            for (i, (a, b)) in got_image.iter().zip(&want_image).enumerate() {
                let c = cosine(a, b);
                if c < 0.9999 {
                    failures.push(format!("{tag}: image {i}: cosine {c}"));
                }
            }
            let rank = |img: &[f32], txt: &[Vec<f32>]| -> Vec<usize> {
                let mut order: Vec<usize> = (0..txt.len()).collect();
                let s: Vec<f32> = txt
                    .iter()
                    .map(|t| t.iter().zip(img).map(|(x, y)| x * y).sum())
                    .collect();
                order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
                order
            };
            for (i, img) in got_image.iter().enumerate() {
                if rank(img, &got_text)[..3] != rank(&want_image[i], &want_text)[..3] {
                    failures.push(format!(
                        "{tag}: image {i}: another top-3 ranking of the texts"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A CLIP checkpoint that lacks a tensor, or holds one no CLIPModel has, is refused with that
/// tensor's name; a BERT directory is recognised and sent to `import-hf`.
#[test]
fn hf_clip_import_refuses_what_does_not_fit_by_name() {
    use mirage_model::import_clip::{import_hf_clip, ClipImportOptions};
    let Some(dir) = clip_reference("hf_safetensors") else {
        return;
    };
    let broken = |edit: &dyn Fn(&mut HashMap<String, Tensor>)| -> String {
        let tmp = tempfile::tempdir().unwrap();
        for f in ["config.json", "tokenizer.json", "preprocessor_config.json"] {
            std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
        }
        let mut t =
            candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
        edit(&mut t);
        candle_core::safetensors::save(&t, tmp.path().join("model.safetensors")).unwrap();
        let out = tempfile::tempdir().unwrap();
        let opts = ClipImportOptions {
            dir: tmp.path().to_path_buf(),
            model_id: "broken".into(),
            ..Default::default()
        };
        import_hf_clip(&opts, out.path()).unwrap_err().to_string()
    };
    let msg = broken(&|t| {
        t.remove("vision_model.post_layernorm.bias");
    });
    assert!(msg.contains("vision_model.post_layernorm.bias"), "{msg}");
    let msg = broken(&|t| {
        t.insert(
            "vision_model.head.weight".into(),
            Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert!(msg.contains("vision_model.head.weight"), "{msg}");
    let msg = broken(&|t| {
        let w = t.remove("text_projection.weight").unwrap();
        t.insert(
            "text_projection.weight".into(),
            w.t().unwrap().contiguous().unwrap(),
        );
    });
    assert!(msg.contains("text_projection.weight"), "{msg}");

    let bert = tempfile::tempdir().unwrap();
    mirage_model::testing::write_tiny_hf_dir(bert.path(), 1).unwrap();
    assert_eq!(
        mirage_model::import_clip::detect(bert.path()).unwrap(),
        mirage_model::import_clip::Layout::HfBert
    );
    let empty = tempfile::tempdir().unwrap();
    let msg = mirage_model::import_clip::detect(empty.path())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("open_clip_config.json"), "{msg}");
}

/// Embeddings of `texts` and of the reference's pixels by the bundle in `bundle` on both
/// engines, compared with the reference's (cosine ≥ 0.9999); what differs is returned.
/// `scripts/reference-data.sh`'s CLIP-family reference folder `sub` ("" for the folder itself),
/// or None (the test skips; under CI it fails) when it has not been generated.
fn clip_reference(sub: &str) -> Option<std::path::PathBuf> {
    crate::common::require(
        crate::common::cache_dir().join("parity/clip").join(sub),
        "scripts/reference-data.sh",
    )
}

fn compare_with_reference(
    bundle: &std::path::Path,
    reference: &std::path::Path,
    tag: &str,
) -> Vec<String> {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference.join("reference.json")).unwrap())
            .unwrap();
    let want =
        candle_core::safetensors::load(reference.join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    let sentences: Vec<String> = serde_json::from_value(meta["sentences"].clone()).unwrap();
    let embedded: Vec<usize> = serde_json::from_value(meta["embedded"].clone()).unwrap();
    let texts: Vec<&str> = embedded.iter().map(|&i| sentences[i].as_str()).collect();
    let want_text = want["text_embeds"].to_vec2::<f32>().unwrap();
    let want_image = want["image_embeds"].to_vec2::<f32>().unwrap();
    let mut failures = Vec::new();
    for options in engines() {
        let model = MirageModel::open(bundle, &options).unwrap();
        let tag = format!("{tag} on {:?}", model.engine());
        for (i, (a, b)) in model
            .embed_texts(&texts)
            .unwrap()
            .iter()
            .zip(&want_text)
            .enumerate()
        {
            let c = cosine(a, b);
            if c < 0.9999 {
                failures.push(format!("{tag}: text {:?}: cosine {c}", texts[i]));
            }
        }
        let got = embed_pixel_tensor(&model, &want["pixel_values"]).unwrap();
        for (i, (a, b)) in got.iter().zip(&want_image).enumerate() {
            let c = cosine(a, b);
            if c < 0.9999 {
                failures.push(format!("{tag}: image {i}: cosine {c}"));
            }
        }
    }
    failures
}

/// open_clip's own CLIP ViT layout (random weights, QuickGELU) from open_clip_model.safetensors
/// and from open_clip_pytorch_model.bin, its tokenizer built from CLIP's BPE merge list: text
/// and image embeddings match open_clip's `encode_text` / `encode_image` on both engines, and the
/// built tokenizer gives open_clip's ids for every one of the 200 sentences but the one whose
/// full-width colon open_clip's ftfy clean-up folds to ASCII first.
#[test]
fn open_clip_vit_import_matches_open_clip() {
    use mirage_model::import_clip::{detect, import, ClipImportOptions, Layout};
    let Some(dir) = clip_reference("") else {
        return;
    };
    let bpe = crate::common::assets_dir().join("openclip/bpe_simple_vocab_16e6.txt.gz");
    let mut failures = Vec::new();
    for source in ["openclip_vit", "openclip_vit_bin"] {
        let src = dir.join(source);
        assert_eq!(detect(&src).unwrap(), Layout::OpenClip);
        let out = tempfile::tempdir().unwrap();
        let opts = ClipImportOptions {
            dir: src.clone(),
            model_id: "open-clip-random".into(),
            bpe_vocab: Some(bpe.clone()),
            ..Default::default()
        };
        let b = import(&opts, out.path()).unwrap();
        assert_eq!(b.config().preprocess.mean, [0.5, 0.4, 0.3]);
        mirage_model::add_onnx(out.path()).unwrap();
        failures.extend(compare_with_reference(
            out.path(),
            &dir.join("openclip_vit"),
            source,
        ));
        if source == "openclip_vit" {
            let meta: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join("openclip_vit/reference.json")).unwrap(),
            )
            .unwrap();
            let sentences: Vec<String> = serde_json::from_value(meta["sentences"].clone()).unwrap();
            let ids: Vec<Vec<u32>> =
                serde_json::from_value(meta["open_clip_token_ids"].clone()).unwrap();
            let model = MirageModel::open_cpu(out.path()).unwrap();
            let differ: Vec<&String> = sentences
                .iter()
                .zip(&ids)
                .filter(|(s, want)| {
                    let got = model.tokenizer().encode_ids(&[s.as_str()]).unwrap();
                    &got.ids[..got.lengths[0]] != want.as_slice()
                })
                .map(|(s, _)| s)
                .collect();
            assert!(
                differ.len() == 1 && differ[0].contains('\u{ff1a}'),
                "tokens differ from open_clip's for {differ:?}"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Without a tokenizer.json or the merge list there is nothing to tokenise with.
    let out = tempfile::tempdir().unwrap();
    let opts = ClipImportOptions {
        dir: dir.join("openclip_vit"),
        model_id: "x".into(),
        ..Default::default()
    };
    let msg = import(&opts, out.path()).unwrap_err().to_string();
    assert!(msg.contains("bpe_simple_vocab_16e6.txt.gz"), "{msg}");
}

/// The BiomedCLIP layout (timm ViT-Ti/16 at 224 px, a Hugging Face BERT text tower with [CLS]
/// pooling and an MLP projection; random weights) from open_clip_pytorch_model.bin, with the
/// text model's config.json and with the config inferred from the weights: embeddings match
/// open_clip's on both engines.
#[test]
fn biomedclip_layout_import_matches_open_clip() {
    use mirage_model::config::{TextProjection, TextTower};
    use mirage_model::import_clip::{import, ClipImportOptions};
    let Some(dir) = clip_reference("biomedclip") else {
        return;
    };
    let mut failures = Vec::new();
    for text_config in [Some(dir.join("text/config.json")), None] {
        let out = tempfile::tempdir().unwrap();
        let opts = ClipImportOptions {
            dir: dir.clone(),
            model_id: "biomedclip-random".into(),
            text_config: text_config.clone(),
            ..Default::default()
        };
        let b = import(&opts, out.path()).unwrap();
        let arch = &b.config().architecture;
        assert!(matches!(arch.text, TextTower::Bert { .. }));
        assert_eq!(arch.text_projection, TextProjection::Mlp { hidden: 24 });
        assert_eq!(b.config().tokenizer.max_length, 64);
        mirage_model::add_onnx(out.path()).unwrap();
        let tag = if text_config.is_some() {
            "with config.json"
        } else {
            "inferred config"
        };
        // The inferred config has 32/64 → 1 head where the model has 4: only the given config
        // can match; the inferred one must still load and run.
        if text_config.is_some() {
            failures.extend(compare_with_reference(out.path(), &dir, tag));
        } else {
            let model = MirageModel::open_cpu(out.path()).unwrap();
            assert_eq!(
                model.embed_texts(&["pleural effusion"]).unwrap()[0].len(),
                16
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// open_clip's ModifiedResNet (the OpenAI RN50 layout: three-convolution stem, anti-aliased
/// downsampling, an attention pool projecting to the joint space; random weights and BatchNorm
/// statistics) with its text transformer, from open_clip_pytorch_model.bin: embeddings match
/// open_clip's on both engines.
#[test]
fn open_clip_rn50_import_matches_open_clip() {
    use mirage_model::config::VisionTower;
    use mirage_model::import_clip::{import, ClipImportOptions};
    let Some(dir) = clip_reference("openclip_rn50") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let opts = ClipImportOptions {
        dir: dir.clone(),
        model_id: "rn50-random".into(),
        bpe_vocab: Some(crate::common::assets_dir().join("openclip/bpe_simple_vocab_16e6.txt.gz")),
        ..Default::default()
    };
    let b = import(&opts, out.path()).unwrap();
    let VisionTower::Resnet(r) = &b.config().architecture.vision else {
        panic!("a ModifiedResNet imports as a ResNet tower")
    };
    assert!(r.modified && r.attention_output_dim == Some(16));
    mirage_model::add_onnx(out.path()).unwrap();
    let failures = compare_with_reference(out.path(), &dir, "rn50");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// PMC-CLIP's released checkpoint layout (a training checkpoint.pt holding open_clip's
/// ModifiedResNet, a Hugging Face BERT with a bare projection, and the fusion module and
/// masked-language head it trained with; random weights), with its BERT's tokenizer.json and
/// config.json: the shapes are read off the tensors, and the embeddings match PMC-CLIP's own
/// computation (texts padded to 77 tokens, no attention mask) on both engines. Without a
/// tokenizer the import says what to pass.
#[test]
fn pmc_clip_checkpoint_import_matches_its_reference() {
    use mirage_model::config::TextTower;
    use mirage_model::import_clip::{detect, import, ClipImportOptions, Layout};
    let Some(dir) = clip_reference("pmcclip") else {
        return;
    };
    assert_eq!(detect(&dir).unwrap(), Layout::PmcClip);
    let out = tempfile::tempdir().unwrap();
    let opts = ClipImportOptions {
        dir: dir.clone(),
        model_id: "pmc-clip-random".into(),
        tokenizer: Some(dir.join("text/tokenizer.json")),
        text_config: Some(dir.join("text/config.json")),
        ..Default::default()
    };
    let b = import(&opts, out.path()).unwrap();
    let c = b.config();
    let VisionTower::Resnet(r) = &c.architecture.vision else {
        panic!("PMC-CLIP's ModifiedResNet imports as a ResNet tower")
    };
    assert!(r.modified);
    assert_eq!(
        (r.layers, r.width, r.image_size, r.attention_output_dim),
        ([1, 2, 1, 1], 8, 64, Some(16))
    );
    assert!(matches!(c.architecture.text, TextTower::Bert { .. }));
    assert_eq!(
        (c.tokenizer.max_length, c.tokenizer.attend_padding),
        (77, true)
    );
    assert_eq!(c.provenance["layout"], "pmc-clip");
    // Padding-attending models have no query tower: queries would be padded otherwise.
    let mut asym = c.clone();
    asym.architecture.query_text = Some(asym.architecture.text.clone());
    let err = asym.validate().unwrap_err().to_string();
    assert!(err.contains("attend_padding"), "{err}");
    mirage_model::add_onnx(out.path()).unwrap();
    let failures = compare_with_reference(out.path(), &dir, "pmc-clip");
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // PubMedBERT's files may sit beside the checkpoint instead (the layout is still PMC-CLIP's).
    let beside = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("checkpoint.pt", "checkpoint.pt"),
        ("text/config.json", "config.json"),
        ("text/tokenizer.json", "tokenizer.json"),
    ] {
        std::fs::copy(dir.join(from), beside.path().join(to)).unwrap();
    }
    assert_eq!(detect(beside.path()).unwrap(), Layout::PmcClip);
    let again = tempfile::tempdir().unwrap();
    let b2 = import(
        &ClipImportOptions {
            dir: beside.path().to_path_buf(),
            model_id: "pmc-clip-random".into(),
            ..Default::default()
        },
        again.path(),
    )
    .unwrap();
    assert_eq!(b2.config().architecture, b.config().architecture);

    let err = import(
        &ClipImportOptions {
            tokenizer: None,
            ..opts
        },
        tempfile::tempdir().unwrap().path(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no tokenizer.json"), "{err}");
}
