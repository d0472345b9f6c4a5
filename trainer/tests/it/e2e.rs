//! End to end on the CPU: tiny models train on a generated PMC-OA-style dataset of real PNG and
//! JPEG files, their loss falls, the export loads in `mirage-model`, and tch and candle embed
//! the same texts and images alike; a killed run resumes and finishes; bad input is refused.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{cosine, small_run, tiny_bundle, write_dataset, CLASSES};
use mirage_model::image_input::{load_image, preprocess, DecodeOptions};
use mirage_model::testing::TinyVision;
use mirage_model::{EngineChoice, EngineOptions, MirageModel};
use mirage_trainer::config::TrainConfig;
use mirage_trainer::export::{export, ExportOptions};
use mirage_trainer::towers::{l2n, Mode, TextBatch};
use mirage_trainer::train::Trainer;
use tch::{Device, Kind, Tensor};

fn metric_lines(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

fn mean_loss(lines: &[serde_json::Value]) -> f64 {
    lines
        .iter()
        .map(|l| l["loss"].as_f64().unwrap())
        .sum::<f64>()
        / lines.len() as f64
}

/// tch (the trained model in eval mode) and both serving engines over the exported bundle
/// (ONNX Runtime on the graphs `export` wrote, and candle) agree.
fn assert_parity(trainer: &Trainer, bundle_dir: &Path, images: &[std::path::PathBuf]) {
    assert!(
        bundle_dir.join("text.onnx").is_file() && bundle_dir.join("vision.onnx").is_file(),
        "export writes the ONNX graphs"
    );
    let mut engines = vec![EngineChoice::Candle];
    if crate::common::ort_library_present() {
        engines.push(EngineChoice::Ort);
    }
    for engine in engines {
        let options = EngineOptions {
            engine,
            assets: Some(crate::common::assets_dir()),
            ..EngineOptions::default()
        };
        let model = MirageModel::open(bundle_dir, &options).unwrap();
        assert_eq!(
            model.engine().as_str(),
            format!("{engine:?}").to_lowercase()
        );
        assert_engine_parity(trainer, &model, images);
    }
}

fn assert_engine_parity(trainer: &Trainer, candle: &MirageModel, images: &[std::path::PathBuf]) {
    let engine = candle.engine();
    let texts: Vec<&str> = CLASSES.to_vec();
    let ours = tch::no_grad(|| {
        let ids = candle.tokenizer().encode_ids(&texts).unwrap();
        l2n(&trainer
            .model()
            .text(&TextBatch::from_ids(&ids, Device::Cpu), Mode::eval()))
    });
    let theirs = candle.embed_texts(&texts).unwrap();
    for (i, t) in theirs.iter().enumerate() {
        let row = Vec::<f32>::try_from(ours.get(i as i64)).unwrap();
        let c = cosine(&row, t);
        assert!(c >= 0.9999, "text {i}: tch vs {engine:?} cosine {c}");
    }
    let decoded: Vec<_> = images
        .iter()
        .map(|p| load_image(p, DecodeOptions::default()).unwrap())
        .collect();
    let pre = &candle.config().preprocess;
    let mut pixels = Vec::new();
    for d in &decoded {
        pixels.extend(preprocess(d, pre).unwrap());
    }
    let s = pre.image_size as i64;
    let ours = tch::no_grad(|| {
        let x = Tensor::from_slice(&pixels).view([decoded.len() as i64, 3, s, s]);
        l2n(&trainer.model().image(&x, Mode::eval()))
    });
    let theirs = candle.embed_images(&decoded).unwrap();
    for (i, t) in theirs.iter().enumerate() {
        let row = Vec::<f32>::try_from(ours.get(i as i64)).unwrap();
        let c = cosine(&row, t);
        assert!(c >= 0.9999, "image {i}: tch vs {engine:?} cosine {c}");
    }
}

#[test]
fn tiny_resnet_learns_exports_and_matches_candle() {
    let dir = tempfile::tempdir().unwrap();
    let train = write_dataset(dir.path(), "train", 96, 1);
    let valid = write_dataset(dir.path(), "valid", 24, 2);
    let bundle = tiny_bundle(dir.path(), TinyVision::ResNetAttention);
    let mut o = small_run(&bundle, &train, Some(&valid));
    o.extend([
        "optim.epochs=8".to_owned(),
        "noise.fp_rate=0.25".into(),
        "noise.mode=\"fixed\"".into(),
        "model.model_id=\"tiny-trained\"".into(),
    ]);
    let cfg = TrainConfig::load(None, &o, None).unwrap();
    cfg.validate_for_training().unwrap();
    let run = dir.path().join("run");
    let mut trainer = Trainer::new(cfg, &run, None, true).unwrap();
    // Start-of-training fill: K/N batches, pointer back at 0, no row left from the random start.
    let ck = trainer.run().unwrap();
    let q = trainer.queue().unwrap();
    assert!(q.fully_written());
    assert_eq!(q.size(), 48);

    let steps = metric_lines(&run, "step");
    assert_eq!(steps.len(), 64, "8 epochs × 8 batches");
    let (first, last) = (mean_loss(&steps[..8]), mean_loss(&steps[56..]));
    assert!(
        last < first * 0.8,
        "loss did not fall: first epoch {first}, last {last}"
    );
    for key in [
        "pair",
        "robust",
        "ot",
        "in_batch_acc",
        "s_p50",
        "sigma_queue",
        "queue_staleness",
    ] {
        assert!(steps[10][key].is_number(), "{key} missing in {}", steps[10]);
    }
    let valid_lines = metric_lines(&run, "valid");
    assert_eq!(valid_lines.len(), 8);
    let v = valid_lines.last().unwrap();
    assert!(v["i2t_r5"].as_f64().unwrap() > 0.2, "{v}");
    assert!(
        v["noise_auc_s"].is_number() && v["noise_auc_cos"].is_number(),
        "{v}"
    );
    let epochs = metric_lines(&run, "epoch");
    assert_eq!(epochs.len(), 8);
    assert!(
        epochs[7]["train_noise_auc_s"].as_f64().unwrap() > 0.5,
        "{}",
        epochs[7]
    );
    // Plain cosine on the same training pairs, beside s.
    let cos = epochs[7]["train_noise_auc_cos"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&cos), "{}", epochs[7]);
    assert!(run.join("loss.png").exists() && run.join("valid.png").exists());
    assert!(run.join("noise.jsonl").exists());
    assert_eq!(
        std::fs::read_to_string(run.join("noise.jsonl"))
            .unwrap()
            .lines()
            .count(),
        24
    );

    let out = dir.path().join("bundle");
    let b = export(&ck, &out, &ExportOptions::default()).unwrap();
    let c = b.config();
    assert_eq!(c.model_id, "tiny-trained");
    let m = c.matching.expect("MIRAGE export records the matching");
    let sq = trainer
        .model()
        .params
        .get("log_scale.queue")
        .exp()
        .double_value(&[]);
    assert!((f64::from(m.nn_scale) - sq).abs() < 1e-4 * sq);
    assert!(!m.hard);
    let lp = trainer
        .model()
        .params
        .get("logit_scale")
        .exp()
        .double_value(&[]);
    assert!((f64::from(c.logit_scale) - lp).abs() < 1e-4 * lp);
    assert_eq!(c.provenance["method"], "mirage");
    assert_eq!(c.provenance["step"], 64);
    let bank = b.text_bank().unwrap().expect("bank exported");
    assert_eq!(bank.captions.len(), 48);
    assert!(bank.captions.iter().all(|c| !c.is_empty()));

    let images: Vec<_> = ["train_0.jpg", "train_1.png", "train_2.png", "valid_3.jpg"]
        .iter()
        .map(|f| dir.path().join("images").join(f))
        .collect();
    assert_parity(&trainer, &out, &images);
}

