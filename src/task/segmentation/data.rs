//! Segmentation data: images paired with masks of class indices (`seg:DIR`), the paired
//! transforms (the same crop, flip and resize on both; nearest-neighbour for masks) and the
//! batches the network trains on.
//!
//! Layout of `seg:DIR`: `DIR/train/{images,masks}/`, `DIR/test/{images,masks}/` and optionally
//! `DIR/val/{images,masks}/` (else `--val-split` of train), an image `NAME.png|jpg|jpeg` paired
//! with the mask `NAME.png` (8-bit gray or palette PNG of class indices, 255 = ignore), and
//! optionally `DIR/classes.txt` (one class name per line, class 0 first). Without `test/`, a
//! fixed-seed 20% of `train/` is the test split. Every mask is read and checked when the dataset
//! opens, so a bad file stops the run before training, by name.
//!
//! `voc:DIR` reads the Pascal VOC layout: `DIR/JPEGImages/NAME.jpg`,
//! `DIR/SegmentationClass/NAME.png` (palette PNGs whose indices are the 21 classes, 255 on
//! object borders = ignored) and the lists `DIR/ImageSets/Segmentation/{train,val}.txt`; `val`
//! is the test split (VOC's test masks are not public), validation comes from `--val-split`.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::data::Image;
use crate::data::split::derive_seed;
use crate::error::{Error, Result};
use crate::metrics::segmentation::IGNORE_INDEX;

/// Largest image or mask file read (bytes).
const MAX_FILE_BYTES: u64 = 256 << 20;
/// Largest decoded mask (pixels).
const MAX_MASK_PIXELS: u64 = 1 << 28;
/// The share of `train/` held out as the test split when there is no `test/`.
const TEST_FRACTION: f64 = 0.2;
/// Image extensions paired with masks.
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];
/// Class names read from `classes.txt`, at most.
const MAX_CLASSES: usize = 254;

/// One image and its mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegSample {
    /// The image file.
    pub image: PathBuf,
    /// Its mask: a PNG of class indices, the image's size.
    pub mask: PathBuf,
}

/// A segmentation dataset with its splits.
#[derive(Debug, Clone)]
pub struct SegDataset {
    /// The spec it was opened from (`seg:DIR`).
    pub name: String,
    /// Class names, class 0 first (from `classes.txt`, else `class 0`, `class 1`, ...).
    pub class_names: Vec<String>,
    /// The training split.
    pub train: Vec<SegSample>,
    /// The validation split: a `val/` folder, or held out of `train` by `--val-split`.
    pub val: Option<Vec<SegSample>>,
    /// The test split: `test/`, or a share of `train/` when there is none.
    pub test: Vec<SegSample>,
    /// Whether `val` comes from a `val/` folder (then `--val-split` does not apply).
    val_from_folder: bool,
}

/// A decoded mask: class index per pixel, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` class indices (255: ignored).
    pub values: Vec<u8>,
}

/// Whether `spec` names segmentation data.
pub fn is_seg_spec(spec: &str) -> bool {
    spec.starts_with("seg:") || spec.starts_with("voc:")
}

/// Pascal VOC's classes, index order.
pub const VOC_CLASSES: [&str; 21] = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// Most names a VOC image list may hold.
const MAX_LIST_LINES: usize = 1_000_000;

/// The pairs a VOC image list names (`ImageSets/Segmentation/{split}.txt`).
fn voc_pairs(dir: &Path, split: &str) -> Result<Vec<SegSample>> {
    let list = dir
        .join("ImageSets/Segmentation")
        .join(format!("{split}.txt"));
    if !list.is_file() {
        return Err(Error::file(
            &list,
            "missing: voc:DIR wants the Pascal VOC layout (JPEGImages/, SegmentationClass/, \
             ImageSets/Segmentation/train.txt and val.txt)",
        ));
    }
    let text = crate::files::read_text(&list)?;
    let mut out = Vec::new();
    for (i, name) in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i >= MAX_LIST_LINES || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(Error::file(
                &list,
                format!(
                    "line {}: `{name}` is not an image name (or the list is too long)",
                    i + 1
                ),
            ));
        }
        let image = dir.join("JPEGImages").join(format!("{name}.jpg"));
        let mask = dir.join("SegmentationClass").join(format!("{name}.png"));
        for (path, what) in [(&image, "image"), (&mask, "mask")] {
            if !path.is_file() {
                return Err(Error::file(
                    &list,
                    format!("line {}: the {what} {} is missing", i + 1, path.display()),
                ));
            }
        }
        out.push(SegSample { image, mask });
    }
    Ok(out)
}

