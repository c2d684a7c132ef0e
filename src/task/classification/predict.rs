//! What a classifier's prediction is, for images and texts alike: the most probable classes
//! with their softmax probabilities.

/// One class of a prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScore {
    /// The class's index (the head's output).
    pub index: usize,
    /// Its name: the dataset's class name for a run, ImageNet's for an ImageNet head.
    pub label: String,
    /// Its softmax probability.
    pub probability: f32,
    /// Its logit.
    pub logit: f32,
}

/// The `k` most probable classes of `logits` (most probable first, ties in index order), with
/// softmax probabilities; a class without a label is named by its index.
pub fn top_k(logits: &[f32], k: usize, labels: &[String]) -> Vec<ClassScore> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order
        .into_iter()
        .take(k)
        .map(|i| ClassScore {
            index: i,
            label: labels.get(i).cloned().unwrap_or_else(|| i.to_string()),
            probability: exp[i] / sum,
            logit: logits[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_logit_and_normalises() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let top = top_k(&[1.0, 3.0, 2.0], 2, &labels);
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].index, top[0].label.as_str()), (1, "b"));
        // The third class has no label: its index names it.
        assert_eq!((top[1].index, top[1].label.as_str()), (2, "2"));
        let all: f32 = top_k(&[1.0, 3.0, 2.0], 3, &labels)
            .iter()
            .map(|c| c.probability)
            .sum();
        assert!((all - 1.0).abs() < 1e-6);
    }
}
