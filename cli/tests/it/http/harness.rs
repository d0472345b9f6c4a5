//! The real `mirage serve` binary on 127.0.0.1:0, a client that checks every response against
//! the committed OpenAPI document, and test images.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};

use base64::Engine;
use reqwest::Method;
use serde_json::Value;

/// A running server process; killed on drop.
pub struct Server {
    child: Option<Child>,
    pub api: Api,
}

impl Server {
    /// Starts `mirage serve` with the embedded store and data dir under `work`.
    pub fn start(bundle: &Path, work: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(bundle, work, extra, &[])
    }

    /// [`Self::start`] with environment variables. The test process's own Qdrant settings
    /// (set for the Qdrant suites) never leak into a server that did not ask for them.
    pub fn start_with_env(
        bundle: &Path,
        work: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let data = work.join("data");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirage"));
        cmd.args(["serve", "--host", "127.0.0.1", "--port", "0", "--bundle"])
            .arg(bundle)
            .arg("--data-dir")
            .arg(&data);
        if !extra.contains(&"--store") {
            cmd.arg("--store")
                .arg(format!("embedded:{}", work.join("indexes").display()));
        }
        let mut child = cmd
            .args(extra)
            .env_remove("MIRAGE_QDRANT_URL")
            .env_remove("MIRAGE_QDRANT_API_KEY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().copied())
            .env("MIRAGE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mirage serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.trim().to_owned();
                    }
                }
                _ => {
                    let status = child.wait().expect("wait");
                    panic!("mirage serve exited before listening: {status}");
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let api = Api::new(&base);
        Self {
            child: Some(child),
            api,
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal_term(&child);
        child.wait().expect("wait for mirage serve")
    }

    /// SIGTERM without waiting.
    pub fn send_term(&self) {
        signal_term(self.child.as_ref().expect("running"));
    }

    /// Waits for exit.
    pub fn wait(mut self) -> ExitStatus {
        self.child.take().expect("running").wait().expect("wait")
    }
}

fn signal_term(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success());
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The committed OpenAPI document.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = mirage_model::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
            .join("../openapi/openapi.json");
        serde_json::from_slice(&std::fs::read(&path).expect("openapi/openapi.json")).unwrap()
    })
}

/// Asserts that `body` is what the committed spec documents for `method template` → `status`.
pub fn check_against_spec(
    method: &str,
    template: &str,
    status: u16,
    content_type: &str,
    body: &Value,
) {
    let doc = spec();
    let op = &doc["paths"][template][method.to_lowercase()];
    assert!(
        op.is_object(),
        "{method} {template} is not in openapi/openapi.json"
    );
    let response = &op["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {template} answered {status}, which openapi/openapi.json does not document"
    );
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let schema = &response["content"][ct]["schema"];
    assert!(
        schema.is_object(),
        "{method} {template} {status}: content type {ct:?} is not documented"
    );
    // Resolve `#/components/...` references against the spec's components.
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    let validator = jsonschema::validator_for(&root).expect("spec schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {status}: response does not match the spec: {errors:?}\nbody: {body}"
    );
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    /// The search hit with this item id.
    #[track_caller]
    pub fn hit(&self, id: &str) -> &Value {
        self.body["hits"]
            .as_array()
            .and_then(|hits| hits.iter().find(|h| h["id"] == id))
            .unwrap_or_else(|| panic!("no hit {id}: {}", self.body))
    }

    /// The problem's `detail`.
    #[track_caller]
    pub fn detail(&self) -> &str {
        self.body["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("no detail: {}", self.body))
    }

    /// The problem `type` slug (after `urn:mirage:problem:`).
    pub fn problem_type(&self) -> &str {
        self.body["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("urn:mirage:problem:"))
            .unwrap_or_else(|| panic!("not a problem: {}", self.body))
    }

    /// Asserts the status and, for errors, the problem shape; returns self.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    /// Asserts an error with this status and type slug.
    #[track_caller]
    pub fn expect_problem(self, status: u16, slug: &str) -> Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(self.problem_type(), slug, "{}", self.body);
        assert!(
            self.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "a problem needs a detail: {}",
            self.body
        );
        self
    }
}

/// HTTP client bound to one server; every response is checked against the spec.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    key: Option<Arc<String>>,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder().build().unwrap(),
            base: base.to_owned(),
            key: None,
        }
    }

    /// The same client sending `key` as a bearer token.
    pub fn with_key(&self, key: &str) -> Self {
        Self {
            key: Some(Arc::new(key.to_owned())),
            ..self.clone()
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.bearer_auth(k.as_str()),
            None => r,
        }
    }

    /// Sends `req` and checks the response against the spec entry of `template`.
    pub async fn send(&self, method: &str, template: &str, req: reqwest::RequestBuilder) -> Resp {
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = res.bytes().await.expect("body");
        if status >= 400 {
            assert_eq!(
                ct,
                "application/problem+json",
                "error without problem+json: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let body: Value = if ct.contains("json") {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: bad JSON {e}: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        } else {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        };
        check_against_spec(method, template, status, &ct, &body);
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, template: &str, path: &str) -> Resp {
        self.send("GET", template, self.request(Method::GET, path))
            .await
    }

    pub async fn post(&self, template: &str, path: &str, body: &Value) -> Resp {
        self.send(
            "POST",
            template,
            self.request(Method::POST, path).json(body),
        )
        .await
    }

    pub async fn put(&self, template: &str, path: &str, body: &Value) -> Resp {
        self.send("PUT", template, self.request(Method::PUT, path).json(body))
            .await
    }

    pub async fn delete(&self, template: &str, path: &str, body: Option<&Value>) -> Resp {
        let r = self.request(Method::DELETE, path);
        let r = match body {
            Some(b) => r.json(b),
            None => r,
        };
        self.send("DELETE", template, r).await
    }

    /// A raw body with a content type, for malformed-input tests.
    pub async fn post_raw(
        &self,
        template: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Resp {
        self.send(
            "POST",
            template,
            self.request(Method::POST, path)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    pub async fn post_multipart(
        &self,
        template: &str,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> Resp {
        self.send(
            "POST",
            template,
            self.request(Method::POST, path).multipart(form),
        )
        .await
    }
}

/// A PNG of `side`² pixels with a pattern chosen by `seed`.
pub fn png(seed: u8, side: u32) -> Vec<u8> {
    encode(seed, side, image::ImageFormat::Png)
}

/// A JPEG like [`png`].
pub fn jpeg(seed: u8, side: u32) -> Vec<u8> {
    encode(seed, side, image::ImageFormat::Jpeg)
}

fn encode(seed: u8, side: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        let s = u32::from(seed);
        image::Rgb([
            ((x * (s + 3) + y * 7) % 256) as u8,
            ((y * (s + 5) + x * s) % 256) as u8,
            ((x ^ y).wrapping_mul(s + 1) % 256) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", b64(bytes))
}

/// A pydicom test file, or `None` (skip) outside CI when assets are missing.
pub fn pydicom_file(name: &str) -> Option<Vec<u8>> {
    let path =
        crate::common::require_asset(crate::common::assets_dir().join("pydicom").join(name))?;
    Some(std::fs::read(path).unwrap())
}

/// Cosine of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}