impl SegDataset {
    /// Opens `seg:DIR` or `voc:DIR`, checking every pair (see the module's documentation).
    pub fn open(spec: &str) -> Result<SegDataset> {
        if let Some(dir) = spec.strip_prefix("voc:") {
            let dir = Path::new(dir);
            if !dir.is_dir() {
                return Err(Error::file(
                    dir,
                    "no such folder (voc:DIR wants VOC2012's layout)",
                ));
            }
            let names = VOC_CLASSES.iter().map(|s| s.to_string()).collect();
            let (train, test) = (voc_pairs(dir, "train")?, voc_pairs(dir, "val")?);
            return Self::checked(
                spec,
                dir,
                train,
                None,
                test,
                Some((dir.to_path_buf(), names)),
            );
        }
        let dir = spec.strip_prefix("seg:").ok_or_else(|| {
            Error::invalid(format!(
                "`{spec}` is not segmentation data: use seg:DIR (DIR/train/images, \
                 DIR/train/masks, ...)"
            ))
        })?;
        let dir = Path::new(dir);
        if !dir.is_dir() {
            return Err(Error::file(
                dir,
                "no such folder (seg:DIR wants DIR/train/images and DIR/train/masks)",
            ));
        }
        let class_names = read_class_names(dir)?;
        let mut train = pairs(&dir.join("train"))?;
        let val = if dir.join("val").is_dir() {
            Some(pairs(&dir.join("val"))?)
        } else {
            None
        };
        let test = if dir.join("test").is_dir() {
            pairs(&dir.join("test"))?
        } else {
            let (keep, held) = random_split(train.len(), TEST_FRACTION, 0);
            let test = held.iter().map(|&i| train[i].clone()).collect();
            train = keep.iter().map(|&i| train[i].clone()).collect();
            test
        };
        Self::checked(spec, dir, train, val, test, class_names)
    }

    /// The dataset of these splits once every pair is checked: sizes, mask format, classes
    /// within `class_names` (`(where they come from, names)`; `None`: from the masks).
    fn checked(
        spec: &str,
        dir: &Path,
        train: Vec<SegSample>,
        val: Option<Vec<SegSample>>,
        test: Vec<SegSample>,
        class_names: Option<(PathBuf, Vec<String>)>,
    ) -> Result<SegDataset> {
        if train.is_empty() || test.is_empty() {
            return Err(Error::file(
                dir,
                "needs at least two image/mask pairs under train/ (one to train on, one to test)",
            ));
        }
        // Every mask read once: sizes against the images, values against the classes.
        let all: Vec<&SegSample> = train
            .iter()
            .chain(val.iter().flatten())
            .chain(&test)
            .collect();
        let highest = all
            .par_iter()
            .map(|s| check_pair(s))
            .collect::<Result<Vec<u8>>>()?
            .into_iter()
            .max()
            .unwrap_or(0);
        let class_names = match class_names {
            Some((path, names)) => {
                if highest as usize >= names.len() {
                    let bad = all
                        .iter()
                        .find_map(|s| {
                            let m = read_mask(&s.mask).ok()?;
                            m.values
                                .iter()
                                .position(|&v| v == highest)
                                .map(|i| (s.mask.clone(), i, m.width))
                        })
                        .expect("the highest value was read from some mask");
                    return Err(Error::file(
                        &bad.0,
                        format!(
                            "pixel ({}, {}) has class {highest}, but {} names {} classes \
                             (0..{}); add the missing names there, or mark the pixel 255 \
                             (ignored)",
                            bad.1 % bad.2 as usize,
                            bad.1 / bad.2 as usize,
                            path.display(),
                            names.len(),
                            names.len() - 1
                        ),
                    ));
                }
                names
            }
            None => (0..=highest as usize)
                .map(|i| format!("class {i}"))
                .collect(),
        };
        if class_names.len() < 2 {
            return Err(Error::file(
                dir,
                "the masks hold a single class: segmentation needs at least two (e.g. \
                 background 0 and object 1)",
            ));
        }
        Ok(SegDataset {
            name: spec.to_string(),
            class_names,
            train,
            val_from_folder: val.is_some(),
            val,
            test,
        })
    }

