//! Metric functions over plain score arrays.

use serde::Serialize;

/// Recall@K of a square similarity matrix whose correct answer for row i is column i.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Recall {
    /// Share of rows whose match ranks first.
    pub r1: f64,
    /// ... within the top 5.
    pub r5: f64,
    /// ... within the top 10.
    pub r10: f64,
}

/// 0-based rank of the diagonal entry in each row of the `n × n` row-major `sims` (ties count
/// against the query: an equal score ranks ahead, so constant scores give no credit).
pub fn diagonal_ranks(sims: &[f32], n: usize) -> Vec<usize> {
    assert_eq!(sims.len(), n * n, "similarity matrix must be n × n");
    (0..n)
        .map(|i| {
            let row = &sims[i * n..(i + 1) * n];
            let target = row[i];
            row.iter()
                .enumerate()
                .filter(|&(j, &s)| j != i && s >= target)
                .count()
        })
        .collect()
}

/// Recall@1/5/10 from 0-based ranks.
pub fn recall_from_ranks(ranks: &[usize]) -> Recall {
    let n = ranks.len().max(1) as f64;
    let at = |k: usize| ranks.iter().filter(|&&r| r < k).count() as f64 / n;
    Recall {
        r1: at(1),
        r5: at(5),
        r10: at(10),
    }
}

/// Recall@K in both directions for paired embeddings: `image_to_text` ranks texts for each
/// image (rows of `sims`), `text_to_image` ranks images for each text (columns).
pub fn retrieval_recall(sims: &[f32], n: usize) -> (Recall, Recall) {
    let i2t = recall_from_ranks(&diagonal_ranks(sims, n));
    let mut transposed = vec![0.0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            transposed[j * n + i] = sims[i * n + j];
        }
    }
    let t2i = recall_from_ranks(&diagonal_ranks(&transposed, n));
    (i2t, t2i)
}

/// Area under the ROC curve of `scores` for `positive` labels (Mann–Whitney, ties count ½).
/// `None` when one class is empty.
pub fn auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), positive.len());
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut n_pos) = (0.0, 0usize);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if positive[k] {
                rank_sum += avg_rank;
                n_pos += 1;
            }
        }
        i = j + 1;
    }
    let n_neg = scores.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    Some((rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0) / (n_pos * n_neg) as f64)
}

/// Share of predictions equal to their labels.
pub fn accuracy(predicted: &[usize], truth: &[usize]) -> f64 {
    assert_eq!(predicted.len(), truth.len());
    if truth.is_empty() {
        return 0.0;
    }
    predicted.iter().zip(truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
}

/// Expected calibration error of top-1 confidences over `bins` equal-width bins.
pub fn expected_calibration_error(confidence: &[f64], correct: &[bool], bins: usize) -> f64 {
    assert_eq!(confidence.len(), correct.len());
    let n = confidence.len();
    if n == 0 || bins == 0 {
        return 0.0;
    }
    let mut sum_conf = vec![0.0; bins];
    let mut sum_acc = vec![0.0; bins];
    let mut count = vec![0usize; bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sum_conf[b] += c;
        sum_acc[b] += f64::from(u8::from(ok));
        count[b] += 1;
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| (sum_acc[b] - sum_conf[b]).abs() / n as f64)
        .sum()
}

/// Similarity-weighted kNN vote (DINO style: weight exp(sim / temperature)) over the `k` most
/// similar labelled items; `sims` is one query's similarity to every labelled item.
pub fn knn_vote(
    sims: &[f32],
    labels: &[usize],
    classes: usize,
    k: usize,
    temperature: f64,
) -> usize {
    assert_eq!(sims.len(), labels.len());
    let mut idx: Vec<usize> = (0..sims.len()).collect();
    idx.sort_by(|&a, &b| sims[b].total_cmp(&sims[a]));
    let mut votes = vec![0.0f64; classes];
    for &i in idx.iter().take(k) {
        votes[labels[i]] += (f64::from(sims[i]) / temperature).exp();
    }
    votes
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_of_identity_and_reversed() {
        let n = 12;
        let eye: Vec<f32> = (0..n * n)
            .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
            .collect();
        let (a, b) = retrieval_recall(&eye, n);
        assert_eq!((a.r1, b.r10), (1.0, 1.0));
        let flat = vec![0.5f32; n * n];
        let (a, _) = retrieval_recall(&flat, n);
        assert_eq!(a.r10, 0.0, "ties give no credit");
        // Row i prefers column (i+1) mod n, then i.
        let mut shifted = vec![0.0f32; n * n];
        for i in 0..n {
            shifted[i * n + (i + 1) % n] = 1.0;
            shifted[i * n + i] = 0.5;
        }
        let (a, b) = retrieval_recall(&shifted, n);
        assert_eq!((a.r1, a.r5), (0.0, 1.0));
        assert_eq!(b.r1, 0.0);
    }

    #[test]
    fn auc_known_values() {
        assert_eq!(
            auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(auc(&[0.1], &[true]), None);
    }

    #[test]
    fn ece_and_accuracy_and_knn() {
        assert_eq!(accuracy(&[1, 2, 3], &[1, 0, 3]), 2.0 / 3.0);
        assert!(expected_calibration_error(&[1.0, 1.0], &[true, true], 10).abs() < 1e-12);
        assert!((expected_calibration_error(&[0.9, 0.9], &[false, false], 10) - 0.9).abs() < 1e-12);
        let sims = [0.9f32, 0.8, 0.1, 0.85];
        assert_eq!(knn_vote(&sims, &[1, 1, 0, 0], 2, 3, 0.07), 1);
    }
}
