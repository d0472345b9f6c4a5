//! Reading, validating and writing a model bundle directory (docs/DESIGN.md §2).

#[cfg(feature = "candle")]
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[cfg(feature = "candle")]
use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use crate::config::{
    BundleConfig, Calibration, BUNDLE_JSON, FORMAT_VERSION, MODEL_SAFETENSORS, TEXT_BANK_JSONL,
    TEXT_BANK_SAFETENSORS, TOKENIZER_JSON,
};
use crate::embeddings::Embeddings;
use crate::names::{self, TensorSpec};
use crate::weights::{read_safetensors, HostWeights};
use crate::{Error, Result};

/// A bundle whose files exist, match their checksums and hold every tensor the architecture needs.
pub struct Bundle {
    dir: PathBuf,
    config: BundleConfig,
    /// sha256 of `bundle.json` itself: what indexes record to recognise the exact model.
    sha256: String,
    /// The verified bytes of `model.safetensors`, kept from `open` so that loading the weights
    /// right after does not read and hash hundreds of megabytes a second time.
    verified_weights: std::sync::Mutex<Option<Vec<u8>>>,
    /// The verified bytes of the ONNX graphs, by file name, kept for the engine that loads next.
    verified_graphs: std::sync::Mutex<HashMap<String, Vec<u8>>>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("dir", &self.dir)
            .field("model_id", &self.config.model_id)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// The memory bank exported with a bundle.
#[derive(Debug)]
pub struct TextBank {
    /// K unit rows of the joint dimension.
    pub embeddings: Embeddings,
    /// The caption of each row.
    pub captions: Vec<String>,
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

impl Bundle {
    /// Opens and fully validates the bundle in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let json_path = dir.join(BUNDLE_JSON);
        let raw = read(&json_path)?;
        let sha256 = sha256_hex(&raw);
        // Look at the version before the strict parse so an old or future bundle says so instead
        // of failing on a field this build does not know.
        let loose: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|source| Error::Json {
                path: json_path.clone(),
                source,
            })?;
        let found = loose
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| {
                Error::InvalidConfig(format!("{}: no format_version", json_path.display()))
            })?;
        if found != u64::from(FORMAT_VERSION) {
            return Err(Error::UnsupportedFormatVersion {
                path: json_path,
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        let config: BundleConfig = serde_json::from_value(loose).map_err(|source| Error::Json {
            path: json_path.clone(),
            source,
        })?;
        config.validate()?;
        for required in [MODEL_SAFETENSORS, TOKENIZER_JSON] {
            if !config.files.contains_key(required) {
                return Err(Error::InvalidConfig(format!(
                    "{}: `files` does not list {required}",
                    json_path.display()
                )));
            }
        }
        if config.files.contains_key(TEXT_BANK_SAFETENSORS)
            != config.files.contains_key(TEXT_BANK_JSONL)
        {
            return Err(Error::InvalidConfig(format!(
                "{}: {TEXT_BANK_SAFETENSORS} and {TEXT_BANK_JSONL} come together",
                json_path.display()
            )));
        }
        let graph_files: Vec<String> = config
            .onnx
            .iter()
            .flat_map(|o| [o.text.file.clone(), o.vision.file.clone()])
            .collect();
        for listed in config.files.keys().filter(|f| f.ends_with(".onnx")) {
            if !graph_files.contains(listed) {
                return Err(Error::InvalidConfig(format!(
                    "{}: `files` lists {listed} but `onnx` does not describe it",
                    json_path.display()
                )));
            }
        }
        for file in &graph_files {
            if !config.files.contains_key(file) {
                return Err(Error::InvalidConfig(format!(
                    "{}: `onnx` names {file} but `files` does not list it (no checksum)",
                    json_path.display()
                )));
            }
        }
        // Indexes record the model's identity; graphs or a calibration added later must not
        // change it.
        let sha256 = match (&config.onnx, &config.model_sha256) {
            (Some(o), _) => o.model_sha256.clone(),
            (None, Some(id)) => id.clone(),
            (None, None) => sha256,
        };
        let bundle = Self {
            dir,
            config,
            sha256,
            verified_weights: std::sync::Mutex::new(None),
            verified_graphs: std::sync::Mutex::new(HashMap::new()),
        };
        for (name, expected) in &bundle.config.files {
            let bytes = bundle.read_checked(name, expected)?;
            if name == MODEL_SAFETENSORS {
                check_tensors(
                    &bundle.dir.join(name),
                    &bytes,
                    &names::model_tensors(&bundle.config.architecture),
                )?;
                *bundle.weights_slot() = Some(bytes);
            } else if graph_files.contains(name) {
                bundle.check_graph(name, &bytes)?;
                bundle.graphs_slot().insert(name.clone(), bytes);
            }
        }
        Ok(bundle)
    }

    fn graphs_slot(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.verified_graphs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check_graph(&self, file: &str, bytes: &[u8]) -> Result<()> {
        let onnx = self
            .config
            .onnx
            .as_ref()
            .expect("only called for graphs `onnx` describes — this is a bug");
        let expected = crate::onnx::specs(&self.config, &onnx.model_sha256);
        let (recorded, needed) = if onnx.text.file == file {
            (&onnx.text, &expected.text)
        } else {
            (&onnx.vision, &expected.vision)
        };
        crate::onnx::check(&self.dir.join(file), bytes, recorded, onnx.opset, needed)?;
        Ok(())
    }

    /// The bytes of both ONNX graphs (text, vision) when the bundle carries them, verified
    /// against their checksums and `bundle.json`.
    pub fn onnx_graphs(&self) -> Result<Option<crate::onnx::TowerGraphs>> {
        let Some(onnx) = &self.config.onnx else {
            return Ok(None);
        };
        let get = |file: &str| -> Result<Vec<u8>> {
            if let Some(b) = self.graphs_slot().remove(file) {
                return Ok(b);
            }
            let bytes = self.read_checked(file, &self.config.files[file])?;
            self.check_graph(file, &bytes)?;
            Ok(bytes)
        };
        Ok(Some(crate::onnx::TowerGraphs {
            text: get(&onnx.text.file)?,
            vision: get(&onnx.vision.file)?,
        }))
    }

    fn weights_slot(&self) -> std::sync::MutexGuard<'_, Option<Vec<u8>>> {
        // A poisoned lock only means another thread panicked mid-take; the slot is still valid.
        self.verified_weights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_checked(&self, name: &str, expected: &str) -> Result<Vec<u8>> {
        let path = self.dir.join(name);
        let bytes = read(&path)?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(Error::ChecksumMismatch {
                path,
                expected: expected.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `bundle.json`.
    pub fn config(&self) -> &BundleConfig {
        &self.config
    }

    /// The model's identity: sha256 of `bundle.json` (which pins every other file through its
    /// checksums) as it was before ONNX graphs or a fitted calibration were added, if they were.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Path of `tokenizer.json`.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(TOKENIZER_JSON)
    }

    /// Every tensor of `model.safetensors` as f32 on the host.
    pub fn load_weights(&self) -> Result<HostWeights> {
        // The first load uses the bytes `open` verified; later loads read and verify again.
        let kept = self.weights_slot().take();
        let bytes = match kept {
            Some(b) => b,
            None => self.read_checked(MODEL_SAFETENSORS, &self.config.files[MODEL_SAFETENSORS])?,
        };
        read_safetensors(&self.dir.join(MODEL_SAFETENSORS), &bytes)
    }

    /// Every tensor of `model.safetensors` onto `device` as f32 candle tensors.
    #[cfg(feature = "candle")]
    pub fn load_tensors(&self, device: &Device) -> Result<HashMap<String, Tensor>> {
        crate::weights::to_candle(self.load_weights()?, device)
    }

    /// The exported memory bank, when the bundle has one.
    pub fn text_bank(&self) -> Result<Option<TextBank>> {
        let Some(sha) = self.config.files.get(TEXT_BANK_SAFETENSORS) else {
            return Ok(None);
        };
        let path = self.dir.join(TEXT_BANK_SAFETENSORS);
        let bytes = self.read_checked(TEXT_BANK_SAFETENSORS, sha)?;
        let mut map = read_safetensors(&path, &bytes)?;
        let embeddings = map
            .remove(names::TEXT_BANK)
            .ok_or_else(|| Error::MissingTensor {
                path: path.clone(),
                name: names::TEXT_BANK.into(),
                expected: vec![0, self.config.architecture.embed_dim],
            })?;
        let dims = embeddings.dims().to_vec();
        if dims.len() != 2 || dims[1] != self.config.architecture.embed_dim {
            return Err(Error::TensorShape {
                path,
                name: names::TEXT_BANK.into(),
                expected: vec![
                    dims.first().copied().unwrap_or(0),
                    self.config.architecture.embed_dim,
                ],
                actual: dims,
            });
        }
        let jsonl_path = self.dir.join(TEXT_BANK_JSONL);
        let text = self.read_checked(TEXT_BANK_JSONL, &self.config.files[TEXT_BANK_JSONL])?;
        let text = String::from_utf8(text).map_err(|e| {
            Error::InvalidConfig(format!("{}: not UTF-8: {e}", jsonl_path.display()))
        })?;
        let captions = text
            .lines()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str::<String>(line).map_err(|source| Error::Json {
                    path: jsonl_path.join(format!("line {}", i + 1)),
                    source,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if captions.len() != dims[0] {
            return Err(Error::InvalidConfig(format!(
                "{}: {} captions for {} bank rows",
                jsonl_path.display(),
                captions.len(),
                dims[0]
            )));
        }
        Ok(Some(TextBank {
            embeddings: Embeddings::new(
                embeddings.data().to_vec(),
                self.config.architecture.embed_dim,
            )?,
            captions,
        }))
    }
}

/// Checks that `bytes` is a safetensors file holding every tensor of `specs` with its shape.
pub(crate) fn check_tensors(path: &Path, bytes: &[u8], specs: &[TensorSpec]) -> Result<()> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    for spec in specs {
        let view = st.tensor(&spec.name).map_err(|_| Error::MissingTensor {
            path: path.to_path_buf(),
            name: spec.name.clone(),
            expected: spec.shape.clone(),
        })?;
        if view.shape() != spec.shape.as_slice() {
            return Err(Error::TensorShape {
                path: path.to_path_buf(),
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                actual: view.shape().to_vec(),
            });
        }
        use safetensors::Dtype;
        if !matches!(
            view.dtype(),
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
        ) {
            return Err(Error::TensorDtype {
                path: path.to_path_buf(),
                name: spec.name.clone(),
                dtype: format!("{:?}", view.dtype()),
            });
        }
    }
    Ok(())
}

/// What a writer supplies; checksums and the file list are filled in by [`write_bundle`].
#[cfg(feature = "candle")]
#[derive(Debug)]
pub struct BundleContents<'a> {
    /// `bundle.json` without `files` (any value there is replaced).
    pub config: BundleConfig,
    /// Every tensor of the scheme (extra tensors are refused).
    pub tensors: &'a HashMap<String, Tensor>,
    /// The `tokenizer.json` bytes.
    pub tokenizer_json: &'a [u8],
    /// Optional memory bank with its captions.
    pub text_bank: Option<&'a TextBank>,
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    // Write beside and rename so a crash never leaves a half-written file under the real name.
    let tmp = path.with_extension("partial");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes a bundle to `dir` (created if needed). `bundle.json` is written last, so a directory
/// with a `bundle.json` is always complete.
#[cfg(feature = "candle")]
pub fn write_bundle(dir: &Path, contents: BundleContents<'_>) -> Result<Bundle> {
    let BundleContents {
        mut config,
        tensors,
        tokenizer_json,
        text_bank,
    } = contents;
    config.format_version = FORMAT_VERSION;
    // Graphs describe weights; new weights need new graphs (`add_onnx`) and are a new model.
    config.onnx = None;
    config.model_sha256 = None;
    config.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let specs = names::model_tensors(&config.architecture);
    let known: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    if let Some(extra) = tensors.keys().find(|k| !known.contains(k.as_str())) {
        return Err(Error::InvalidConfig(format!(
            "tensor `{extra}` is not part of the architecture's tensor scheme"
        )));
    }
    let ordered: BTreeMap<&String, Tensor> = tensors
        .iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let model_bytes = serialize(&ordered)?;
    let model_path = dir.join(MODEL_SAFETENSORS);
    check_tensors(&model_path, &model_bytes, &specs)?;

    let mut files = BTreeMap::new();
    write_file(&model_path, &model_bytes)?;
    files.insert(MODEL_SAFETENSORS.to_owned(), sha256_hex(&model_bytes));
    // Validate the tokenizer before writing it so a bad one never lands in a bundle.
    tokenizers::Tokenizer::from_bytes(tokenizer_json)
        .map_err(|e| Error::Tokenizer(format!("tokenizer.json is not valid: {e}")))?;
    write_file(&dir.join(TOKENIZER_JSON), tokenizer_json)?;
    files.insert(TOKENIZER_JSON.to_owned(), sha256_hex(tokenizer_json));

    if let Some(bank) = text_bank {
        let dims = [bank.embeddings.len(), bank.embeddings.dim()];
        if dims[1] != config.architecture.embed_dim || dims[0] != bank.captions.len() {
            return Err(Error::InvalidConfig(format!(
                "text bank of shape {dims:?} with {} captions does not fit embed_dim {}",
                bank.captions.len(),
                config.architecture.embed_dim
            )));
        }
        let name = names::TEXT_BANK.to_owned();
        let mut one = BTreeMap::new();
        one.insert(
            &name,
            Tensor::from_slice(bank.embeddings.as_slice(), (dims[0], dims[1]), &Device::Cpu)?,
        );
        let bank_bytes = serialize(&one)?;
        write_file(&dir.join(TEXT_BANK_SAFETENSORS), &bank_bytes)?;
        files.insert(TEXT_BANK_SAFETENSORS.to_owned(), sha256_hex(&bank_bytes));
        let mut jsonl = String::new();
        for c in &bank.captions {
            jsonl.push_str(
                &serde_json::to_string(c).expect("a string always serialises — this is a bug"),
            );
            jsonl.push('\n');
        }
        write_file(&dir.join(TEXT_BANK_JSONL), jsonl.as_bytes())?;
        files.insert(TEXT_BANK_JSONL.to_owned(), sha256_hex(jsonl.as_bytes()));
    }

    config.files = files;
    let json =
        serde_json::to_vec_pretty(&config).expect("bundle config serialises — this is a bug");
    write_file(&dir.join(BUNDLE_JSON), &json)?;
    Bundle::open(dir)
}

/// Writes ONNX graphs of both towers (`text.onnx`, `vision.onnx`), built from the bundle's own
/// tensors, into the bundle in `dir` and records them in `bundle.json` (replacing graphs it may
/// already have). The model's identity (`Bundle::sha256`) does not change.
pub fn add_onnx(dir: &Path) -> Result<Bundle> {
    let bundle = Bundle::open(dir)?;
    let weights = bundle.load_weights()?;
    let mut config = bundle.config().clone();
    let graphs = crate::onnx::build(&config, &weights)?;
    let specs = crate::onnx::specs(&config, bundle.sha256());
    write_file(&dir.join(&specs.text.file), &graphs.text)?;
    write_file(&dir.join(&specs.vision.file), &graphs.vision)?;
    config.files.retain(|name, _| !name.ends_with(".onnx"));
    config
        .files
        .insert(specs.text.file.clone(), sha256_hex(&graphs.text));
    config
        .files
        .insert(specs.vision.file.clone(), sha256_hex(&graphs.vision));
    config.onnx = Some(specs);
    let json =
        serde_json::to_vec_pretty(&config).expect("bundle config serialises — this is a bug");
    write_file(&dir.join(BUNDLE_JSON), &json)?;
    Bundle::open(dir)
}

/// Writes a copy of `bundle` into `dir` (a new directory) with `calibration` in `bundle.json`:
/// every listed file is copied (and checked against its checksum on the way), the model's
/// identity ([`Bundle::sha256`]) and id stay those of `bundle`, so collections built with it
/// serve the calibrated copy.
///
/// # Errors
///
/// `dir` exists and is not empty, the calibration is invalid, or a file cannot be copied.
pub fn write_calibrated(bundle: &Bundle, dir: &Path, calibration: Calibration) -> Result<Bundle> {
    let occupied = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        return Err(Error::InvalidInput(format!(
            "{} is not empty; a calibrated bundle is written into a new folder",
            dir.display()
        )));
    }
    let mut config = bundle.config().clone();
    config.calibration = Some(calibration);
    if config.onnx.is_none() {
        config.model_sha256 = Some(bundle.sha256().to_owned());
    }
    config.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, expected) in &config.files {
        let bytes = bundle.read_checked(name, expected)?;
        write_file(&dir.join(name), &bytes)?;
    }
    let json =
        serde_json::to_vec_pretty(&config).expect("bundle config serialises — this is a bug");
    write_file(&dir.join(BUNDLE_JSON), &json)?;
    Bundle::open(dir)
}

#[cfg(feature = "candle")]
fn serialize(tensors: &BTreeMap<&String, Tensor>) -> Result<Vec<u8>> {
    let data: Vec<(&String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| {
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Ok((*k, bytes, t.dims().to_vec()))
        })
        .collect::<Result<_>>()?;
    let views: Vec<(&String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(k, bytes, shape)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .expect("shape and byte length agree — this is a bug");
            (*k, view)
        })
        .collect();
    safetensors::serialize(views, None).map_err(|e| Error::Safetensors {
        path: PathBuf::from(MODEL_SAFETENSORS),
        reason: e.to_string(),
    })
}