    /// Holds out `fraction` of train as validation (unless a `val/` folder gave one).
    pub fn with_val_split(mut self, fraction: f64, seed: u64) -> SegDataset {
        if self.val_from_folder || fraction <= 0.0 || self.train.len() < 2 {
            return self;
        }
        let (keep, held) = random_split(self.train.len(), fraction, seed);
        self.val = Some(held.iter().map(|&i| self.train[i].clone()).collect());
        self.train = keep.iter().map(|&i| self.train[i].clone()).collect();
        self
    }

    /// A random subset of `n` training samples.
    pub fn limit_train(mut self, n: usize, seed: u64) -> SegDataset {
        self.train = subset(&self.train, n, seed);
        self
    }

    /// A random subset of `n` test samples.
    pub fn limit_test(mut self, n: usize, seed: u64) -> SegDataset {
        self.test = subset(&self.test, n, seed);
        self
    }

    /// The `k` cross-validation folds of train (fold `i` is the `i`-th dataset's test split).
    pub fn folds(&self, k: usize, seed: u64) -> Result<Vec<SegDataset>> {
        if k < 2 || k > self.train.len() {
            return Err(Error::invalid(format!(
                "{k} folds of {} training samples: use 2 to {}",
                self.train.len(),
                self.train.len()
            )));
        }
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(derive_seed(&[seed, FOLD_TAG])));
        Ok((0..k)
            .map(|f| {
                let pick = |keep: bool| -> Vec<SegSample> {
                    order
                        .iter()
                        .enumerate()
                        .filter(|(pos, _)| (pos % k == f) != keep)
                        .map(|(_, &i)| self.train[i].clone())
                        .collect()
                };
                SegDataset {
                    name: format!("{} (fold {}/{k})", self.name, f + 1),
                    class_names: self.class_names.clone(),
                    train: pick(true),
                    val: None,
                    test: pick(false),
                    val_from_folder: false,
                }
            })
            .collect())
    }

    /// Pixels per class over `samples`' masks (255 left out): what `--class-weights auto`
    /// weighs by.
    pub fn class_pixels(&self, samples: &[SegSample]) -> Result<Vec<usize>> {
        let classes = self.class_names.len();
        samples
            .par_iter()
            .map(|s| {
                let mut counts = vec![0usize; classes];
                for &v in &read_mask(&s.mask)?.values {
                    if (v as usize) < classes {
                        counts[v as usize] += 1;
                    }
                }
                Ok(counts)
            })
            .try_reduce(
                || vec![0; classes],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                    Ok(a)
                },
            )
    }
}

const FOLD_TAG: u64 = 0x5E6F_01D5;
const SPLIT_TAG: u64 = 0x5E6_5917;

/// `(keep, held_out)` positions of `0..n`: `round(fraction·n)` held out (at least one, at most
/// `n − 1`), both sorted.
fn random_split(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(derive_seed(&[seed, SPLIT_TAG])));
    let held = ((fraction * n as f64).round() as usize).clamp(1.min(n), n.saturating_sub(1));
    let (mut h, mut k) = (order[..held].to_vec(), order[held..].to_vec());
    h.sort_unstable();
    k.sort_unstable();
    (k, h)
}

fn subset(samples: &[SegSample], n: usize, seed: u64) -> Vec<SegSample> {
    if n >= samples.len() {
        return samples.to_vec();
    }
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(derive_seed(&[
        seed, SPLIT_TAG, 1,
    ])));
    let mut picked = order[..n].to_vec();
    picked.sort_unstable();
    picked.iter().map(|&i| samples[i].clone()).collect()
}

