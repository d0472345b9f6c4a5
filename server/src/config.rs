//! Command-line settings: the engine choice every model command shares, and `mirage serve`'s
//! settings. Those have one type ([`Settings`]) and four layers, lowest to highest: built-in
//! defaults → the TOML file given by `--config` → `MIRAGE_*` environment variables →
//! command-line flags. Every setting has all three forms; `mirage serve --help` lists them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, FromArgMatches, ValueEnum};
use mirage_model::{DeviceChoice, EngineChoice, EngineOptions};
use serde::{Deserialize, Serialize};

fn parse_engine(s: &str) -> Result<EngineChoice, mirage_model::Error> {
    s.parse()
}

fn parse_device(s: &str) -> Result<DeviceChoice, mirage_model::Error> {
    s.parse()
}

/// A path as given. Unlike clap's own path parser it takes an empty value (what compose passes
/// for an unset variable), which means "not set".
fn any_path(s: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(s))
}

/// Engine selection shared by every command that runs the model (`embed`, `classify`,
/// `index build`, `search`, `eval`); `mirage serve` has the same settings in [`Settings`].
#[derive(Args, Debug, Clone, Serialize)]
pub struct EngineArgs {
    /// Inference engine: auto (ONNX Runtime when its library loads, else candle where the build
    /// has it, as the `mirage` binary does), ort, candle.
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
    #[arg(long, env = "ORT_DYLIB_PATH", value_parser = any_path)]
    pub ort_library: Option<PathBuf>,
    /// The asset cache scripts/fetch-assets.sh fills (ONNX Runtime is looked for in its
    /// onnxruntime/; default: $MIRAGE_CACHE/assets, else ~/.cache/mirage/assets).
    #[arg(long, env = "MIRAGE_ASSETS", value_parser = any_path)]
    pub assets: Option<PathBuf>,
}

/// The asset cache when `--assets`/`MIRAGE_ASSETS` is not given: `$MIRAGE_CACHE/assets`, else
/// `~/.cache/mirage/assets` (where scripts/fetch-assets.sh puts the ONNX Runtime library and
/// the radlabels package).
pub fn default_assets_dir() -> Option<PathBuf> {
    std::env::var_os("MIRAGE_CACHE")
        .map(|c| PathBuf::from(c).join("assets"))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mirage/assets")))
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
            assets: self
                .assets
                .clone()
                .filter(|p| !p.as_os_str().is_empty())
                .or_else(default_assets_dir),
        }
    }

    /// Opens the bundle in `dir` on the chosen engine.
    pub fn load(&self, dir: &std::path::Path) -> Result<mirage_model::MirageModel> {
        Ok(self.open(dir)?.1)
    }

    /// Opens the bundle in `dir` (validated once) and loads it on the chosen engine, for
    /// commands that need the bundle's other files too (the text bank).
    pub fn open(
        &self,
        dir: &std::path::Path,
    ) -> Result<(mirage_model::Bundle, mirage_model::MirageModel)> {
        let loading = || format!("loading bundle {}", dir.display());
        let bundle = mirage_model::Bundle::open(dir).with_context(loading)?;
        let model =
            mirage_model::MirageModel::load(&bundle, &self.options()).with_context(loading)?;
        Ok((bundle, model))
    }
}

/// A secret whose `Debug` and `Serialize` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

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

