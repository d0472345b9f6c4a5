//! Settings of `mirage serve`. Precedence, lowest to highest: built-in defaults → the TOML file
//! given by `--config` → `MIRAGE_*` environment variables → command-line flags. Every setting
//! has all three forms; `mirage serve --help` lists them.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mirage_model::{DeviceChoice, EngineChoice, EngineOptions};
use serde::{Deserialize, Serialize};

fn parse_engine(s: &str) -> Result<EngineChoice, mirage_model::Error> {
    s.parse()
}

fn parse_device(s: &str) -> Result<DeviceChoice, mirage_model::Error> {
    s.parse()
}

/// Engine selection shared by every command that runs the model (`embed`, `classify`,
/// `index build`, `search`, `eval`); `mirage serve` has the same settings in [`Settings`].
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Inference engine: auto (ONNX Runtime when its library loads, else candle), ort, candle.
    #[arg(long, env = "MIRAGE_ENGINE", default_value = "auto", value_parser = parse_engine)]
    pub engine: EngineChoice,
    /// Device: cpu, or cuda (ONNX Runtime's CUDA execution provider; needs onnxruntime-gpu).
    #[arg(long, env = "MIRAGE_DEVICE", default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceChoice,
    /// Threads per forward pass, 0..=1024 (0 = all cores).
    #[arg(long, env = "MIRAGE_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// libonnxruntime.so to load (default: ORT_DYLIB_PATH, the asset cache, lib/ beside the
    /// binary, system folders).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_library: Option<PathBuf>,
}

impl EngineArgs {
    /// The model crate's options.
    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            engine: self.engine,
            device: self.device,
            threads: self.threads,
            ort_library: self
                .ort_library
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
        }
    }

    /// Opens the bundle in `dir` on the chosen engine.
    pub fn load(&self, dir: &std::path::Path) -> Result<mirage_model::MirageModel> {
        mirage_model::MirageModel::open(dir, &self.options())
            .with_context(|| format!("loading bundle {}", dir.display()))
    }
}

/// A secret whose `Debug` and `Serialize` never show it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers; the Docker image's default).
    Json,
}

/// The effective settings of the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 = any free port; the chosen one is logged and printed).
    pub port: u16,
    /// Model bundle directory.
    pub bundle: PathBuf,
    /// Default store for collections: `embedded:DIR` or `qdrant:URL`.
    pub store: String,
    /// A Qdrant gRPC URL that `PUT /v1/collections/{name}` may choose with `"store": "qdrant"`
    /// when the default store is embedded.
    pub qdrant_url: Option<String>,
    /// Where the server keeps its own per-collection settings (`collections.json`).
    pub data_dir: PathBuf,
    /// Largest request body, bytes (413 above).
    pub max_body_bytes: usize,
    /// Most texts/images one request may carry (422 above).
    pub max_inputs_per_request: usize,
    /// Items waiting for or in inference across all requests (429 above).
    pub max_queue_items: usize,
    /// Most items in one forward pass; concurrent requests are batched together up to this.
    pub batch_size: usize,
    /// Requests running longer are answered 503.
    pub request_timeout_secs: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout_secs: u64,
    /// API keys with read scope (embed, classify, search, rag, audit, collection info).
    pub api_keys: Vec<Secret>,
    /// API keys with admin scope (everything, including collection and item writes).
    pub admin_keys: Vec<Secret>,
    /// Origins allowed by CORS (`*` for any); none = no CORS headers.
    pub cors_origins: Vec<String>,
    /// Default RAG abstention bound: below this best score `/v1/rag/context` abstains. A
    /// collection (at creation) or a request can set its own.
    pub rag_min_score: f32,
    /// Default audit flag bound: pairs whose matching score s is below it are flagged.
    pub audit_threshold: f32,
    /// Log format.
    pub log_format: LogFormat,
    /// Folder the indexed image references resolve under, for `GET /v1/media` thumbnails (the
    /// web page's result images); none serves no images.
    pub media_root: Option<PathBuf>,
    /// Inference engine: `auto` (ONNX Runtime when its library loads, else candle), `ort`,
    /// `candle`.
    pub engine: EngineChoice,
    /// `cpu`, or `cuda` (ONNX Runtime's CUDA execution provider).
    pub device: DeviceChoice,
    /// Threads per forward pass (0 = all cores).
    pub threads: usize,
    /// libonnxruntime.so to load (default: searched, see `mirage serve --help`).
    pub ort_library: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            bundle: PathBuf::new(),
            store: "embedded:./indexes".into(),
            qdrant_url: None,
            data_dir: PathBuf::from("./mirage-data"),
            max_body_bytes: 32 << 20,
            max_inputs_per_request: 256,
            max_queue_items: 1024,
            batch_size: 32,
            request_timeout_secs: 60,
            shutdown_timeout_secs: 30,
            api_keys: Vec::new(),
            admin_keys: Vec::new(),
            cors_origins: Vec::new(),
            rag_min_score: 0.2,
            audit_threshold: 0.5,
            log_format: LogFormat::Text,
            media_root: None,
            engine: EngineChoice::Auto,
            device: DeviceChoice::Cpu,
            threads: 0,
            ort_library: None,
        }
    }
}