#[test]
fn tiny_vit_clip_baseline_exports_without_bank_and_matches_candle() {
    let s = crate::common::setup(36, 3, TinyVision::Vit).with(&[
        "optim.epochs=2",
        "loss.lambda_robust=0",
        "loss.lambda_ot=0",
        "loss.balance=\"none\"",
        "queue.size=1000",
    ]);
    let (trainer, ck) = s.train();
    assert!(trainer.queue().is_none(), "CLIP keeps no queue");
    let steps = metric_lines(&s.run_dir(), "step");
    assert!(steps
        .iter()
        .all(|l| l["robust"] == 0.0 && l["ot"] == 0.0 && l["s_mean"] == 0.0));
    let out = s.dir.path().join("bundle");
    let b = export(&ck, &out, &ExportOptions::default()).unwrap();
    assert!(b.config().matching.is_none());
    assert!(b.text_bank().unwrap().is_none());
    assert_eq!(b.config().provenance["method"], "clip");
    assert_parity(&trainer, &out, &s.parity_images());
}

#[test]
fn imported_layouts_fine_tune_with_mirage_and_match_both_engines() {
    // CLIP (causal text transformer, CLIP ViT), BiomedCLIP (timm ViT, BERT with [CLS] pooling
    // and an MLP text head), CLIP RN50 (ModifiedResNet) and PMC-CLIP (ModifiedResNet, BERT
    // attending to its padding) bundles as starting points: MIRAGE's loss trains them, and the
    // export agrees with tch on candle and ONNX Runtime.
    for layout in [
        TinyVision::Clip,
        TinyVision::BiomedClip,
        TinyVision::ClipResNet,
        TinyVision::PmcClip,
    ] {
        let s = crate::common::setup(36, 5, layout).with(&["optim.epochs=2"]);
        let (trainer, ck) = s.train();
        let steps = metric_lines(&s.run_dir(), "step");
        assert!(
            steps
                .iter()
                .all(|l| l["loss"].as_f64().unwrap().is_finite()),
            "{layout:?}"
        );
        let out = s.dir.path().join("bundle");
        let b = export(&ck, &out, &ExportOptions::default()).unwrap();
        assert_eq!(
            b.config().architecture,
            mirage_model::testing::tiny_config(layout, 16).architecture,
            "{layout:?}: the export keeps the imported architecture"
        );
        assert_parity(&trainer, &out, &s.parity_images());
    }
}

