//! Which samples go where: train/val/test subsets, stratified splits, subsets and k-fold.
//!
//! Every function here is deterministic in its seed and independent of thread scheduling, so a
//! run's splits can be recreated from its config alone.

use std::fmt::Write as _;
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::data::image::Image;
use crate::data::source::Source;
use crate::error::{Error, Result};

/// A view of some samples of a source. `indices` are source indices; position `k` in the subset
/// is source sample `indices[k]`.
#[derive(Clone)]
pub struct Subset {
    /// The source the samples come from (shared between subsets).
    pub source: Arc<dyn Source>,
    /// Source indices, in subset order.
    pub indices: Vec<usize>,
}

impl std::fmt::Debug for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subset")
            .field("source_len", &self.source.len())
            .field("len", &self.indices.len())
            .finish()
    }
}

impl Subset {
    /// All samples of `source`, in order.
    pub fn all(source: Arc<dyn Source>) -> Subset {
        let indices = (0..source.len()).collect();
        Subset { source, indices }
    }

    /// The number of samples in the subset.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the subset holds no sample.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Label of the `k`-th sample of the subset.
    pub fn label(&self, k: usize) -> usize {
        self.source.label(self.indices[k])
    }

    /// Labels of the whole subset, in subset order.
    pub fn labels(&self) -> Vec<usize> {
        self.indices.iter().map(|&i| self.source.label(i)).collect()
    }

    /// Decodes the `k`-th sample of the subset.
    pub fn load(&self, k: usize) -> Result<Image> {
        self.source.load(self.indices[k])
    }

    /// Where the `k`-th sample comes from.
    pub fn describe(&self, k: usize) -> String {
        self.source.describe(self.indices[k])
    }

    /// The samples at subset positions `positions` (e.g. a fold from [`stratified_kfold`] over
    /// `self.labels()`).
    pub fn select(&self, positions: &[usize]) -> Subset {
        Subset {
            source: self.source.clone(),
            indices: positions.iter().map(|&k| self.indices[k]).collect(),
        }
    }
}

/// A dataset: class names and its splits. `train` and `test` may share one source (folders
/// without split subfolders); `val`, when present, is carved out of `train`'s source or comes
/// from the dataset itself.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The spec or a short name, used in messages.
    pub name: String,
    /// Class names in label order: label `k` is `class_names[k]`.
    pub class_names: Vec<String>,
    /// The training split.
    pub train: Subset,
    /// The validation split, when the dataset has one or one was held out
    /// (see [`Dataset::with_val_split`]).
    pub val: Option<Subset>,
    /// The test split: evaluated once, after training.
    pub test: Subset,
}

impl Dataset {
    /// Holds out a stratified `fraction` of the training split as validation. A fraction outside
    /// (0, 1) leaves the dataset unchanged; so does a dataset that already has a validation split
    /// (a `val/` folder), with a warning, because its own split is the one to trust.
    pub fn with_val_split(mut self, fraction: f64, seed: u64) -> Dataset {
        if !(fraction > 0.0 && fraction < 1.0) {
            return self;
        }
        if self.val.is_some() {
            eprintln!(
                "warning: {} already has a validation split; not holding out another {fraction}",
                self.name
            );
            return self;
        }
        // A different stream than the limits and the folder test split use, so the same seed
        // does not correlate them.
        let (keep, held) = stratified_split(
            &self.train.labels(),
            fraction,
            derive_seed(&[seed, 0x0076_616c]),
        );
        self.val = Some(self.train.select(&held));
        self.train = self.train.select(&keep);
        self
    }

    /// Keeps a stratified subset of `n` training samples (all of them when `n >= len`).
    pub fn limit_train(mut self, n: usize, seed: u64) -> Dataset {
        let keep = stratified_subset(&self.train.labels(), n, derive_seed(&[seed, 0x0074_726e]));
        self.train = self.train.select(&keep);
        self
    }