/// `DIR/classes.txt`, if present: `(path, names)`.
fn read_class_names(dir: &Path) -> Result<Option<(PathBuf, Vec<String>)>> {
    let path = dir.join("classes.txt");
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::files::read_text(&path)?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() < 2 || names.len() > MAX_CLASSES {
        return Err(Error::file(
            &path,
            format!(
                "names {} classes; segmentation needs 2 to {MAX_CLASSES} (one name per line, \
                 class 0 first; 255 is reserved for ignored pixels)",
                names.len()
            ),
        ));
    }
    Ok(Some((path, names)))
}

/// The image/mask pairs of one split folder (`images/`, `masks/`), sorted by name. Every image
/// needs its mask and every mask its image.
fn pairs(split: &Path) -> Result<Vec<SegSample>> {
    let images = split.join("images");
    let masks = split.join("masks");
    for d in [&images, &masks] {
        if !d.is_dir() {
            return Err(Error::file(
                d,
                "missing: a split folder holds images/ and masks/ (same file stems)",
            ));
        }
    }
    let mut out = Vec::new();
    for path in list(&images)? {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !IMAGE_EXTENSIONS.iter().any(|x| ext.eq_ignore_ascii_case(x)) {
            continue;
        }
        let stem = path.file_stem().unwrap_or_default();
        let mask = masks.join(stem).with_extension("png");
        if !mask.is_file() {
            return Err(Error::file(
                &path,
                format!(
                    "has no mask: expected {} (a PNG of class indices with the image's stem)",
                    mask.display()
                ),
            ));
        }
        out.push(SegSample { image: path, mask });
    }
    for mask in list(&masks)? {
        let stem = mask.file_stem().unwrap_or_default();
        let has_image = out.iter().any(|s| s.mask == mask)
            || IMAGE_EXTENSIONS
                .iter()
                .any(|x| images.join(stem).with_extension(x).is_file());
        if !has_image {
            return Err(Error::file(
                &mask,
                format!(
                    "has no image: expected {}/{}.png or .jpg (or remove the mask)",
                    images.display(),
                    stem.to_string_lossy()
                ),
            ));
        }
    }
    Ok(out)
}

/// The files of `dir` (not hidden, not folders), sorted.
fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = crate::data::folder::entries(dir)?;
    files.retain(|p| p.is_file() && !crate::data::folder::is_hidden(p));
    Ok(files)
}

/// Checks one pair (the mask decodes, has the image's size) and returns its highest class
/// (ignored pixels left out).
fn check_pair(s: &SegSample) -> Result<u8> {
    let mask = read_mask(&s.mask)?;
    let (w, h) = image::image_dimensions(&s.image)
        .map_err(|e| Error::file(&s.image, format!("not a readable image: {e}")))?;
    if (w, h) != (mask.width, mask.height) {
        return Err(Error::file(
            &s.mask,
            format!(
                "is {}x{} but its image {} is {w}x{h}: a mask must have its image's size",
                mask.width,
                mask.height,
                s.image.display()
            ),
        ));
    }
    Ok(mask
        .values
        .iter()
        .copied()
        .filter(|&v| v != IGNORE_INDEX)
        .max()
        .unwrap_or(0))
}

/// Decodes a mask PNG to class indices: 8-bit gray, or palette (the index is the class, as in
/// Pascal VOC); anything else (RGB colours, 16-bit) is an error saying what a mask must be.
pub fn read_mask(path: &Path) -> Result<Mask> {
    let bytes = crate::files::read_file_at_most(path, MAX_FILE_BYTES, "mask")?;
    let mut decoder = png::Decoder::new_with_limits(
        std::io::Cursor::new(bytes),
        png::Limits {
            bytes: MAX_MASK_PIXELS as usize,
        },
    );
    decoder.set_transformations(png::Transformations::IDENTITY);
    let bad =
        |e: &dyn std::fmt::Display| Error::file(path, format!("not a readable PNG mask: {e}"));
    let mut reader = decoder.read_info().map_err(|e| bad(&e))?;
    let info = reader.info();
    let (width, height) = (info.width, info.height);
    let (color, depth) = (info.color_type, info.bit_depth);
    if width as u64 * height as u64 > MAX_MASK_PIXELS {
        return Err(Error::file(
            path,
            format!("mask of {width}x{height} pixels is larger than graft reads"),
        ));
    }
    let ok_color = matches!(color, png::ColorType::Grayscale | png::ColorType::Indexed);
    if !ok_color || depth != png::BitDepth::Eight {
        return Err(Error::file(
            path,
            format!(
                "is a {color:?} {depth:?}-bit PNG; a mask is an 8-bit gray (or palette) PNG \
                 whose pixel values are class indices (0, 1, 2, ...; 255 = ignore) — a \
                 colour-coded mask must be converted to indices first"
            ),
        ));
    }
    let mut values = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let frame = reader.next_frame(&mut values).map_err(|e| bad(&e))?;
    values.truncate(frame.buffer_size());
    if values.len() != width as usize * height as usize {
        return Err(bad(&"unexpected row layout"));
    }
    Ok(Mask {
        width,
        height,
        values,
    })
}

