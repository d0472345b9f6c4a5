//! Ranked-retrieval evaluation behind `mirage eval-retrieval`: BEIR-layout benchmarks
//! (`corpus.jsonl`, `queries.jsonl`, `qrels/test.tsv`), the standard measures (nDCG@k with graded
//! relevance, Recall@k, MRR@k), paired bootstrap intervals between retrieval modes over the same
//! queries, and the Hellinger distance between the labels retrieved and the labels judged
//! relevant (a long-tail bias measure: 0 when retrieval returns labels in the proportions the
//! truth has).

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bootstrap::{paired_difference, Interval, DEFAULT_RESAMPLES};

/// One document of a BEIR corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// `_id`.
    pub id: String,
    /// `title` and `text` joined (the title first, on its own line, when present).
    pub text: String,
    /// `metadata` (an empty object when absent).
    pub metadata: serde_json::Map<String, Value>,
}

/// One query of a BEIR benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchQuery {
    /// `_id`.
    pub id: String,
    /// `text`.
    pub text: String,
    /// `metadata` (an empty object when absent).
    pub metadata: serde_json::Map<String, Value>,
}

/// A BEIR benchmark: the corpus, the queries that have judgements, and the judgements
/// (query id → document id → graded relevance, positive only).
#[derive(Debug, Clone)]
pub struct Benchmark {
    /// Documents in file order.
    pub corpus: Vec<Document>,
    /// Judged queries in file order.
    pub queries: Vec<BenchQuery>,
    /// Positive judgements.
    pub qrels: HashMap<String, HashMap<String, u32>>,
}

fn jsonl(path: &Path) -> Result<Vec<(usize, serde_json::Map<String, Value>)>> {
    let file = fs_err::File::open(path)?;
    let mut rows = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(Value::Object(m)) => rows.push((i + 1, m)),
            Ok(_) => bail!("{}:{}: not a JSON object", path.display(), i + 1),
            Err(e) => bail!("{}:{}: {e}", path.display(), i + 1),
        }
    }
    Ok(rows)
}

fn id_of(row: &serde_json::Map<String, Value>, path: &Path, line: usize) -> Result<String> {
    match row.get("_id") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => bail!("{}:{line}: no \"_id\"", path.display()),
    }
}

fn text_of(row: &serde_json::Map<String, Value>, key: &str) -> String {
    row.get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn metadata_of(row: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    row.get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

impl Benchmark {
    /// Reads `dir` (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`). Queries without a
    /// positive judgement are left out, as BEIR's evaluation leaves them out.
    ///
    /// # Errors
    ///
    /// A missing file, a malformed line (named by file and line), a duplicate id, or a judgement
    /// naming an unknown query or document.
    pub fn read(dir: &Path, split: &str) -> Result<Self> {
        let corpus_path = dir.join("corpus.jsonl");
        let queries_path = dir.join("queries.jsonl");
        let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
        for p in [&corpus_path, &queries_path, &qrels_path] {
            ensure!(
                p.is_file(),
                "{} is missing: a BEIR benchmark folder holds corpus.jsonl, queries.jsonl and qrels/{split}.tsv",
                p.display()
            );
        }
        let mut seen = std::collections::HashSet::new();
        let mut corpus = Vec::new();
        for (line, row) in jsonl(&corpus_path)? {
            let id = id_of(&row, &corpus_path, line)?;
            ensure!(
                seen.insert(id.clone()),
                "{}:{line}: duplicate _id {id:?}",
                corpus_path.display()
            );
            let (title, body) = (text_of(&row, "title"), text_of(&row, "text"));
            let text = if title.trim().is_empty() {
                body
            } else {
                format!("{title}\n{body}")
            };
            ensure!(
                !text.trim().is_empty(),
                "{}:{line}: document {id:?} has no text",
                corpus_path.display()
            );
            corpus.push(Document {
                id,
                text,
                metadata: metadata_of(&row),
            });
        }
        let mut qrels: HashMap<String, HashMap<String, u32>> = HashMap::new();
        let file = fs_err::File::open(&qrels_path)?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
            if line.trim().is_empty() || (i == 0 && fields.first() == Some(&"query-id")) {
                continue;
            }
            let [q, d, score] = fields[..] else {
                bail!(
                    "{}:{}: expected query-id, corpus-id and score separated by tabs",
                    qrels_path.display(),
                    i + 1
                );
            };
            let score: i64 = score
                .parse()
                .with_context(|| format!("{}:{}: score {score:?}", qrels_path.display(), i + 1))?;
            ensure!(
                seen.contains(d),
                "{}:{}: document {d:?} is not in the corpus",
                qrels_path.display(),
                i + 1
            );
            if score > 0 {
                qrels
                    .entry(q.to_owned())
                    .or_default()
                    .insert(d.to_owned(), score as u32);
            }
        }
        let mut queries = Vec::new();
        let mut query_ids = std::collections::HashSet::new();
        for (line, row) in jsonl(&queries_path)? {
            let id = id_of(&row, &queries_path, line)?;
            ensure!(
                query_ids.insert(id.clone()),
                "{}:{line}: duplicate _id {id:?}",
                queries_path.display()
            );
            if qrels.contains_key(&id) {
                let text = text_of(&row, "text");
                ensure!(
                    !text.trim().is_empty(),
                    "{}:{line}: query {id:?} has no text",
                    queries_path.display()
                );
                queries.push(BenchQuery {
                    id,
                    text,
                    metadata: metadata_of(&row),
                });
            }
        }
        if let Some(q) = qrels.keys().find(|q| !query_ids.contains(*q)) {
            bail!(
                "{}: query {q:?} is not in queries.jsonl",
                qrels_path.display()
            );
        }
        ensure!(!queries.is_empty(), "{}: no judged query", dir.display());
        Ok(Self {
            corpus,
            queries,
            qrels,
        })
    }
}

/// nDCG@k of a ranking (document ids, best first) with graded relevance `rel` (gain = grade,
/// discount log2(rank + 1), as BEIR's pytrec_eval computes it).
pub fn ndcg_at(ranking: &[String], rel: &HashMap<String, u32>, k: usize) -> f64 {
    let dcg: f64 = ranking
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| f64::from(rel.get(d).copied().unwrap_or(0)) / (i as f64 + 2.0).log2())
        .sum();
    let mut grades: Vec<u32> = rel.values().copied().collect();
    grades.sort_unstable_by(|a, b| b.cmp(a));
    let ideal: f64 = grades
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, g)| f64::from(*g) / (i as f64 + 2.0).log2())
        .sum();
    if ideal == 0.0 {
        0.0
    } else {
        dcg / ideal
    }
}

