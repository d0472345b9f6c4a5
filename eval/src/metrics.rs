//! Metric functions over plain score arrays.

use serde::{Deserialize, Serialize};

/// Recall@K of a square similarity matrix whose correct answer for row i is column i.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
    Recall {
        r1: recall_at(ranks, 1),
        r5: recall_at(ranks, 5),
        r10: recall_at(ranks, 10),
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

/// Pairs that share a caption (augmented copies, boilerplate) count as one answer: returns
/// `(columns, text_of)`, where `columns` holds the first pair of each distinct caption in
/// first-seen order and `text_of[i]` is the column of pair i's caption, as [`grouped_ranks`]
/// takes it. The trainer's validation and `mirage eval` group this one way.
pub fn caption_columns<S: AsRef<str>>(captions: &[S]) -> (Vec<usize>, Vec<usize>) {
    let mut first_of = std::collections::HashMap::new();
    let mut columns = Vec::new();
    let text_of = captions
        .iter()
        .enumerate()
        .map(|(i, c)| {
            *first_of.entry(c.as_ref()).or_insert_with(|| {
                columns.push(i);
                columns.len() - 1
            })
        })
        .collect();
    (columns, text_of)
}

/// 0-based ranks both ways when several images may share one caption (augmented copies, repeated
/// report phrasing): `sims` is images × texts, row-major with `n_texts` columns, and `text_of[i]`
/// is the column of image i's caption. Image→text: how many other captions score at least as
/// high as the right one. Text→image (one query per caption that has an image): how many images
/// of other captions score at least as high as its best-scoring image. Ties count against the
/// query. With one caption per image (`text_of[i] = i`) this is [`diagonal_ranks`] both ways.
pub fn grouped_ranks(sims: &[f32], n_texts: usize, text_of: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let n_images = text_of.len();
    assert_eq!(
        sims.len(),
        n_images * n_texts,
        "similarity matrix must be images × texts"
    );
    assert!(
        text_of.iter().all(|&t| t < n_texts),
        "caption index out of range"
    );
    let at = |i: usize, j: usize| sims[i * n_texts + j];
    let image_to_text = (0..n_images)
        .map(|i| {
            let target = at(i, text_of[i]);
            (0..n_texts)
                .filter(|&j| j != text_of[i] && at(i, j) >= target)
                .count()
        })
        .collect();
    let text_to_image = (0..n_texts)
        .filter_map(|j| {
            let best = (0..n_images)
                .filter(|&i| text_of[i] == j)
                .map(|i| at(i, j))
                .max_by(f32::total_cmp)?;
            Some(
                (0..n_images)
                    .filter(|&i| text_of[i] != j && at(i, j) >= best)
                    .count(),
            )
        })
        .collect();
    (image_to_text, text_to_image)
}

/// Share of ranks below `k` (Recall@k).
pub fn recall_at(ranks: &[usize], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
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

/// One equal-width confidence bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// Mean top-1 confidence of the predictions in the bin.
    pub confidence: f64,
    /// Their accuracy.
    pub accuracy: f64,
    /// How many predictions fell in the bin.
    pub count: usize,
}

/// The non-empty bins of `bins` equal-width confidence bins over [0, 1].
pub fn reliability(confidence: &[f64], correct: &[bool], bins: usize) -> Vec<ReliabilityBin> {
    assert_eq!(confidence.len(), correct.len());
    let bins = bins.max(1);
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
        .map(|b| ReliabilityBin {
            confidence: sum_conf[b] / count[b] as f64,
            accuracy: sum_acc[b] / count[b] as f64,
            count: count[b],
        })
        .collect()
}

/// Expected calibration error of top-1 confidences over `bins` equal-width bins.
pub fn expected_calibration_error(confidence: &[f64], correct: &[bool], bins: usize) -> f64 {
    let n = confidence.len();
    if n == 0 || bins == 0 {
        return 0.0;
    }
    reliability(confidence, correct, bins)
        .iter()
        .map(|b| b.count as f64 / n as f64 * (b.accuracy - b.confidence).abs())
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

    #[test]
    fn grouped_ranks_reduce_to_diagonal_and_merge_shared_captions() {
        let n = 6;
        let sims: Vec<f32> = (0..n * n).map(|k| ((k * 7919) % 13) as f32).collect();
        let ident: Vec<usize> = (0..n).collect();
        let (a, b) = grouped_ranks(&sims, n, &ident);
        let mut transposed = vec![0.0f32; n * n];
        for i in 0..n {
            for j in 0..n {
                transposed[j * n + i] = sims[i * n + j];
            }
        }
        assert_eq!(a, diagonal_ranks(&sims, n));
        assert_eq!(b, diagonal_ranks(&transposed, n));
        // Three images, two captions; images 0 and 1 share caption 0.
        let sims = [
            0.2, 0.9, // image 0 prefers the wrong caption
            0.8, 0.1, // image 1 is right
            0.5, 0.6, // image 2 is right
        ];
        let (i2t, t2i) = grouped_ranks(&sims, 2, &[0, 0, 1]);
        assert_eq!(i2t, vec![1, 0, 0]);
        // Caption 0's best image (1, 0.8) beats image 2 (0.5); caption 1's best image (2, 0.6)
        // loses to image 0 (0.9).
        assert_eq!(t2i, vec![0, 1]);
        assert_eq!(recall_at(&t2i, 1), 0.5);
    }
}