/// The paired transform of one split: training (random crop and flip, if asked) or evaluation
/// (resize only), to `size`×`size`, normalised by the backbone's mean and std.
#[derive(Debug, Clone)]
pub struct PairTransform {
    /// The output side in pixels (images and masks are `size`×`size`).
    pub size: usize,
    /// Per-channel mean of the normalisation, on 0..1 pixels.
    pub mean: [f32; 3],
    /// Per-channel standard deviation of the normalisation.
    pub std: [f32; 3],
    /// Random crop: a window of 60–100% of each side at a random place, before the resize.
    pub crop: bool,
    /// Random left-right flip with probability 0.5.
    pub flip: bool,
}

/// Smallest side fraction of a random crop.
const MIN_CROP: f64 = 0.6;

impl PairTransform {
    /// `(3·size·size` normalised CHW floats, `size·size` class indices`)`.
    pub fn apply(&self, img: &Image, mask: &Mask, rng: &mut impl Rng) -> (Vec<f32>, Vec<u8>) {
        let (w, h) = (img.width as usize, img.height as usize);
        let (mut x0, mut y0, mut cw, mut ch) = (0.0, 0.0, w as f64, h as f64);
        if self.crop {
            let s = rng.gen_range(MIN_CROP..=1.0);
            cw = w as f64 * s;
            ch = h as f64 * s;
            x0 = rng.gen_range(0.0..=(w as f64 - cw));
            y0 = rng.gen_range(0.0..=(h as f64 - ch));
        }
        let flip = self.flip && rng.gen_bool(0.5);
        let n = self.size;
        let (sx, sy) = (cw / n as f64, ch / n as f64);
        let mut pixels = vec![0f32; 3 * n * n];
        let mut classes = vec![0u8; n * n];
        let c = img.channels as usize;
        let at = |x: usize, y: usize, ch: usize| img.pixels[(y * w + x) * c + ch.min(c - 1)] as f32;
        for oy in 0..n {
            // Half-pixel centres, as cv2/PIL resize.
            let fy = (y0 + (oy as f64 + 0.5) * sy - 0.5).clamp(0.0, (h - 1) as f64);
            let (y_lo, ty) = (fy.floor() as usize, (fy - fy.floor()) as f32);
            let y_hi = (y_lo + 1).min(h - 1);
            let my = ((y0 + (oy as f64 + 0.5) * sy) as usize).min(h - 1);
            for ox in 0..n {
                let tx_out = if flip { n - 1 - ox } else { ox };
                let fx = (x0 + (ox as f64 + 0.5) * sx - 0.5).clamp(0.0, (w - 1) as f64);
                let (x_lo, tx) = (fx.floor() as usize, (fx - fx.floor()) as f32);
                let x_hi = (x_lo + 1).min(w - 1);
                for k in 0..3 {
                    let top = at(x_lo, y_lo, k) * (1.0 - tx) + at(x_hi, y_lo, k) * tx;
                    let bottom = at(x_lo, y_hi, k) * (1.0 - tx) + at(x_hi, y_hi, k) * tx;
                    let v = (top * (1.0 - ty) + bottom * ty) / 255.0;
                    pixels[(k * n + oy) * n + tx_out] = (v - self.mean[k]) / self.std[k];
                }
                let mx = ((x0 + (ox as f64 + 0.5) * sx) as usize).min(w - 1);
                classes[oy * n + tx_out] = mask.values[my * w + mx];
            }
        }
        (pixels, classes)
    }
}