impl Settings {
    /// Every problem at once.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.bundle.as_os_str().is_empty() {
            problems.push(
                "bundle is required (--bundle, MIRAGE_BUNDLE or `bundle` in the config file)"
                    .to_owned(),
            );
        }
        for (name, v) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_inputs_per_request", self.max_inputs_per_request),
            ("max_queue_items", self.max_queue_items),
            ("batch_size", self.batch_size),
        ] {
            if v == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        if self.max_inputs_per_request > self.max_queue_items {
            problems.push(format!(
                "max_inputs_per_request ({}) cannot exceed max_queue_items ({}): such a request could never be queued",
                self.max_inputs_per_request, self.max_queue_items
            ));
        }
        if self.threads > mirage_model::engine::MAX_THREADS {
            problems.push(format!(
                "threads {} is out of range 0..={} (0 = all cores)",
                self.threads,
                mirage_model::engine::MAX_THREADS
            ));
        }
        if self.request_timeout_secs == 0 {
            problems.push("request_timeout_secs must be at least 1".into());
        }
        if let Err(e) = self.store.parse::<mirage_index::StoreSpec>() {
            problems.push(format!("store: {e}"));
        }
        if let Some(url) = &self.qdrant_url {
            if let Err(e) = format!("qdrant:{url}").parse::<mirage_index::StoreSpec>() {
                problems.push(format!("qdrant_url: {e}"));
            }
        }
        if !(-1.0..=1.0).contains(&self.rag_min_score) {
            problems.push(format!(
                "rag_min_score {} must be in [-1, 1]",
                self.rag_min_score
            ));
        }
        if !(-1.0..=1.0).contains(&self.audit_threshold) {
            problems.push(format!(
                "audit_threshold {} must be in [-1, 1]",
                self.audit_threshold
            ));
        }
        if self
            .api_keys
            .iter()
            .chain(&self.admin_keys)
            .any(|k| k.0.trim().is_empty())
        {
            problems.push("API keys must not be empty".into());
        }
        if let Some(root) = &self.media_root {
            if !root.is_dir() {
                problems.push(format!("media_root {} is not a directory", root.display()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("invalid settings:\n  - {}", problems.join("\n  - "))
        }
    }

    /// The model crate's engine options.
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            engine: self.engine,
            device: self.device,
            threads: self.threads,
            ort_library: self.ort_library.clone(),
        }
    }

    /// Whether any key is configured (otherwise the API is open).
    pub fn auth_enabled(&self) -> bool {
        !(self.api_keys.is_empty() && self.admin_keys.is_empty())
    }
}

