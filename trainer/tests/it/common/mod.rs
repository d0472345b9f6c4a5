//! Shared helpers: a generated PMC-OA-style dataset of real PNG and JPEG files whose captions
//! describe what is drawn, tiny bundles to start from, and configuration overrides.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::{Path, PathBuf};

use image::{ImageBuffer, Rgb};
use mirage_model::testing::{write_tiny_bundle, TinyVision};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Caption of each drawable class (words from the tiny tokenizer's vocabulary).
pub const CLASSES: [&str; 6] = [
    "axial ct of the left lung",
    "axial ct of the right lung",
    "coronal mri of the brain",
    "chest radiograph with pleural effusion",
    "sagittal mri slice of the heart",
    "normal chest radiograph",
];

fn draw(class: usize, rng: &mut ChaCha8Rng) -> ImageBuffer<Rgb<u8>, Vec<u8>> {
    let size = 64u32;
    let (jx, jy) = (rng.random_range(-4i32..=4), rng.random_range(-4i32..=4));
    ImageBuffer::from_fn(size, size, |x, y| {
        let (x, y) = (x as i32 - jx, y as i32 - jy);
        let noise = rng.random_range(0u8..30);
        let on = match class {
            0 => (x - 18).pow(2) + (y - 32).pow(2) < 120,
            1 => (x - 46).pow(2) + (y - 32).pow(2) < 120,
            2 => {
                let r = (x - 32).pow(2) + (y - 32).pow(2);
                (300..500).contains(&r)
            }
            3 => y > 44,
            4 => (28..36).contains(&x),
            _ => (x / 8 + y / 8) % 2 == 0,
        };
        let v = if on { 200 } else { 20 } + noise;
        let tint = [v, v, v.saturating_sub((class as u8) * 10)];
        Rgb(tint)
    })
}

/// Writes `n` pairs as `DIR/NAME.jsonl` (PMC-OA fields) with images under `DIR/images/`
/// (every third a JPEG). Returns the jsonl path.
pub fn write_dataset(dir: &Path, name: &str, n: usize, seed: u64) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let path = dir.join(format!("{name}.jsonl"));
    let mut f = std::fs::File::create(&path).unwrap();
    for i in 0..n {
        let class = i % CLASSES.len();
        let img = draw(class, &mut rng);
        let file = if i % 3 == 0 {
            format!("{name}_{i}.jpg")
        } else {
            format!("{name}_{i}.png")
        };
        img.save(images.join(&file)).unwrap();
        let row = serde_json::json!({
            "image": file,
            "caption": CLASSES[class],
            "pmcid": format!("PMC{i}"),
        });
        writeln!(f, "{row}").unwrap();
    }
    path
}

/// A tiny bundle to start training from.
pub fn tiny_bundle(dir: &Path, vision: TinyVision) -> PathBuf {
    let out = dir.join(format!("init-{vision:?}"));
    write_tiny_bundle(&out, vision, 16, 7).unwrap();
    out
}

/// Overrides for a small, fast CPU run.
pub fn small_run(bundle: &Path, train: &Path, valid: Option<&Path>) -> Vec<String> {
    let image_root = train.parent().unwrap().join("images");
    let mut o = vec![
        format!("model.bundle={:?}", bundle.display().to_string()),
        format!("data.train={:?}", train.display().to_string()),
        format!("data.image_root={:?}", image_root.display().to_string()),
        "data.workers=2".into(),
        "optim.batch_size=12".into(),
        "optim.lr=3e-3".into(),
        "optim.weight_decay=0.01".into(),
        "optim.warmup_epochs=0.5".into(),
        "queue.size=48".into(),
        // The reference's λ from step 0 (the parity tests compare against it), not the derived
        // ramp.
        "loss.robust_ramp_steps=0".into(),
        "runtime.device=\"cpu\"".into(),
        "runtime.threads=1".into(),
        "checkpoint.every_steps=10".into(),
    ];
    if let Some(v) = valid {
        o.push(format!("data.valid={:?}", v.display().to_string()));
    }
    o
}

/// The `mirage-train` binary.
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_mirage-train"))
}

/// Runs the binary, returning (status code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Cosine of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// A temporary folder with `n` generated training pairs (seeded) and a tiny bundle, plus the
/// overrides of a small CPU run over them.
pub struct Setup {
    /// Holds every file; removed on drop.
    pub dir: tempfile::TempDir,
    /// The training jsonl.
    pub train: PathBuf,
    /// The starting bundle.
    pub bundle: PathBuf,
    /// `small_run` overrides.
    pub overrides: Vec<String>,
}

impl Setup {
    /// `extra` overrides after `small_run`'s.
    pub fn with(mut self, extra: &[&str]) -> Self {
        self.overrides.extend(extra.iter().map(|o| o.to_string()));
        self
    }

    /// Where [`Setup::train`] writes its run.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Trains with the overrides into [`Setup::run_dir`]: the trainer and its last checkpoint.
    pub fn train(&self) -> (mirage_trainer::train::Trainer, PathBuf) {
        let cfg = mirage_trainer::config::TrainConfig::load(None, &self.overrides, None).unwrap();
        let mut trainer =
            mirage_trainer::train::Trainer::new(cfg, &self.run_dir(), None, true).unwrap();
        let ck = trainer.run().unwrap();
        (trainer, ck)
    }

    /// Two of the dataset's images, one of each format, for parity checks.
    pub fn parity_images(&self) -> Vec<PathBuf> {
        ["images/train_0.jpg", "images/train_4.png"]
            .map(|f| self.dir.path().join(f))
            .to_vec()
    }
}

/// See [`Setup`].
pub fn setup(n: usize, seed: u64, vision: TinyVision) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let train = write_dataset(dir.path(), "train", n, seed);
    let bundle = tiny_bundle(dir.path(), vision);
    let overrides = small_run(&bundle, &train, None);
    Setup {
        dir,
        train,
        bundle,
        overrides,
    }
}

/// The asset cache (`MIRAGE_ASSETS`, else `$MIRAGE_CACHE/assets`, else `~/.cache/mirage/assets`).
pub fn assets_dir() -> PathBuf {
    std::env::var_os("MIRAGE_ASSETS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("MIRAGE_CACHE").map(|c| PathBuf::from(c).join("assets")))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/mirage/assets")
        })
}

/// Whether ONNX Runtime's library was fetched (`scripts/fetch-assets.sh`); under CI it must be.
pub fn ort_library_present() -> bool {
    let lib = assets_dir().join("onnxruntime/libonnxruntime.so");
    if lib.exists() {
        return true;
    }
    mirage_model::testing::skip_or_fail(&format!(
        "ONNX Runtime parity: missing {} — run scripts/fetch-assets.sh",
        lib.display()
    ));
    false
}