    /// Keeps a stratified subset of `n` test samples (all of them when `n >= len`).
    pub fn limit_test(mut self, n: usize, seed: u64) -> Dataset {
        let keep = stratified_subset(&self.test.labels(), n, derive_seed(&[seed, 0x0074_7374]));
        self.test = self.test.select(&keep);
        self
    }

    /// Samples per class in `subset`, one entry per class name.
    pub fn class_counts(&self, subset: &Subset) -> Vec<usize> {
        let mut counts = vec![0usize; self.class_names.len()];
        for &i in &subset.indices {
            let label = subset.source.label(i);
            if label >= counts.len() {
                counts.resize(label + 1, 0);
            }
            counts[label] += 1;
        }
        counts
    }

    /// A table of counts per split and per class (what `graft inspect DATASPEC` prints).
    pub fn summary(&self) -> String {
        let mut splits: Vec<(&str, &Subset)> = vec![("train", &self.train)];
        if let Some(v) = &self.val {
            splits.push(("val", v));
        }
        splits.push(("test", &self.test));
        let counts: Vec<Vec<usize>> = splits.iter().map(|(_, s)| self.class_counts(s)).collect();

        let mut out = String::new();
        let _ = writeln!(
            out,
            "dataset {}: {} classes",
            self.name,
            self.class_names.len()
        );
        let totals: Vec<String> = splits
            .iter()
            .map(|(n, s)| format!("{n} {}", s.len()))
            .collect();
        let _ = writeln!(out, "samples: {}", totals.join(", "));
        let width = self
            .class_names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(5, 40);
        let mut header = format!("  {:>4}  {:<width$}", "#", "class");
        for (n, _) in &splits {
            let _ = write!(header, " {n:>8}");
        }
        let _ = writeln!(out, "{}", header.trim_end());
        let rows = counts
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(self.class_names.len());
        for c in 0..rows {
            let name = self.class_names.get(c).map_or("?", String::as_str);
            let mut line = format!("  {c:>4}  {name:<width$}");
            for col in &counts {
                let _ = write!(line, " {:>8}", col.get(c).copied().unwrap_or(0));
            }
            let _ = writeln!(out, "{line}");
        }
        let source = |s: &Subset| {
            if s.is_empty() {
                "(empty)".to_string()
            } else {
                s.describe(0)
            }
        };
        let _ = writeln!(out, "first train sample: {}", source(&self.train));
        let _ = writeln!(out, "first test sample: {}", source(&self.test));
        out
    }
}

