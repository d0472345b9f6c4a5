//! Prometheus metrics in the text exposition format, kept with atomics and one small mutex so
//! recording costs next to nothing. Names follow Prometheus conventions: `mirage_` prefix, base
//! units, `_total` on counters, low-cardinality labels (route templates, never ids or payloads).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; buckets.len()];
        }
        for (c, b) in self.counts.iter_mut().zip(buckets) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, buckets: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (c, b) in self.counts.iter().zip(buckets) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    durations: BTreeMap<String, Histogram>,
    inference: Histogram,
    batch: Histogram,
    abstentions: BTreeMap<String, u64>,
    decode_failures: u64,
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    overload_rejections: AtomicU64,
}

/// One loaded model, as the metrics report it.
pub struct ModelLine {
    /// Its id.
    pub model_id: String,
    /// Its bundle sha256.
    pub model_sha: String,
    /// `ort` or `candle`.
    pub engine: &'static str,
    /// Bytes of weights and graphs on disk.
    pub weight_bytes: u64,
    /// Items queued or in flight.
    pub queue_depth: usize,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One finished request on a route template.
    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut g = self.lock();
        *g.requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        g.durations
            .entry(route.to_owned())
            .or_default()
            .observe(&LATENCY_BUCKETS, seconds);
    }

    /// One forward pass of `items` items.
    pub fn inference(&self, seconds: f64, items: usize) {
        let mut g = self.lock();
        g.inference.observe(&LATENCY_BUCKETS, seconds);
        g.batch.observe(&BATCH_BUCKETS, items as f64);
    }

    /// A request refused with 429.
    pub fn rejected_overload(&self) {
        self.overload_rejections.fetch_add(1, Ordering::Relaxed);
    }

    /// A RAG request that abstained.
    pub fn abstained(&self, collection: &str) {
        *self
            .lock()
            .abstentions
            .entry(collection.to_owned())
            .or_default() += 1;
    }

    /// An image that could not be decoded.
    pub fn decode_failure(&self) {
        self.lock().decode_failures += 1;
    }

    /// The exposition text; `queue_depth` is read live.
    pub fn render(&self, build: &[(&str, &str)], models: &[ModelLine]) -> String {
        let queue_depth: usize = models.iter().map(|m| m.queue_depth).sum();
        let g = self.lock();
        let mut out = String::new();
        let labels: Vec<String> = build
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        out.push_str("# HELP mirage_build_info Version and model of this server.\n# TYPE mirage_build_info gauge\n");
        let _ = writeln!(out, "mirage_build_info{{{}}} 1", labels.join(","));
        out.push_str("# HELP mirage_model_weight_bytes Loaded models: bytes of weights and graphs on disk.\n# TYPE mirage_model_weight_bytes gauge\n");
        for m in models {
            let _ = writeln!(
                out,
                "mirage_model_weight_bytes{{model_id=\"{}\",model_sha=\"{}\",engine=\"{}\"}} {}",
                escape(&m.model_id),
                escape(&m.model_sha),
                m.engine,
                m.weight_bytes
            );
        }
        out.push_str("# HELP mirage_model_queue_depth Items waiting for or in inference, by model.\n# TYPE mirage_model_queue_depth gauge\n");
        for m in models {
            let _ = writeln!(
                out,
                "mirage_model_queue_depth{{model_id=\"{}\"}} {}",
                escape(&m.model_id),
                m.queue_depth
            );
        }
        out.push_str("# HELP mirage_requests_total HTTP requests by route and status.\n# TYPE mirage_requests_total counter\n");
        for ((method, route, status), n) in &g.requests {
            let _ = writeln!(
                out,
                "mirage_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP mirage_request_duration_seconds HTTP request latency by route.\n# TYPE mirage_request_duration_seconds histogram\n");
        for (route, h) in &g.durations {
            h.render(
                &mut out,
                "mirage_request_duration_seconds",
                &format!("route=\"{}\"", escape(route)),
                &LATENCY_BUCKETS,
            );
        }
        out.push_str("# HELP mirage_inference_duration_seconds Forward pass latency.\n# TYPE mirage_inference_duration_seconds histogram\n");
        g.inference.render(
            &mut out,
            "mirage_inference_duration_seconds",
            "",
            &LATENCY_BUCKETS,
        );
        out.push_str("# HELP mirage_batch_size Items per forward pass.\n# TYPE mirage_batch_size histogram\n");
        g.batch
            .render(&mut out, "mirage_batch_size", "", &BATCH_BUCKETS);
        let _ = writeln!(out, "# HELP mirage_queue_depth Items waiting for or in inference.\n# TYPE mirage_queue_depth gauge\nmirage_queue_depth {queue_depth}");
        let _ = writeln!(
            out,
            "# HELP mirage_overload_rejections_total Requests refused with 429.\n# TYPE mirage_overload_rejections_total counter\nmirage_overload_rejections_total {}",
            self.overload_rejections.load(Ordering::Relaxed)
        );
        out.push_str("# HELP mirage_abstentions_total RAG requests that abstained, by collection.\n# TYPE mirage_abstentions_total counter\n");
        for (c, n) in &g.abstentions {
            let _ = writeln!(
                out,
                "mirage_abstentions_total{{collection=\"{}\"}} {n}",
                escape(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP mirage_image_decode_failures_total Images that could not be decoded.\n# TYPE mirage_image_decode_failures_total counter\nmirage_image_decode_failures_total {}",
            g.decode_failures
        );
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_labelled() {
        let m = Metrics::default();
        m.request("POST", "/v1/search", 200, 0.003);
        m.request("POST", "/v1/search", 200, 0.3);
        m.inference(0.01, 5);
        let line = |id: &str, depth| ModelLine {
            model_id: id.into(),
            model_sha: "ab".into(),
            engine: "ort",
            weight_bytes: 10,
            queue_depth: depth,
        };
        let text = m.render(&[("version", "0.1.0")], &[line("a", 1), line("b\"", 2)]);
        assert!(text.contains(
            "mirage_requests_total{method=\"POST\",route=\"/v1/search\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "mirage_request_duration_seconds_bucket{route=\"/v1/search\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "mirage_request_duration_seconds_bucket{route=\"/v1/search\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("mirage_batch_size_bucket{le=\"8\"} 1"));
        assert!(
            text.contains("mirage_queue_depth 3"),
            "queues of all models add up"
        );
        assert!(text.contains(
            "mirage_model_weight_bytes{model_id=\"b\\\"\",model_sha=\"ab\",engine=\"ort\"} 10"
        ));
        assert!(text.contains("mirage_model_queue_depth{model_id=\"a\"} 1"));
    }
}
