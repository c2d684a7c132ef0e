//! Segmentation metrics from per-pixel predictions, as segmentation_models_pytorch (smp 0.6.0)
//! computes them: `smp.metrics.get_stats(pred, truth, mode="multiclass", ignore_index=255)`
//! summed over every image of the split, then `iou_score` / `f1_score` / `recall`.
//!
//! Everything derives from one [`Confusion`] matrix of pixel counts, which is exact (integers)
//! and additive: batches, workers or folds [`Confusion::merge`] into the same numbers as one pass.
//!
//! How smp reduces (read from `metrics/functional.py`, `_compute_metric`):
//! - `"micro"`: tp, fp, fn, tn are summed over images *and* classes, then the score is taken
//!   once. smp applies no zero-division rule there (0/0 is NaN); graft returns 0.
//! - `"macro"`: the stats are summed over images (dimension 0) only, the score is taken per
//!   class on those dataset sums, 0/0 is replaced by `zero_division`, then the class scores are
//!   averaged. It is therefore *not* a mean of per-image scores (that is `"macro-imagewise"`).
//! - `zero_division`: smp's `iou_score` / `f1_score` default to **1.0**, i.e. a class with no
//!   pixel in the truth and none predicted scores a perfect 1. graft uses smp's
//!   `zero_division="warn"`, which scores such a class **0**: an absent class then lowers the
//!   mean instead of flattering it, and [`Confusion::absent_classes`] names the classes so
//!   affected (the report can say so). With no absent class both rules agree.

use super::scores::{Metric, Scores, Tally};

/// Mean intersection-over-union over classes (smp `iou_score`, `reduction="macro"`).
pub const MIOU: Metric = Metric {
    name: "miou",
    label: "mIoU",
    higher_is_better: true,
};

/// The share of counted pixels predicted right (smp `recall`, `reduction="micro"`).
pub const PIXEL_ACCURACY: Metric = Metric {
    name: "pixel_accuracy",
    label: "Pixel accuracy",
    higher_is_better: true,
};

/// Mask value of pixels left out of losses and metrics.
pub const IGNORE_INDEX: u8 = 255;

/// smp's per-class pixel statistics (`get_stats`), over the counted pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassStats {
    /// Pixels of the class predicted as it.
    pub tp: u64,
    /// Pixels of other classes predicted as this one.
    pub fp: u64,
    /// Pixels of the class predicted as another.
    pub fn_: u64,
    /// Every other counted pixel.
    pub tn: u64,
}

/// Pixel counts by (true class, predicted class) over every counted pixel so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    classes: usize,
    /// `classes × classes`, truth-major: `counts[truth * classes + predicted]`.
    counts: Vec<u64>,
}