/// A collated batch: `(n, 3, size, size)` images and `(n, size, size)` masks.
#[derive(Debug, Clone)]
pub struct SegBatch {
    /// `n * 3 * size * size` normalised values, `[n, 3, size, size]` row-major.
    pub images: Vec<f32>,
    /// `n * size * size` class indices, `[n, size, size]` row-major.
    pub masks: Vec<u8>,
    /// Samples in the batch.
    pub n: usize,
    /// The side of every image and mask.
    pub size: usize,
}

/// Loads and transforms `samples` (in parallel) into one batch; `seed` decides the random
/// transforms, per sample (so a resumed run replays them).
pub fn load_batch(samples: &[&SegSample], t: &PairTransform, seed: u64) -> Result<SegBatch> {
    let items: Vec<(Vec<f32>, Vec<u8>)> = samples
        .par_iter()
        .enumerate()
        .map(|(i, s)| {
            let bytes = crate::files::read_file_at_most(&s.image, MAX_FILE_BYTES, "image")?;
            let img = Image::decode(&s.image, &bytes)?;
            let mask = read_mask(&s.mask)?;
            if (img.width, img.height) != (mask.width, mask.height) {
                return Err(Error::file(
                    &s.mask,
                    format!(
                        "is {}x{} but its image is {}x{} (changed since the dataset opened?)",
                        mask.width, mask.height, img.width, img.height
                    ),
                ));
            }
            let mut rng = StdRng::seed_from_u64(derive_seed(&[seed, i as u64]));
            Ok(t.apply(&img, &mask, &mut rng))
        })
        .collect::<Result<_>>()?;
    let n = items.len();
    let mut images = Vec::with_capacity(n * 3 * t.size * t.size);
    let mut masks = Vec::with_capacity(n * t.size * t.size);
    for (p, m) in items {
        images.extend(p);
        masks.extend(m);
    }
    Ok(SegBatch {
        images,
        masks,
        n,
        size: t.size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: u32, h: u32) -> (Image, Mask) {
        let pixels = (0..w * h)
            .flat_map(|i| [(i % w) as u8 * 10, (i / w) as u8 * 10, 7])
            .collect();
        let values = (0..w * h).map(|i| (i % w) as u8).collect();
        (
            Image::new(w, h, 3, pixels).unwrap(),
            Mask {
                width: w,
                height: h,
                values,
            },
        )
    }

    #[test]
    fn identity_transform_keeps_pixels_and_classes() {
        let (img, mask) = ramp(4, 4);
        let t = PairTransform {
            size: 4,
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
            crop: false,
            flip: false,
        };
        let (p, m) = t.apply(&img, &mask, &mut StdRng::seed_from_u64(0));
        assert_eq!(m, mask.values);
        assert!((p[1] - 10.0).abs() < 1e-4 && (p[16 + 4] - 10.0).abs() < 1e-4);
    }

    #[test]
    fn flip_moves_image_and_mask_together() {
        let (img, mask) = ramp(8, 2);
        let t = PairTransform {
            size: 8,
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
            crop: true,
            flip: true,
        };
        for seed in 0..20 {
            let (p, m) = t.apply(&img, &mask, &mut StdRng::seed_from_u64(seed));
            // The red channel is 10 × the column the mask names: wherever the pair went, they
            // went together (up to the bilinear blend of neighbouring columns).
            for (i, &class) in m.iter().enumerate() {
                assert!(
                    (p[i] - 10.0 * class as f32).abs() <= 10.0,
                    "seed {seed} pixel {i}"
                );
            }
        }
    }

    #[test]
    fn split_holds_out_and_keeps() {
        let (k, h) = random_split(10, 0.2, 3);
        assert_eq!((k.len(), h.len()), (8, 2));
        let (k, h) = random_split(2, 0.9, 3);
        assert_eq!((k.len(), h.len()), (1, 1));
    }
}