/// The settings of `mirage serve`, one type for the flags, the `MIRAGE_*` variables and the
/// TOML file (its keys are the field names). The defaults are the ones written on the fields;
/// a config file's values are installed as the arguments' defaults ([`FileLayer`]), so clap
/// applies the whole precedence and `--help` shows the values in effect.
#[derive(Args, Debug, Clone, Serialize)]
pub struct Settings {
    /// TOML file with any of the settings below (snake_case keys); unknown keys are errors.
    #[arg(long, env = "MIRAGE_CONFIG", value_parser = any_path)]
    pub config: Option<PathBuf>,
    /// Address to bind.
    #[arg(long, env = "MIRAGE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind (0 picks a free one; the chosen one is logged and printed).
    #[arg(long, env = "MIRAGE_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Model bundle directory (required); repeat the flag (or separate with commas) to serve
    /// several models, the first being the default for requests that name none.
    #[arg(
        long,
        env = "MIRAGE_BUNDLE",
        value_delimiter = ',',
        value_parser = any_path
    )]
    pub bundle: Vec<PathBuf>,
    /// Folder `POST /v1/models` may load bundles from (paths relative to it); none disables
    /// loading models at run time.
    #[arg(long, env = "MIRAGE_MODELS_DIR", value_parser = any_path)]
    pub models_dir: Option<PathBuf>,
    /// Default store for collections: `embedded:DIR` or `qdrant:URL` (gRPC).
    #[arg(long, env = "MIRAGE_STORE", default_value = "embedded:./indexes")]
    pub store: String,
    /// A Qdrant gRPC URL that `PUT /v1/collections/{name}` may choose with `"store": "qdrant"`
    /// when the default store is embedded.
    #[arg(long, env = "MIRAGE_QDRANT_URL")]
    pub qdrant_url: Option<String>,
    /// API key of the Qdrant store(s), if the server wants one.
    #[arg(long, env = "MIRAGE_QDRANT_API_KEY", hide_env_values = true)]
    pub qdrant_api_key: Option<Secret>,
    /// Qdrant's REST URL (http or https), through which snapshots of Qdrant collections are
    /// downloaded and uploaded (default: the gRPC URL's host on port 6333 when its port is 6334).
    #[arg(long, env = "MIRAGE_QDRANT_REST_URL")]
    pub qdrant_rest_url: Option<String>,
    /// Where the server keeps its own per-collection settings (`collections.json`) and the
    /// snapshot archives it writes (`snapshots/`).
    #[arg(
        long,
        env = "MIRAGE_DATA_DIR",
        default_value = "./mirage-data",
        value_parser = any_path
    )]
    pub data_dir: PathBuf,
    /// Largest request body, bytes (413 above).
    #[arg(long, env = "MIRAGE_MAX_BODY_BYTES", default_value_t = 32 << 20)]
    pub max_body_bytes: usize,
    /// Most texts/images one request may carry (422 above).
    #[arg(long, env = "MIRAGE_MAX_INPUTS_PER_REQUEST", default_value_t = 256)]
    pub max_inputs_per_request: usize,
    /// Items waiting for or in inference across all requests (429 above).
    #[arg(long, env = "MIRAGE_MAX_QUEUE_ITEMS", default_value_t = 1024)]
    pub max_queue_items: usize,
    /// Most items in one forward pass; concurrent requests are batched together up to this.
    #[arg(long, env = "MIRAGE_BATCH_SIZE", default_value_t = 32)]
    pub batch_size: usize,
    /// Requests running longer are answered 503.
    #[arg(long, env = "MIRAGE_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,
    /// How long shutdown waits for in-flight requests, seconds.
    #[arg(long, env = "MIRAGE_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
    /// API keys with read scope (embed, classify, search, rag, audit, collection info),
    /// comma-separated.
    #[arg(
        long,
        env = "MIRAGE_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<Secret>,
    /// API keys with admin scope (everything, including collection and item writes),
    /// comma-separated.
    #[arg(
        long,
        env = "MIRAGE_ADMIN_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_keys: Vec<Secret>,
    /// Origins allowed by CORS, comma-separated (`*` for any); none = no CORS headers.
    #[arg(long, env = "MIRAGE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Default RAG abstention bound: below this best score `/v1/rag/context` abstains. A
    /// collection (at creation) or a request can set its own.
    #[arg(
        long,
        env = "MIRAGE_RAG_MIN_SCORE",
        default_value_t = mirage_index::rag::RagOptions::default().min_score,
        allow_hyphen_values = true
    )]
    pub rag_min_score: f32,
    /// Default audit flag bound: pairs whose matching score s is below it are flagged.
    #[arg(
        long,
        env = "MIRAGE_AUDIT_THRESHOLD",
        default_value_t = mirage_model::matching::DEFAULT_AUDIT_THRESHOLD,
        allow_hyphen_values = true
    )]
    pub audit_threshold: f32,
    /// Log format.
    #[arg(long, env = "MIRAGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Export traces (request, inference-queue and store spans) over OTLP/HTTP to this endpoint,
    /// e.g. http://localhost:4318 (`/v1/traces` is appended unless given). Off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Folder the indexed image references resolve under, for `GET /v1/media` thumbnails (the
    /// web page's result images); none serves no images.
    #[arg(long, env = "MIRAGE_MEDIA_ROOT", value_parser = any_path)]
    pub media_root: Option<PathBuf>,
    /// A cross-encoder reranker directory (`mirage model import-reranker`): serves
    /// `POST /v1/rerank` and the `rerank` option of search and RAG. It runs on the engine of
    /// --engine.
    #[arg(long, env = "MIRAGE_RERANKER", value_parser = any_path)]
    pub reranker: Option<PathBuf>,
    /// Inference engine, device, threads and ONNX Runtime library (file keys `engine`,
    /// `device`, `threads`, `ort_library`).
    #[command(flatten)]
    #[serde(flatten)]
    pub engine: EngineArgs,
}

impl Default for Settings {
    /// The defaults written on the fields, without the environment.
    fn default() -> Self {
        let cmd = Self::augment_args(clap::Command::new("defaults"))
            .mut_args(|a| a.env(clap::builder::Resettable::Reset));
        let matches = cmd
            .try_get_matches_from(["defaults"])
            .expect("the built-in defaults parse");
        Self::from_arg_matches(&matches).expect("the built-in defaults parse")
    }
}