/// Recall@k: the fraction of the relevant documents among the first `k`.
pub fn recall_at(ranking: &[String], rel: &HashMap<String, u32>, k: usize) -> f64 {
    if rel.is_empty() {
        return 0.0;
    }
    let found = ranking
        .iter()
        .take(k)
        .filter(|d| rel.contains_key(*d))
        .count();
    found as f64 / rel.len() as f64
}

/// MRR@k: 1 / the rank of the first relevant document within `k`, else 0.
pub fn mrr_at(ranking: &[String], rel: &HashMap<String, u32>, k: usize) -> f64 {
    ranking
        .iter()
        .take(k)
        .position(|d| rel.contains_key(d))
        .map_or(0.0, |i| 1.0 / (i as f64 + 1.0))
}

/// Hellinger distance between two label histograms (each normalised to a distribution): 0 for
/// equal proportions, 1 for disjoint supports.
pub fn hellinger(p: &BTreeMap<String, f64>, q: &BTreeMap<String, f64>) -> f64 {
    let (sp, sq) = (p.values().sum::<f64>(), q.values().sum::<f64>());
    if sp == 0.0 || sq == 0.0 {
        return if sp == sq { 0.0 } else { 1.0 };
    }
    let bc: f64 = p
        .iter()
        .map(|(k, v)| (v / sp * q.get(k).copied().unwrap_or(0.0) / sq).sqrt())
        .sum();
    (1.0 - bc).max(0.0).sqrt()
}

/// The measures of one query under one mode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueryScores {
    /// nDCG@k.
    pub ndcg: f64,
    /// Recall@depth.
    pub recall: f64,
    /// MRR@k.
    pub mrr: f64,
}

impl QueryScores {
    /// Scores `ranking` against `rel` with cutoff `k` (nDCG, MRR) and `depth` (recall).
    pub fn of(ranking: &[String], rel: &HashMap<String, u32>, k: usize, depth: usize) -> Self {
        Self {
            ndcg: ndcg_at(ranking, rel, k),
            recall: recall_at(ranking, rel, depth),
            mrr: mrr_at(ranking, rel, k),
        }
    }
}

/// Means of a mode over a group of queries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Means {
    /// Queries averaged.
    pub queries: usize,
    /// Mean nDCG@k.
    pub ndcg: f64,
    /// Mean Recall@depth.
    pub recall: f64,
    /// Mean MRR@k.
    pub mrr: f64,
}

/// Means of per-query scores.
pub fn means(scores: &[QueryScores]) -> Means {
    let n = scores.len().max(1) as f64;
    Means {
        queries: scores.len(),
        ndcg: scores.iter().map(|s| s.ndcg).sum::<f64>() / n,
        recall: scores.iter().map(|s| s.recall).sum::<f64>() / n,
        mrr: scores.iter().map(|s| s.mrr).sum::<f64>() / n,
    }
}