impl Confusion {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> Confusion {
        Confusion {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// The number of classes (the matrix is `classes × classes`).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Adds one batch: `predicted` class per pixel and `truth` (same length); IGNORE_INDEX pixels
    /// skipped; truth >= classes also skipped (the data layer rejects those earlier).
    ///
    /// A prediction `>= classes` (which no argmax over `classes` logits produces) is skipped
    /// too rather than indexing out of the matrix. Extra elements of the longer slice are
    /// ignored.
    pub fn add(&mut self, predicted: &[u32], truth: &[u8]) {
        debug_assert_eq!(predicted.len(), truth.len(), "one prediction per pixel");
        let c = self.classes;
        for (&p, &t) in predicted.iter().zip(truth) {
            let (p, t) = (p as usize, t as usize);
            if t == IGNORE_INDEX as usize || t >= c || p >= c {
                continue;
            }
            self.counts[t * c + p] += 1;
        }
    }

    /// Adds a batch of logits `(n, c, h, w)` row-major (argmax over c, first max wins) against
    /// `truth` `(n, h, w)`.
    ///
    /// The first maximum wins, as `torch.argmax`; a NaN logit never wins (torch would pick it).
    /// Only the images both slices hold in full are counted, so a short slice cannot panic.
    pub fn add_logits(&mut self, logits: &[f32], shape: [usize; 4], truth: &[u8]) {
        let [n, c, h, w] = shape;
        let hw = h * w;
        if c == 0 || hw == 0 {
            return;
        }
        let images = n.min(logits.len() / (c * hw)).min(truth.len() / hw);
        let mut best = vec![0f32; hw];
        let mut predicted = vec![0u32; hw];
        for i in 0..images {
            let image = &logits[i * c * hw..(i + 1) * c * hw];
            // Class-major sweep: each channel is a contiguous row, read once.
            best.copy_from_slice(&image[..hw]);
            predicted.fill(0);
            for k in 1..c {
                let channel = &image[k * hw..(k + 1) * hw];
                for ((b, p), &v) in best.iter_mut().zip(predicted.iter_mut()).zip(channel) {
                    if v > *b {
                        *b = v;
                        *p = k as u32;
                    }
                }
            }
            self.add(&predicted, &truth[i * hw..(i + 1) * hw]);
        }
    }

    /// Adds another matrix's counts: the same as having added its batches here.
    ///
    /// # Panics
    /// If the class counts differ (a programming error: the two cannot describe one split).
    pub fn merge(&mut self, other: &Confusion) {
        assert_eq!(
            self.classes, other.classes,
            "merging confusion matrices of different class counts"
        );
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// smp's tp, fp, fn, tn per class over the counted pixels.
    pub fn stats(&self) -> Vec<ClassStats> {
        let c = self.classes;
        let pixels = self.pixels();
        (0..c)
            .map(|k| {
                let tp = self.counts[k * c + k];
                let truth: u64 = self.counts[k * c..(k + 1) * c].iter().sum();
                let predicted: u64 = (0..c).map(|t| self.counts[t * c + k]).sum();
                let fp = predicted - tp;
                let fn_ = truth - tp;
                ClassStats {
                    tp,
                    fp,
                    fn_,
                    tn: pixels - tp - fp - fn_,
                }
            })
            .collect()
    }

    /// `tp / (tp + fp + fn)` per class: smp `iou_score` with `reduction=None` on the
    /// dataset-summed stats and `zero_division="warn"` (an absent class scores 0).
    pub fn iou_per_class(&self) -> Vec<f64> {
        self.stats()
            .iter()
            .map(|s| ratio(s.tp, s.tp + s.fp + s.fn_))
            .collect()
    }

    /// Mean of [`Confusion::iou_per_class`]: smp `iou_score`, `reduction="macro"` (absent
    /// classes score 0 and count; see the module doc). 0 for no class.
    pub fn miou(&self) -> f64 {
        mean(&self.iou_per_class())
    }

    /// `Σtp / (Σtp + Σfp + Σfn)` over classes: smp `iou_score`, `reduction="micro"` (smp: NaN
    /// with no pixel; here 0).
    pub fn iou_micro(&self) -> f64 {
        let (tp, errors) = self
            .stats()
            .iter()
            .fold((0, 0), |(tp, e), s| (tp + s.tp, e + s.fp + s.fn_));
        ratio(tp, tp + errors)
    }

    /// `2tp / (2tp + fp + fn)` per class (Dice = F1): smp `f1_score`, `reduction=None`,
    /// `zero_division="warn"`.
    pub fn dice_per_class(&self) -> Vec<f64> {
        self.stats()
            .iter()
            .map(|s| ratio(2 * s.tp, 2 * s.tp + s.fp + s.fn_))
            .collect()
    }

    /// Mean of [`Confusion::dice_per_class`]: smp `f1_score`, `reduction="macro"`.
    pub fn dice(&self) -> f64 {
        mean(&self.dice_per_class())
    }

    /// Correct / counted pixels: smp `recall` with `reduction="micro"` (every counted pixel is
    /// some class's tp or fn). 0 when no pixel was counted.
    pub fn pixel_accuracy(&self) -> f64 {
        let c = self.classes;
        let correct: u64 = (0..c).map(|k| self.counts[k * c + k]).sum();
        ratio(correct, self.pixels())
    }

    /// Classes with tp + fp + fn = 0: in neither the truth nor the predictions of any counted
    /// pixel. Their IoU and Dice are 0/0, scored 0 (see the module doc).
    pub fn absent_classes(&self) -> Vec<usize> {
        self.stats()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.tp + s.fp + s.fn_ == 0)
            .map(|(k, _)| k)
            .collect()
    }

    /// Counted pixels (not ignored, truth and prediction in range).
    pub fn pixels(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `classes × classes` counts, row = truth, column = predicted.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }
}

/// `a / b`, 0 when `b` is 0 (smp's `zero_division="warn"`).
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// An epoch's running segmentation scores: the mean loss over samples (each batch's mean loss
/// weighted by its images, as the classification tally weighs by samples) and the confusion.
#[derive(Debug, Clone, PartialEq)]
pub struct SegTally {
    /// The pixel confusion matrix accumulated so far.
    pub confusion: Confusion,
    loss_sum: f64,
    samples: usize,
}

impl SegTally {
    /// An empty tally for `classes` classes.
    pub fn new(classes: usize) -> SegTally {
        SegTally {
            confusion: Confusion::new(classes),
            loss_sum: 0.0,
            samples: 0,
        }
    }

    /// Adds a batch: logits `(n, c, h, w)` row-major, truth `(n, h, w)`, and the batch's mean
    /// loss (weighted by `n` in the epoch's mean).
    pub fn add(&mut self, logits: &[f32], shape: [usize; 4], truth: &[u8], mean_loss: f64) {
        self.confusion.add_logits(logits, shape, truth);
        self.loss_sum += mean_loss * shape[0] as f64;
        self.samples += shape[0];
    }