/// `mirage serve` flags; each also reads a `MIRAGE_*` variable. Unset flags leave the file's (or
/// the default) value.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys); unknown keys are errors.
    #[arg(long, env = "MIRAGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to bind [default: 127.0.0.1].
    #[arg(long, env = "MIRAGE_HOST")]
    pub host: Option<String>,
    /// Port [default: 8080; 0 picks a free one].
    #[arg(long, env = "MIRAGE_PORT")]
    pub port: Option<u16>,
    /// Model bundle directory.
    #[arg(long, env = "MIRAGE_BUNDLE")]
    pub bundle: Option<PathBuf>,
    /// Default store: embedded:DIR or qdrant:URL [default: embedded:./indexes].
    #[arg(long, env = "MIRAGE_STORE")]
    pub store: Option<String>,
    /// Qdrant gRPC URL offered as a second store to collection creation.
    #[arg(long, env = "MIRAGE_QDRANT_URL")]
    pub qdrant_url: Option<String>,
    /// Directory for the server's own per-collection settings [default: ./mirage-data].
    #[arg(long, env = "MIRAGE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Largest request body in bytes [default: 33554432].
    #[arg(long, env = "MIRAGE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most inputs per request [default: 256].
    #[arg(long, env = "MIRAGE_MAX_INPUTS_PER_REQUEST")]
    pub max_inputs_per_request: Option<usize>,
    /// Inference queue capacity in items; above it requests get 429 [default: 1024].
    #[arg(long, env = "MIRAGE_MAX_QUEUE_ITEMS")]
    pub max_queue_items: Option<usize>,
    /// Most items per forward pass [default: 32].
    #[arg(long, env = "MIRAGE_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// Request timeout in seconds [default: 60].
    #[arg(long, env = "MIRAGE_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Seconds shutdown waits for in-flight requests [default: 30].
    #[arg(long, env = "MIRAGE_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// Read-scope API keys, comma-separated.
    #[arg(
        long,
        env = "MIRAGE_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Option<Vec<String>>,
    /// Admin-scope API keys, comma-separated.
    #[arg(
        long,
        env = "MIRAGE_ADMIN_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_keys: Option<Vec<String>>,
    /// CORS origins, comma-separated (`*` for any).
    #[arg(long, env = "MIRAGE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Default RAG abstention bound on the best score [default: 0.2].
    #[arg(long, env = "MIRAGE_RAG_MIN_SCORE", allow_hyphen_values = true)]
    pub rag_min_score: Option<f32>,
    /// Default audit flag bound on the matching score s [default: 0.5].
    #[arg(long, env = "MIRAGE_AUDIT_THRESHOLD", allow_hyphen_values = true)]
    pub audit_threshold: Option<f32>,
    /// Log format [default: text].
    #[arg(long, env = "MIRAGE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Image root of the indexed corpora, for result thumbnails (`GET /v1/media`).
    #[arg(long, env = "MIRAGE_MEDIA_ROOT")]
    pub media_root: Option<PathBuf>,
    /// Inference engine: auto, ort, candle [default: auto].
    #[arg(long, env = "MIRAGE_ENGINE", value_parser = parse_engine)]
    pub engine: Option<EngineChoice>,
    /// Device: cpu, cuda [default: cpu].
    #[arg(long, env = "MIRAGE_DEVICE", value_parser = parse_device)]
    pub device: Option<DeviceChoice>,
    /// Threads per forward pass, 0..=1024 [default: 0 = all cores].
    #[arg(long, env = "MIRAGE_THREADS")]
    pub threads: Option<usize>,
    /// libonnxruntime.so to load [default: ORT_DYLIB_PATH, the asset cache, lib/ beside the
    /// binary, system folders].
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_library: Option<PathBuf>,
}

impl ServeArgs {
    /// Defaults, then the file, then env and flags (clap has already put env under flags).
    pub fn resolve(self) -> Result<Settings> {
        let mut s = match &self.config {
            Some(path) => {
                let text = fs_err::read_to_string(path)?;
                toml::from_str::<Settings>(&text)
                    .with_context(|| format!("config file {}", path.display()))?
            }
            None => Settings::default(),
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { s.$f = v; } )* };
        }
        over!(
            host,
            port,
            bundle,
            store,
            data_dir,
            max_body_bytes,
            max_inputs_per_request,
            max_queue_items,
            batch_size,
            request_timeout_secs,
            shutdown_timeout_secs,
            cors_origins,
            rag_min_score,
            audit_threshold,
            log_format,
            engine,
            device,
            threads
        );
        // An empty variable (as compose files pass unset options) means "not set".
        if let Some(root) = self.media_root.filter(|r| !r.as_os_str().is_empty()) {
            s.media_root = Some(root);
        }
        if let Some(lib) = self.ort_library.filter(|p| !p.as_os_str().is_empty()) {
            s.ort_library = Some(lib);
        }
        if let Some(url) = self.qdrant_url.filter(|u| !u.is_empty()) {
            s.qdrant_url = Some(url);
        }
        s.cors_origins.retain(|o| !o.trim().is_empty());
        let keys = |v: Vec<String>| {
            v.into_iter()
                .filter(|k| !k.is_empty())
                .map(Secret)
                .collect()
        };
        if let Some(k) = self.api_keys {
            s.api_keys = keys(k);
        }
        if let Some(k) = self.admin_keys {
            s.admin_keys = keys(k);
        }
        s.validate()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_secrets_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mirage.toml");
        std::fs::write(
            &file,
            "bundle = \"/b\"\nport = 9000\nbatch_size = 8\napi_keys = [\"s3cret\"]\n",
        )
        .unwrap();
        let s = ServeArgs {
            config: Some(file),
            port: Some(9100),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!((s.port, s.batch_size), (9100, 8));
        assert_eq!(s.bundle, PathBuf::from("/b"));
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(!serde_json::to_string(&s).unwrap().contains("s3cret"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported_together() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "bundel = \"/b\"\n").unwrap();
        let e = ServeArgs {
            config: Some(file),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `bundel`"), "{e:#}");
        let e = ServeArgs {
            bundle: Some("/b".into()),
            batch_size: Some(0),
            store: Some("s3:bucket".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("batch_size") && e.contains("store"), "{e}");
    }
}