impl Settings {
    /// Drops empty values (compose files pass unset options as empty variables) and checks
    /// every setting: what `mirage serve` runs with.
    pub fn finish(mut self) -> Result<Self> {
        let empty = |p: &PathBuf| p.as_os_str().is_empty();
        self.media_root = self.media_root.filter(|p| !empty(p));
        self.models_dir = self.models_dir.filter(|p| !empty(p));
        self.bundle.retain(|p| !empty(p));
        self.reranker = self.reranker.filter(|p| !empty(p));
        self.engine.ort_library = self.engine.ort_library.filter(|p| !empty(p));
        self.qdrant_url = self.qdrant_url.filter(|u| !u.is_empty());
        self.qdrant_api_key = self.qdrant_api_key.filter(|k| !k.0.is_empty());
        self.qdrant_rest_url = self.qdrant_rest_url.filter(|u| !u.is_empty());
        self.otlp_endpoint = self.otlp_endpoint.filter(|u| !u.trim().is_empty());
        self.cors_origins.retain(|o| !o.trim().is_empty());
        self.api_keys.retain(|k| !k.0.is_empty());
        self.admin_keys.retain(|k| !k.0.is_empty());
        self.validate()?;
        Ok(self)
    }

    /// Every problem at once.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.bundle.is_empty() {
            problems.push(
                "bundle is required (--bundle, MIRAGE_BUNDLE or `bundle` in the config file)"
                    .to_owned(),
            );
        }
        if let Some(dir) = &self.models_dir {
            if !dir.is_dir() {
                problems.push(format!("models_dir {} is not a directory", dir.display()));
            }
        }
        if let Some(u) = &self.qdrant_rest_url {
            if let Err(e) = mirage_index::store::check_rest_url(u) {
                problems.push(format!("qdrant_rest_url: {e}"));
            }
        }
        if let Some(e) = &self.otlp_endpoint {
            if let Err(e) = crate::telemetry::traces_url(e) {
                problems.push(format!("otlp_endpoint: {e}"));
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir must not be empty".to_owned());
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
        if self.engine.threads > mirage_model::engine::MAX_THREADS {
            problems.push(format!(
                "threads {} is out of range 0..={} (0 = all cores)",
                self.engine.threads,
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

    /// Whether any key is configured (otherwise the API is open).
    pub fn auth_enabled(&self) -> bool {
        !(self.api_keys.is_empty() && self.admin_keys.is_empty())
    }
}

/// A settings file, as defaults of the settings' arguments: under the variables and flags,
/// over the built-in defaults.
pub struct FileLayer {
    values: Vec<(String, Vec<String>)>,
}

impl FileLayer {
    /// Reads `path`; unknown keys, nested tables and values the setting cannot take are errors
    /// naming the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = fs_err::read_to_string(path)?;
        let context = || format!("config file {}", path.display());
        let table: toml::Table = toml::from_str(&text).with_context(context)?;
        let cmd = Settings::augment_args(clap::Command::new("settings"));
        let known: Vec<&str> = cmd
            .get_arguments()
            .map(|a| a.get_id().as_str())
            .filter(|id| *id != "config")
            .collect();
        let delimited: Vec<&str> = cmd
            .get_arguments()
            .filter(|a| a.get_value_delimiter().is_some())
            .map(|a| a.get_id().as_str())
            .collect();
        let mut values = Vec::new();
        for (key, value) in table {
            if !known.contains(&key.as_str()) {
                bail!(
                    "{}: unknown field `{key}`, expected one of {}",
                    context(),
                    known.join(", ")
                );
            }
            let scalar = |v: &toml::Value| match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    Ok(v.to_string())
                }
                _ => Err(anyhow::anyhow!(
                    "{}: `{key}` must be a string, number or list of them",
                    context()
                )),
            };
            let list: Vec<String> = match &value {
                toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<_>>()?,
                v => vec![scalar(v)?],
            };
            // Defaults are split like flag values: a comma would cut an entry in two.
            if delimited.contains(&key.as_str()) && list.iter().any(|v| v.contains(',')) {
                bail!("{}: `{key}` entries cannot contain ','", context());
            }
            values.push((key, list));
        }
        let layer = Self { values };
        // The file alone (built-in defaults under it, no variables, no flags) must parse: a bad
        // value is reported against the file even when a flag would override it.
        let alone = layer.apply(
            Settings::augment_args(clap::Command::new("serve"))
                .mut_args(|a| a.env(clap::builder::Resettable::Reset)),
        );
        alone
            .try_get_matches_from(["serve"])
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|m| Ok(Settings::from_arg_matches(&m)?))
            .with_context(context)?;
        Ok(layer)
    }

    /// `cmd` (the serve command) with the file's values as its arguments' defaults.
    pub fn apply(&self, cmd: clap::Command) -> clap::Command {
        cmd.mut_args(
            |arg| match self.values.iter().find(|(k, _)| k == arg.get_id().as_str()) {
                Some((_, v)) => arg.default_values(v.clone()),
                None => arg,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        settings: Settings,
    }

    /// The command line `args` (after `serve`), with `file` layered as `mirage` does, and a
    /// private variable for the port (tests share the process environment).
    fn parse(args: &[&str], file: Option<&Path>) -> Result<Settings> {
        let mut cmd = Serve::command()
            .mut_arg("port", |a| a.env("MIRAGE_CONFIG_TEST_PORT"))
            .mut_arg("qdrant_url", |a| a.env(clap::builder::Resettable::Reset));
        if let Some(file) = file {
            cmd = FileLayer::read(file)?.apply(cmd);
        }
        let m = cmd.try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))?;
        Settings::from_arg_matches(&m)?.finish()
    }

    #[test]
    fn defaults_file_variables_and_flags_layer_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mirage.toml");
        std::fs::write(
            &file,
            "bundle = \"/b\"\nport = 9000\nbatch_size = 8\nthreads = 3\n\
             api_keys = [\"s3cret\", \"other\"]\ncors_origins = \"*\"\n",
        )
        .unwrap();
        let defaults = Settings::default();
        assert_eq!((defaults.port, defaults.batch_size), (8080, 32));
        assert!(defaults.api_keys.is_empty() && defaults.engine.threads == 0);

        let s = parse(&["--port", "9100"], Some(&file)).unwrap();
        assert_eq!((s.port, s.batch_size, s.engine.threads), (9100, 8, 3));
        assert_eq!(s.bundle, vec![PathBuf::from("/b")]);
        assert_eq!(
            s.max_queue_items, 1024,
            "untouched settings keep the default"
        );
        assert_eq!(s.api_keys.len(), 2);
        assert_eq!(s.cors_origins, ["*"]);
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(!serde_json::to_string(&s).unwrap().contains("s3cret"));

        let s = parse(&["--batch-size", "4"], Some(&file)).unwrap();
        assert_eq!((s.port, s.batch_size), (9000, 4), "the file under a flag");
        // A variable sits between the file and the flags.
        std::env::set_var("MIRAGE_CONFIG_TEST_PORT", "9200");
        assert_eq!(parse(&[], Some(&file)).unwrap().port, 9200);
        assert_eq!(parse(&["--port", "9300"], Some(&file)).unwrap().port, 9300);
        std::env::remove_var("MIRAGE_CONFIG_TEST_PORT");
        // Empty values (compose passes unset options so) mean "not set".
        let s = parse(
            &["--bundle", "/b", "--media-root", "", "--api-keys", ""],
            None,
        )
        .unwrap();
        assert!(s.media_root.is_none() && s.api_keys.is_empty());
    }

    #[test]
    fn urls_that_are_not_http_are_refused_before_anything_starts() {
        let e = format!(
            "{:#}",
            parse(
                &[
                    "--bundle",
                    "/b",
                    "--qdrant-rest-url",
                    "qdrant:6333",
                    "--otlp-endpoint",
                    "collector:4318"
                ],
                None
            )
            .unwrap_err()
        );
        assert!(
            e.contains("qdrant_rest_url") && e.contains("otlp_endpoint"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported_together() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "bundel = \"/b\"\n").unwrap();
        let e = format!("{:#}", parse(&[], Some(&file)).unwrap_err());
        assert!(
            e.contains("unknown field `bundel`") && e.contains("bad.toml"),
            "{e}"
        );
        for (text, what) in [
            ("port = \"eighty\"\n", "eighty"),
            ("port = 70000\n", "70000"),
            ("log_format = \"xml\"\n", "xml"),
            ("config = \"other.toml\"\n", "unknown field `config`"),
            (
                "[engine]\nthreads = 2\n",
                "must be a string, number or list",
            ),
            ("api_keys = [\"a,b\"]\n", "cannot contain ','"),
        ] {
            std::fs::write(&file, text).unwrap();
            // Reported against the file even where a flag would override the value.
            let e = format!("{:#}", parse(&["--port", "1"], Some(&file)).unwrap_err());
            assert!(e.contains(what) && e.contains("bad.toml"), "{text}: {e}");
        }
        let e = parse(
            &[
                "--bundle",
                "/b",
                "--batch-size",
                "0",
                "--store",
                "s3:bucket",
            ],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("batch_size") && e.contains("store"), "{e}");
        let e = parse(&["--store", "embedded:x"], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bundle is required"), "{e}");
    }
}