/// Paired bootstrap intervals of mode A − mode B on each measure over the same queries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedDelta {
    /// nDCG@k difference.
    pub ndcg: Interval,
    /// Recall@depth difference.
    pub recall: Interval,
    /// MRR@k difference.
    pub mrr: Interval,
}

/// `a − b` on every measure, queries paired, 95 % percentile intervals.
///
/// # Errors
///
/// `a` and `b` of different lengths, or none.
pub fn paired_delta(a: &[QueryScores], b: &[QueryScores], seed: u64) -> Result<PairedDelta> {
    let interval = |f: fn(&QueryScores) -> f64| {
        paired_difference(
            &[a.iter().map(f).collect()],
            &[b.iter().map(f).collect()],
            DEFAULT_RESAMPLES,
            0.95,
            seed,
        )
    };
    Ok(PairedDelta {
        ndcg: interval(|s| s.ndcg)?,
        recall: interval(|s| s.recall)?,
        mrr: interval(|s| s.mrr)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn rel(v: &[(&str, u32)]) -> HashMap<String, u32> {
        v.iter().map(|(d, g)| ((*d).to_owned(), *g)).collect()
    }

    #[test]
    fn measures_match_hand_computed_values() {
        let r = rel(&[("a", 1), ("c", 2)]);
        let ranking = ids(&["b", "c", "a"]);
        // DCG = 2/log2(3) + 1/log2(4); ideal = 2/log2(2) + 1/log2(3).
        let want = (2.0 / 3f64.log2() + 0.5) / (2.0 + 1.0 / 3f64.log2());
        assert!((ndcg_at(&ranking, &r, 10) - want).abs() < 1e-12);
        assert_eq!(ndcg_at(&ids(&["c", "a"]), &r, 10), 1.0);
        assert_eq!(recall_at(&ranking, &r, 2), 0.5);
        assert_eq!(recall_at(&ranking, &r, 3), 1.0);
        assert_eq!(mrr_at(&ranking, &r, 10), 0.5);
        assert_eq!(mrr_at(&ranking, &r, 1), 0.0);
        assert_eq!(ndcg_at(&[], &r, 10), 0.0);
    }

    #[test]
    fn hellinger_is_zero_for_equal_proportions_and_one_for_disjoint_labels() {
        let m = |v: &[(&str, f64)]| -> BTreeMap<String, f64> {
            v.iter().map(|(k, x)| ((*k).to_owned(), *x)).collect()
        };
        assert!(hellinger(&m(&[("a", 2.0), ("b", 2.0)]), &m(&[("a", 5.0), ("b", 5.0)])) < 1e-9);
        assert!((hellinger(&m(&[("a", 1.0)]), &m(&[("b", 1.0)])) - 1.0).abs() < 1e-9);
        let h = hellinger(&m(&[("a", 3.0), ("b", 1.0)]), &m(&[("a", 1.0), ("b", 1.0)]));
        assert!(h > 0.0 && h < 1.0);
    }

    #[test]
    fn a_beir_folder_reads_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs_err::create_dir_all(d.join("qrels")).unwrap();
        fs_err::write(
            d.join("corpus.jsonl"),
            "{\"_id\": \"d1\", \"title\": \"T\", \"text\": \"effusion\"}\n{\"_id\": 2, \"text\": \"edema\", \"metadata\": {\"k\": 1}}\n",
        )
        .unwrap();
        fs_err::write(
            d.join("queries.jsonl"),
            "{\"_id\": \"q1\", \"text\": \"fluid\"}\n{\"_id\": \"q2\", \"text\": \"unjudged\"}\n",
        )
        .unwrap();
        fs_err::write(
            d.join("qrels/test.tsv"),
            "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\t2\t0\n",
        )
        .unwrap();
        let b = Benchmark::read(d, "test").unwrap();
        assert_eq!(b.corpus.len(), 2);
        assert_eq!(b.corpus[0].text, "T\neffusion");
        assert_eq!(b.corpus[1].id, "2");
        assert_eq!(b.queries.len(), 1, "unjudged queries are left out");
        assert_eq!(b.qrels["q1"].len(), 1, "zero grades are not relevant");
        fs_err::write(d.join("qrels/test.tsv"), "q1\tnope\t1\n").unwrap();
        let e = Benchmark::read(d, "test").unwrap_err().to_string();
        assert!(e.contains("\"nope\" is not in the corpus"), "{e}");
        fs_err::write(
            d.join("corpus.jsonl"),
            "{\"_id\": \"d1\", \"text\": \"x\"}\nnot json\n",
        )
        .unwrap();
        let e = Benchmark::read(d, "test").unwrap_err().to_string();
        assert!(e.contains("corpus.jsonl:2"), "{e}");
        let e = Benchmark::read(d, "dev").unwrap_err().to_string();
        assert!(e.contains("qrels/dev.tsv is missing"), "{e}");
    }
}