/// Mixes several numbers into one well-spread seed (SplitMix64 finalizer over each part), so
/// neighbouring seeds, epochs and positions give unrelated random streams.
pub fn derive_seed(parts: &[u64]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for &p in parts {
        h = splitmix(h ^ splitmix(p));
    }
    h
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sample indices per class, each shuffled with a stream of its own (so adding samples of one
/// class does not reshuffle the others).
fn shuffled_by_class(labels: &[usize], seed: u64) -> Vec<Vec<usize>> {
    let classes = labels.iter().max().map_or(0, |&m| m + 1);
    let mut by_class = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    for (c, members) in by_class.iter_mut().enumerate() {
        let mut rng = StdRng::seed_from_u64(derive_seed(&[seed, c as u64]));
        members.shuffle(&mut rng);
    }
    by_class
}

/// Splits indices `0..labels.len()` into `(keep, held_out)`, class by class: each class holds out
/// `round(fraction * count)` of its samples, at least one when it has two or more samples (and
/// `fraction > 0`), and keeps at least one when `fraction < 1`. Both lists are sorted.
pub fn stratified_split(labels: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let fraction = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    let mut keep = Vec::with_capacity(labels.len());
    let mut held = Vec::new();
    for members in shuffled_by_class(labels, seed) {
        let count = members.len();
        let mut n = (fraction * count as f64).round() as usize;
        if fraction > 0.0 && count >= 2 {
            n = n.max(1);
        }
        if fraction < 1.0 && count >= 1 {
            n = n.min(count - 1);
        }
        let n = n.min(count);
        held.extend_from_slice(&members[..n]);
        keep.extend_from_slice(&members[n..]);
    }
    keep.sort_unstable();
    held.sort_unstable();
    (keep, held)
}

/// `n` indices of `0..labels.len()` (all when `n >= len`), allocated to classes in proportion to
/// their counts by largest remainder, with every class represented when `n` allows. Sorted.
pub fn stratified_subset(labels: &[usize], n: usize, seed: u64) -> Vec<usize> {
    if n >= labels.len() {
        return (0..labels.len()).collect();
    }
    let by_class = shuffled_by_class(labels, seed);
    let total = labels.len() as u128;
    // Exact integer quotas: floor(n * count / total), remainders broken by size, then class.
    let mut alloc: Vec<usize> = Vec::with_capacity(by_class.len());
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(by_class.len());
    for (c, m) in by_class.iter().enumerate() {
        let num = n as u128 * m.len() as u128;
        alloc.push((num / total) as usize);
        remainders.push((num % total, c));
    }
    let mut left = n - alloc.iter().sum::<usize>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, c) in &remainders {
        if left == 0 {
            break;
        }
        if alloc[c] < by_class[c].len() {
            alloc[c] += 1;
            left -= 1;
        }
    }
    // A class that rounded to zero gets one sample from the largest allocation, so a small limit
    // still shows every class (only when there is room for all of them).
    let present = by_class.iter().filter(|m| !m.is_empty()).count();
    if n >= present {
        for c in 0..by_class.len() {
            if alloc[c] == 0 && !by_class[c].is_empty() {
                // The donor is the class furthest above its exact quota n * count / total.
                let surplus = |d: usize| {
                    alloc[d] as i128 * total as i128 - n as i128 * by_class[d].len() as i128
                };
                let donor = (0..alloc.len())
                    .filter(|&d| alloc[d] > 1)
                    .max_by_key(|&d| (surplus(d), usize::MAX - d));
                if let Some(donor) = donor {
                    alloc[donor] -= 1;
                    alloc[c] = 1;
                }
            }
        }
    }
    let mut out: Vec<usize> = by_class
        .iter()
        .zip(&alloc)
        .flat_map(|(m, &a)| m[..a.min(m.len())].iter().copied())
        .collect();
    out.sort_unstable();
    out
}

/// `k` disjoint folds covering `0..labels.len()`. Each class is dealt round-robin over the folds
/// (continuing where the previous class stopped, so fold sizes differ by at most one), so a class
/// has `count / k` or `count / k + 1` samples in every fold. Each fold is sorted. `k == 0` gives
/// no folds.
pub fn stratified_kfold(labels: &[usize], k: usize, seed: u64) -> Vec<Vec<usize>> {
    if k == 0 {
        return Vec::new();
    }
    let mut folds = vec![Vec::with_capacity(labels.len() / k + 1); k];
    let mut next = 0usize;
    for members in shuffled_by_class(labels, seed) {
        for i in members {
            folds[next].push(i);
            next = (next + 1) % k;
        }
    }
    for f in &mut folds {
        f.sort_unstable();
    }
    folds
}

/// The k fold datasets of `pool`'s training split: (train = other folds, test = this fold).
pub fn fold_datasets(pool: &Dataset, k: usize, seed: u64) -> Result<Vec<Dataset>> {
    if k < 2 {
        return Err(Error::invalid(format!(
            "--folds must be at least 2, got {k}"
        )));
    }
    let labels = pool.train.labels();
    if labels.len() < k {
        return Err(Error::invalid(format!(
            "{} training samples cannot make {k} folds",
            labels.len()
        )));
    }
    let folds = stratified_kfold(&labels, k, seed);
    Ok((0..k)
        .map(|i| {
            let train: Vec<usize> = folds
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, f)| f.iter().copied())
                .collect();
            Dataset {
                name: format!("{} fold {}/{k}", pool.name, i + 1),
                class_names: pool.class_names.clone(),
                train: pool.train.select(&train),
                val: None,
                test: pool.train.select(&folds[i]),
            }
        })
        .collect())
}
