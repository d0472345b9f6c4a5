//! The web page at `/`, driven in headless Chromium over the DevTools protocol: the real
//! server, a collection built by `mirage index build` from PNG, JPEG and DICOM files, text
//! search, image upload search, zero-shot classification and error display. What the page
//! shows is checked against what the API answers for the same request, and screenshots of each
//! state are written to `$CARGO_TARGET_TMPDIR/ui-screenshots/`.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::http::harness::*;

/// The browser: `MIRAGE_CHROMIUM`, else `chromium` on PATH. Missing is a failure under CI (which
/// installs Debian's chromium) and a printed skip elsewhere.
fn chromium_binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("MIRAGE_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["chromium", "chromium-browser", "google-chrome"].map(PathBuf::from));
    for c in candidates {
        let found = Command::new(&c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Some(c);
        }
    }
    mirage_model::testing::skip_or_fail(
        "no Chromium found (apt-get install chromium, or set MIRAGE_CHROMIUM)",
    );
    None
}

/// A headless Chromium with one page, driven over the DevTools protocol.
struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn launch(binary: &Path) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let browser_ws = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        break url.trim().to_owned();
                    }
                }
                _ => panic!("chromium exited before opening DevTools"),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let http = browser_ws
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .expect("ws://host:port/…")
            .to_owned();
        let targets: Value = reqwest::get(format!("http://{http}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let url = page["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        let (ws, _) = tungstenite::connect(url).expect("DevTools websocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        Self {
            child,
            ws,
            next_id: 0,
            _profile: profile,
        }
    }

    /// One DevTools command; events in between are skipped.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let reply = self.ws.read().expect("DevTools reply");
            let Message::Text(text) = reply else { continue };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method} failed: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its JSON value.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy.
    fn wait_for(&mut self, expression: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.eval(expression);
            if v.as_bool() == Some(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; page status: {}, error: {}",
                self.eval("document.getElementById('status').textContent"),
                self.eval("document.getElementById('error').textContent")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn click(&mut self, selector: &str) {
        self.eval(&format!("document.querySelector({selector:?}).click()"));
    }

    fn set_value(&mut self, selector: &str, value: &str) {
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector:?}); e.value = {value:?}; e.dispatchEvent(new Event('change')); }})()"
        ));
    }

    fn upload(&mut self, selector: &str, file: &Path) {
        let root = self.call("DOM.getDocument", json!({}))["root"]["nodeId"].clone();
        let node = self.call(
            "DOM.querySelector",
            json!({"nodeId": root, "selector": selector}),
        )["nodeId"]
            .clone();
        self.call(
            "DOM.setFileInputFiles",
            json!({"nodeId": node, "files": [file.display().to_string()]}),
        );
        self.eval(&format!(
            "document.querySelector({selector:?}).dispatchEvent(new Event('change'))"
        ));
    }

    /// A PNG screenshot of the viewport, saved under `ui-screenshots/` and checked to show
    /// something (not one flat colour).
    fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        let img = image::load_from_memory(&png).unwrap().into_rgb8();
        assert!(img.width() >= 800, "screenshot {}px wide", img.width());
        let first = *img.get_pixel(0, 0);
        let distinct = img.pixels().filter(|p| **p != first).count();
        assert!(distinct > 1000, "screenshot {name} is blank");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// The hits the page shows: id, score as displayed, text, thumbnail width.
    fn hits(&mut self) -> Vec<Value> {
        self.eval(
            "[...document.querySelectorAll('#results li.hit')].map(li => ({
                id: li.dataset.id,
                score: li.querySelector('.score').textContent,
                text: li.querySelector('.text') ? li.querySelector('.text').textContent : null,
                prov: li.querySelector('.prov').textContent,
                thumb: li.querySelector('img.thumb') ? li.querySelector('img.thumb').naturalWidth : null,
            }))",
        )
        .as_array()
        .unwrap()
        .clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that the page shows exactly the API's hits, in order, with their scores.