    /// Images added so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The sample-weighted mean loss so far (0 before any sample).
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.samples.max(1) as f64
    }
}

impl Tally for SegTally {
    fn scores(&self) -> Scores {
        Scores {
            loss: self.mean_loss(),
            metrics: vec![
                (MIOU.name, self.confusion.miou()),
                (PIXEL_ACCURACY.name, self.confusion.pixel_accuracy()),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Truth `[0, 0, 1, 1]`, predicted `[0, 1, 1, 1]`: class 0 tp 1 fn 1; class 1 tp 2 fp 1.
    #[test]
    fn two_by_two_by_hand() {
        let mut m = Confusion::new(2);
        m.add(&[0, 1, 1, 1], &[0, 0, 1, 1]);
        assert_eq!(m.counts(), &[1, 1, 0, 2]);
        assert_eq!(m.pixels(), 4);
        let s = m.stats();
        assert_eq!(
            s[0],
            ClassStats {
                tp: 1,
                fp: 0,
                fn_: 1,
                tn: 2
            }
        );
        assert_eq!(
            s[1],
            ClassStats {
                tp: 2,
                fp: 1,
                fn_: 0,
                tn: 1
            }
        );
        assert_eq!(m.iou_per_class(), vec![0.5, 2.0 / 3.0]);
        assert!((m.miou() - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-15);
        assert_eq!(m.iou_micro(), 3.0 / 5.0);
        assert_eq!(m.dice_per_class(), vec![2.0 / 3.0, 4.0 / 5.0]);
        assert_eq!(m.pixel_accuracy(), 0.75);
        assert!(m.absent_classes().is_empty());
    }

    #[test]
    fn ignored_and_out_of_range_pixels_are_skipped() {
        let mut m = Confusion::new(3);
        m.add(&[0, 2, 1, 0, 7], &[0, IGNORE_INDEX, 1, 3, 1]);
        assert_eq!(m.pixels(), 2);
        assert_eq!(m.pixel_accuracy(), 1.0);
        // Class 2 was only predicted on an ignored pixel: absent, IoU 0 by smp's "warn" rule.
        assert_eq!(m.absent_classes(), vec![2]);
        assert_eq!(m.iou_per_class(), vec![1.0, 1.0, 0.0]);
        assert!((m.miou() - 2.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn merge_equals_adding_together() {
        let (p1, t1) = ([0u32, 1, 2, 2, 1], [0u8, 1, 1, IGNORE_INDEX, 2]);
        let (p2, t2) = ([2u32, 2, 0], [2u8, 0, 0]);
        let mut together = Confusion::new(3);
        together.add(&p1, &t1);
        together.add(&p2, &t2);
        let mut a = Confusion::new(3);
        a.add(&p1, &t1);
        let mut b = Confusion::new(3);
        b.add(&p2, &t2);
        a.merge(&b);
        assert_eq!(a, together);
    }

    #[test]
    fn logits_argmax_first_max_wins() {
        // n 1, c 3, 1×3 pixels: pixel 0 ties classes 0 and 2 → 0; pixel 1 → 1; pixel 2 → 2.
        let logits = [1.0, 0.0, 0.0, 0.0, 5.0, 1.0, 1.0, 0.0, 3.0];
        let mut m = Confusion::new(3);
        m.add_logits(&logits, [1, 3, 1, 3], &[0, 1, 2]);
        assert_eq!(m.pixel_accuracy(), 1.0);
        assert_eq!(m.pixels(), 3);
        // A short slice counts only whole images.
        m.add_logits(&logits[..5], [1, 3, 1, 3], &[0, 1, 2]);
        assert_eq!(m.pixels(), 3);
    }

    #[test]
    fn empty_input_scores_zero() {
        for classes in [0, 4] {
            let mut m = Confusion::new(classes);
            m.add(&[], &[]);
            m.add_logits(&[], [0, classes, 2, 2], &[]);
            assert_eq!(m.pixels(), 0);
            for v in [m.miou(), m.iou_micro(), m.dice(), m.pixel_accuracy()] {
                assert_eq!(v, 0.0);
            }
            assert_eq!(m.absent_classes().len(), classes);
        }
        let t = SegTally::new(2);
        assert_eq!(
            t.scores(),
            Scores {
                loss: 0.0,
                metrics: vec![("miou", 0.0), ("pixel_accuracy", 0.0)]
            }
        );
    }

    #[test]
    fn tally_weighs_loss_by_samples() {
        let mut t = SegTally::new(2);
        // One image of 2 pixels, both right.
        t.add(&[1.0, 0.0, 0.0, 1.0], [1, 2, 1, 2], &[0, 1], 3.0);
        // Three images of one pixel each (one ignored), all wrong.
        t.add(
            &[0.0, 1.0, 1.0, 0.0, 0.0, 1.0],
            [3, 2, 1, 1],
            &[0, 1, IGNORE_INDEX],
            1.0,
        );
        let s = t.scores();
        assert_eq!(s.loss, (3.0 + 3.0) / 4.0);
        assert_eq!(s.get("pixel_accuracy"), Some(0.5));
        assert_eq!(t.confusion.counts(), &[1, 1, 1, 1]);
        assert_eq!(s.get("miou"), Some(1.0 / 3.0));
    }
}