fn write_config(path: &Path, overrides: &[String]) {
    // The same overrides as a TOML file, as a user would write one.
    let mut table = toml::Table::new();
    for o in overrides {
        let (k, v) = o.split_once('=').unwrap();
        let (section, key) = k.split_once('.').unwrap();
        let value: toml::Value = format!("v = {v}").parse::<toml::Table>().unwrap()["v"].clone();
        table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap()
            .insert(key.to_owned(), value);
    }
    std::fs::write(path, toml::to_string(&table).unwrap()).unwrap();
}

fn final_weights(run: &Path) -> std::collections::HashMap<String, Tensor> {
    let ck = mirage_trainer::checkpoint::resolve(run).unwrap();
    mirage_trainer::checkpoint::read_tensors(&ck.join("weights.safetensors"), Device::Cpu).unwrap()
}

#[test]
fn killed_run_resumes_and_matches_an_uninterrupted_one() {
    let crate::common::Setup {
        dir, overrides: o, ..
    } = crate::common::setup(60, 4, TinyVision::ResNetMean).with(&[
        "optim.epochs=6",
        "checkpoint.every_steps=3",
        "data.workers=1",
    ]);
    let config = dir.path().join("run.toml");
    write_config(&config, &o);
    let cfg_arg = config.to_str().unwrap();

    let whole = dir.path().join("whole");
    let (code, _, err) = crate::common::run(&[
        "train",
        "--config",
        cfg_arg,
        "--out",
        whole.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");

    let run = dir.path().join("killed");
    let mut child = crate::common::bin()
        .args([
            "train",
            "--config",
            cfg_arg,
            "--out",
            run.to_str().unwrap(),
            "--quiet",
        ])
        .spawn()
        .unwrap();
    let latest = run.join("checkpoints/LATEST");
    let started = Instant::now();
    while !latest.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().ok();
    child.wait().unwrap();
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            mirage_trainer::checkpoint::resolve(&run)
                .unwrap()
                .join("state.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        state["step"].as_u64().unwrap() < 30,
        "the kill landed before the end: {state}"
    );

    // Without --resume the run directory is protected.
    let (code, _, err) = crate::common::run(&[
        "train",
        "--config",
        cfg_arg,
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--resume"), "{err}");

    // `--resume` alone continues with the configuration saved in the checkpoint.
    let (code, out, err) = crate::common::run(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--resume",
        run.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"step\":30"), "{out}");
    let steps = metric_lines(&run, "step");
    let numbers: Vec<u64> = steps.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(
        numbers,
        (1..=30).collect::<Vec<_>>(),
        "every step logged once"
    );

    let (a, b) = (final_weights(&whole), final_weights(&run));
    for (name, t) in &a {
        let diff = (t - &b[name]).abs().max().double_value(&[]);
        assert!(
            diff < 1e-5,
            "{name} differs by {diff} after kill and resume"
        );
    }
}

#[test]
fn bad_configuration_and_data_are_refused_clearly() {
    let crate::common::Setup {
        dir,
        overrides: base,
        ..
    } = crate::common::setup(24, 5, TinyVision::ResNetMean);
    let runs = std::cell::Cell::new(0);
    let go = |extra: &[&str]| {
        runs.set(runs.get() + 1);
        let out = dir.path().join(format!("run{}", runs.get()));
        let mut args: Vec<String> = vec![
            "train".into(),
            "--out".into(),
            out.display().to_string(),
            "--quiet".into(),
        ];
        for o in base.iter().map(String::as_str).chain(extra.iter().copied()) {
            args.extend(["--set".to_owned(), o.to_owned()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::common::run(&refs)
    };
    let (code, _, err) = go(&["queue.size=50"]);
    assert_eq!(code, 2);
    assert!(err.contains("K mod N"), "{err}");
    let (code, _, err) = go(&["loss.lamda_ot=1"]);
    assert_eq!(code, 2);
    assert!(err.contains("lamda_ot"), "{err}");
    let (code, _, err) = go(&["data.train=\"/nonexistent/train.jsonl\""]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/train.jsonl"), "{err}");
    let (code, _, err) = go(&["optim.batch_size=48", "queue.size=48"]);
    assert_eq!(code, 2);
    assert!(err.contains("fewer than one batch"), "{err}");

    // Unreadable images above the tolerated share stop the run with a count.
    for i in [1, 2, 4, 5] {
        std::fs::write(
            dir.path().join(format!("images/train_{i}.png")),
            b"not a png",
        )
        .unwrap();
    }
    let (code, _, err) = go(&["optim.max_steps=4"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unreadable") && err.contains("max_bad_share"),
        "{err}"
    );
    // ... and are reported but tolerated below it.
    let (code, _, err) = go(&["optim.max_steps=4", "data.max_bad_share=0.5"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("unreadable image"), "{err}");

    // A malformed line names the file and line.
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(
        &broken,
        "{\"image\": \"a.png\", \"caption\": \"x\"}\nnot json\n",
    )
    .unwrap();
    let arg = format!("data.train={:?}", broken.display().to_string());
    let (code, _, err) = go(&[arg.as_str()]);
    assert_eq!(code, 2);
    assert!(err.contains("broken.jsonl:2"), "{err}");

    // Empty captions are counted; too many of them stop the run.
    let empty = dir.path().join("empty.jsonl");
    let mut rows = String::new();
    for i in 0..24 {
        let caption = if i % 2 == 0 {
            ""
        } else {
            "normal chest radiograph"
        };
        rows.push_str(&format!(
            "{{\"image\": \"train_{i}.png\", \"caption\": {caption:?}}}\n"
        ));
    }
    std::fs::write(&empty, rows).unwrap();
    let arg = format!("data.train={:?}", empty.display().to_string());
    let (code, _, err) = go(&[arg.as_str()]);
    assert_eq!(code, 2);
    assert!(err.contains("empty captions"), "{err}");
}

#[test]
fn export_refuses_a_queue_still_holding_random_rows() {
    let s = crate::common::setup(24, 6, TinyVision::ResNetMean)
        .with(&["queue.init_fill=\"random\"", "optim.max_steps=1"]);
    let (_, ck) = s.train();
    let out = s.dir.path().join("b");
    let err = export(&ck, &out, &ExportOptions::default()).unwrap_err();
    assert!(err.to_string().contains("--no-bank"), "{err}");
    let b = export(
        &ck,
        &out,
        &ExportOptions {
            no_bank: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(b.text_bank().unwrap().is_none());
    assert!(b.config().matching.is_some());
    let _ = Kind::Float;
}

#[test]
fn a_bundle_with_a_query_tower_is_refused_as_a_starting_point() {
    use mirage_model::config::{TextPooling, VisionPooling, VisionTower};
    use mirage_model::import::{import_hf, ImportOptions};
    let crate::common::Setup {
        dir,
        overrides: mut o,
        ..
    } = crate::common::setup(12, 6, TinyVision::ResNetMean);
    mirage_model::testing::write_tiny_hf_dir(&dir.path().join("doc"), 3).unwrap();
    mirage_model::testing::write_tiny_hf_dir(&dir.path().join("query"), 4).unwrap();
    let bundle = dir.path().join("asym");
    import_hf(
        &ImportOptions {
            text_dir: dir.path().join("doc"),
            vision_weights: None,
            vision: VisionTower::Resnet(
                mirage_model::config::ResNetConfig::standard(18, VisionPooling::Mean).unwrap(),
            ),
            embed_dim: None,
            pooling: TextPooling::Cls,
            max_length: None,
            query_text_dir: Some(dir.path().join("query")),
            query_max_length: None,
            seed: 1,
            model_id: "asym".into(),
        },
        &bundle,
    )
    .unwrap();
    o.retain(|s| !s.starts_with("model.bundle="));
    o.push(format!("model.bundle={:?}", bundle.display().to_string()));
    let cfg = TrainConfig::load(None, &o, None).unwrap();
    let Err(err) = Trainer::new(cfg, &dir.path().join("run"), None, true) else {
        panic!("a bundle with a query tower must be refused")
    };
    assert!(format!("{err:#}").contains("query tower"), "{err:#}");
}

/// One CLIP-baseline step of the trainer from an imported open_clip checkpoint equals open_clip's
/// in PyTorch (`scripts/reference/clip_reference.py`, `step_reference`): the same random ViT
/// CLIP, texts and pixels, symmetric InfoNCE, AdamW with eps = 1000 so the update follows the
/// gradient. The loss agrees to 1e-4 and every compared tensor's update to cosine ≥ 0.999.
#[test]
fn a_training_step_from_an_imported_open_clip_model_equals_pytorchs() {
    use mirage_model::import_clip::{import, ClipImportOptions};
    use mirage_trainer::optim::AdamW;
    use mirage_trainer::towers::{DualEncoder, Params};
    use mirage_trainer::train::optimise_step;

    let cache = std::env::var_os("MIRAGE_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::common::assets_dir().parent().unwrap().to_path_buf());
    let reference = cache.join("parity/clip/openclip_vit");
    if !reference.join("step.safetensors").is_file() {
        mirage_model::testing::skip_or_fail(&format!(
            "missing {} — run scripts/reference-data.sh",
            reference.join("step.safetensors").display()
        ));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    import(
        &ClipImportOptions {
            dir: reference.clone(),
            model_id: "open-clip-random".into(),
            bpe_vocab: Some(
                crate::common::assets_dir().join("openclip/bpe_simple_vocab_16e6.txt.gz"),
            ),
            ..Default::default()
        },
        &bundle,
    )
    .unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference.join("step.json")).unwrap())
            .unwrap();
    let texts: Vec<String> = serde_json::from_value(meta["texts"].clone()).unwrap();
    let want =
        mirage_trainer::checkpoint::read_tensors(&reference.join("step.safetensors"), Device::Cpu)
            .unwrap();
    let train = crate::common::write_dataset(dir.path(), "train", 4, 1);
    let mut o = crate::common::small_run(&bundle, &train, None);
    o.extend([
        "loss.lambda_robust=0".to_owned(),
        "loss.lambda_ot=0".into(),
        "loss.balance=\"none\"".into(),
        "optim.weight_decay=0".into(),
        "optim.eps=1000".into(),
        "optim.betas=[0.9, 0.999]".into(),
    ]);
    let cfg = TrainConfig::load(None, &o, None).unwrap();
    let init = mirage_trainer::init::start(&cfg, &dir.path().join("work"), Device::Cpu).unwrap();
    let before: std::collections::HashMap<String, Tensor> = init
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.copy()))
        .collect();
    let arch = init.bundle_config.architecture.clone();
    let model = DualEncoder {
        params: Params::new(&arch, init.tensors, Device::Cpu).unwrap(),
        arch,
        text_dropout: 0.0,
    };
    let mut opt = AdamW::new(&model.params, &cfg.optim);
    let tokenizer = mirage_model::tokenize::TextTokenizer::from_bytes(
        &init.tokenizer_json,
        &init.bundle_config.tokenizer,
    )
    .unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens = TextBatch::from_ids(&tokenizer.encode_ids(&refs).unwrap(), Device::Cpu);
    let out = optimise_step(
        &model,
        &mut opt,
        None,
        &want["pixels"],
        &tokens,
        &texts,
        &cfg,
        0,
        1.0,
        Kind::Float,
    )
    .unwrap();
    let want_loss = want["loss"].double_value(&[0]);
    assert!(
        (out.loss - want_loss).abs() < 1e-4 * want_loss.max(1.0),
        "loss {} vs PyTorch {want_loss}",
        out.loss
    );
    // (ours, open_clip's, whether open_clip stores it [in, out] and ours [out, in])
    let pairs = [
        ("vision.conv_proj.weight", "visual.conv1.weight", false),
        ("vision_proj.weight", "visual.proj", true),
        (
            "vision.encoder.layers.encoder_layer_0.self_attention.in_proj_weight",
            "visual.transformer.resblocks.0.attn.in_proj_weight",
            false,
        ),
        ("vision.encoder.ln.weight", "visual.ln_post.weight", false),
        (
            "text.encoder.layers.encoder_layer_1.mlp.0.weight",
            "transformer.resblocks.1.mlp.c_fc.weight",
            false,
        ),
        ("text.ln_final.bias", "ln_final.bias", false),
        ("text_proj.weight", "text_projection", true),
        (
            "text.token_embedding.weight",
            "token_embedding.weight",
            false,
        ),
        ("text.positional_embedding", "positional_embedding", false),
        ("logit_scale", "logit_scale", false),
    ];
    let flat = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    for (ours, theirs, transposed) in pairs {
        let after = model.params.get(ours).detach();
        let update = flat(&(&after - &before[ours]));
        let mut reference = want[&format!("after.{theirs}")].shallow_clone();
        if transposed {
            reference = reference.tr();
        }
        let shape = after.size();
        let want_update =
            flat(&(reference.reshape(shape.as_slice()) - before[ours].reshape(shape.as_slice())));
        let c = crate::common::cosine(&update, &want_update);
        assert!(
            c >= 0.999,
            "{ours}: update cosine {c} with open_clip's {theirs}"
        );
    }
}