fn assert_same_hits(shown: &[Value], api: &Value) {
    let expected = api["hits"].as_array().unwrap();
    assert_eq!(shown.len(), expected.len(), "{shown:?}\n{api}");
    for (s, e) in shown.iter().zip(expected) {
        assert_eq!(s["id"], e["id"]);
        let score: f64 = s["score"].as_str().unwrap().parse().unwrap();
        assert!((score - e["score"].as_f64().unwrap()).abs() < 1.5e-3);
        assert_eq!(s["text"], e["text"]);
        let prov = s["prov"].as_str().unwrap();
        assert!(
            prov.contains(e["provenance"]["model_id"].as_str().unwrap())
                && prov.contains(&e["provenance"]["bundle_sha256"].as_str().unwrap()[..12]),
            "provenance shown: {prov}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_searches_by_text_and_image_and_classifies_in_chromium() {
    let Some(chromium) = chromium_binary() else {
        return;
    };
    let Some(dicom) = pydicom_file("CT_small.dcm") else {
        return;
    };
    let crate::http::Scratch { dir, bundle, .. } = crate::http::scratch(true);
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let mut corpus = String::new();
    // The corpus captions are the bundle's bank captions.
    for (k, caption) in crate::http::BANK.iter().enumerate() {
        let (file, bytes) = match k {
            3 => ("scan-3.dcm".to_owned(), dicom.clone()),
            4 => ("scan-4.jpg".to_owned(), jpeg(40, 96)),
            _ => (format!("scan-{k}.png"), png(10 * k as u8 + 1, 96)),
        };
        std::fs::write(media.join(&file), bytes).unwrap();
        corpus.push_str(
            &json!({"id": format!("item-{k}"), "text": caption, "image": file, "metadata": {"k": k}})
                .to_string(),
        );
        corpus.push('\n');
    }
    let corpus_path = dir.path().join("corpus.jsonl");
    std::fs::write(&corpus_path, corpus).unwrap();
    let work = dir.path().join("work");
    let store = format!("embedded:{}", work.join("indexes").display());
    crate::common::ok(crate::common::mirage(&[
        "index",
        "build",
        "--bundle",
        bundle.to_str().unwrap(),
        "--corpus",
        corpus_path.to_str().unwrap(),
        "--format",
        "jsonl",
        "--image-root",
        media.to_str().unwrap(),
        "--collection",
        "scans",
        "--store",
        &store,
        "--progress",
        "quiet",
    ]));
    let server = Server::start(&bundle, &work, &["--media-root", media.to_str().unwrap()]);
    let api = server.api.clone();
    let listed = api
        .get("/v1/collections", "/v1/collections")
        .await
        .expect(200);
    assert_eq!(
        listed.body["collections"],
        json!([{"name": "scans", "store": "embedded", "conflict": false}])
    );

    let mut b = Browser::launch(&chromium).await;
    b.call("Page.navigate", json!({"url": format!("{}/", api.base)}));
    b.wait_for(
        "document.querySelectorAll('#collection option').length === 1",
        "the collection list",
    );
    let header = b.eval("document.getElementById('model').textContent");
    assert!(header.as_str().unwrap().contains("model "), "{header}");

    // Text search, as typed by a user.
    b.set_value("#q-text", "axial brain mri");
    b.set_value("#limit", "4");
    b.click("#search-text-btn");
    b.wait_for(
        "document.querySelectorAll('#results li.hit').length === 4",
        "text search results",
    );
    b.wait_for(
        "[...document.querySelectorAll('#results img.thumb')].every(i => i.naturalWidth > 0)",
        "thumbnails (PNG, JPEG and DICOM through /v1/media)",
    );
    let shown = b.hits();
    let expected = api
        .post(
            "/v1/search",
            "/v1/search",
            &json!({"collection": "scans", "query": {"text": "axial brain mri"}, "target": "text", "limit": 4}),
        )
        .await
        .expect(200);
    assert_same_hits(&shown, &expected.body);
    assert_eq!(
        shown[0]["text"], "axial brain mri",
        "the exact caption ranks first"
    );
    assert!(shown.iter().all(|h| h["thumb"].as_u64().unwrap() > 0));
    b.screenshot("search-text");

    // Image search by upload: the indexed file itself is the best image match.
    let query_file = media.join("scan-2.png");
    b.upload("#image-file", &query_file);
    b.set_value("#target", "image");
    b.wait_for(
        "!document.getElementById('search-image-btn').disabled",
        "the image buttons to enable",
    );
    b.click("#search-image-btn");
    b.wait_for(
        "document.getElementById('status').textContent.includes('image scan-2.png')",
        "image search results",
    );
    let shown = b.hits();
    assert_eq!(shown[0]["id"], "item-2");
    assert_eq!(shown[0]["score"], "1.000");
    let form = Form::new()
        .text(
            "request",
            json!({"collection": "scans", "query": {}, "target": "image", "limit": 4}).to_string(),
        )
        .part(
            "query.image",
            Part::bytes(std::fs::read(&query_file).unwrap()).file_name("scan-2.png"),
        );
    let expected = api
        .post_multipart("/v1/search", "/v1/search", form)
        .await
        .expect(200);
    assert_same_hits(&shown, &expected.body);
    b.screenshot("search-image");

    // Zero-shot classification of the uploaded image.
    b.set_value(
        "#labels",
        "axial brain mri, chest x-ray with pneumonia, ct of the abdomen",
    );
    b.click("#classify-btn");
    b.wait_for(
        "document.querySelectorAll('#classify-table tr.label').length === 3",
        "classification results",
    );
    let shown = b.eval(
        "[...document.querySelectorAll('#classify-table tr.label')].map(r => [r.querySelector('.name').textContent, r.querySelector('.prob').textContent])",
    );
    let form = Form::new()
        .text(
            "request",
            json!({"labels": ["axial brain mri", "chest x-ray with pneumonia", "ct of the abdomen"]})
                .to_string(),
        )
        .part(
            "image",
            Part::bytes(std::fs::read(&query_file).unwrap()).file_name("scan-2.png"),
        );
    let expected = api
        .post_multipart("/v1/classify", "/v1/classify", form)
        .await
        .expect(200);
    let mut labels = expected.body["labels"].as_array().unwrap().clone();
    labels.sort_by(|a, b| {
        b["probability"]
            .as_f64()
            .unwrap()
            .total_cmp(&a["probability"].as_f64().unwrap())
    });
    let expected: Vec<Value> = labels
        .iter()
        .map(|l| {
            json!([
                l["label"],
                format!("{:.1} %", 100.0 * l["probability"].as_f64().unwrap())
            ])
        })
        .collect();
    assert_eq!(shown, json!(expected));
    b.screenshot("classify");

    // Errors reach the user as the problem's title and detail.
    b.set_value("#q-text", "");
    b.click("#search-text-btn");
    b.wait_for(
        "document.getElementById('error').textContent.includes('type a text query')",
        "the empty-query message",
    );
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"this is not an image").unwrap();
    b.upload("#image-file", &broken);
    b.click("#classify-btn");
    b.wait_for(
        "/HTTP 4\\d\\d/.test(document.getElementById('error').textContent)",
        "the problem of an undecodable upload",
    );
    let error = b.eval("document.getElementById('error').textContent");
    assert!(
        error.as_str().unwrap().contains("broken.png") || error.as_str().unwrap().contains("image"),
        "{error}"
    );
    // A collection deleted behind the page's back: the search answers 404 and says so.
    b.eval(
        "(() => { const o = document.createElement('option'); o.value = 'gone'; o.textContent = 'gone'; const s = document.getElementById('collection'); s.append(o); s.value = 'gone'; })()",
    );
    b.set_value("#q-text", "axial brain mri");
    b.set_value("#target", "text");
    b.click("#search-text-btn");
    b.wait_for(
        "document.getElementById('error').textContent.includes('HTTP 404')",
        "the 404 problem",
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#results li.hit').length"),
        0
    );
    b.screenshot("error");

    // The thumbnail route refuses what it must not serve.
    let r = api.get("/v1/media", "/v1/media?path=../corpus.jsonl").await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = api.get("/v1/media", "/v1/media?path=missing.png").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = api.get("/v1/media", "/v1/media").await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = api
        .get("/v1/media", "/v1/media?path=scan-0.png&max_side=4")
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    drop(b);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_is_off_without_a_media_root_and_the_page_is_public() {
    let crate::http::Scratch {
        dir: _dir,
        bundle,
        work,
    } = crate::http::scratch(false);
    let server = Server::start(&bundle, &work, &["--api-keys", "reader"]);
    let api = server.api.clone();
    let page = api.http.get(format!("{}/", api.base)).send().await.unwrap();
    assert_eq!(page.status(), 200, "the page itself needs no key");
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("id=\"search-text-btn\""));
    let keyed = api.with_key("reader");
    let r = keyed.get("/v1/media", "/v1/media?path=x.png").await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.detail().contains("--media-root"));
    let r = keyed
        .get("/v1/collections", "/v1/collections")
        .await
        .expect(200);
    assert_eq!(r.body["collections"], json!([]));
    let r = api.get("/v1/collections", "/v1/collections").await;
    assert_eq!(r.status, 401);
    server.terminate();
}
