//! Image → model input: the preprocessing and augmentation steps, torchvision-compatible.
//!
//! Pixels are converted from u8 to f32 (÷255, as `ToTensor`) exactly once, and every later step
//! works on f32 planes (CHW). That keeps the geometry exact (a bilinear resize sees the same
//! values as `F.interpolate` on a float tensor) and avoids round trips through 8 bits.
//! Gray images are kept one-plane through the geometric steps and replicated to three channels
//! only when needed (before `Normalize`, or at the end): replication commutes with resizing,
//! cropping and flipping, so the result is identical and those steps do a third of the work.

use std::cell::RefCell;

use rand::Rng;

use crate::data::image::Image;
use crate::error::{Error, Result};

/// ImageNet-style evaluation crops resize the shorter side to `size / 0.875` (256 for 224).
pub const SHORTER_CROP_RATIO: f64 = 0.875;

/// One preprocessing or augmentation step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Gray → 3 identical channels (RGB is left alone).
    ToRgb,
    /// Bilinear resize to `w`×`h`, as `F.interpolate(mode="bilinear", align_corners=False,
    /// antialias=False)` on the float image.
    Resize {
        /// Output width in pixels.
        w: usize,
        /// Output height in pixels.
        h: usize,
    },
    /// Bilinear resize so the shorter side is `size`; the longer is `size * long / short`
    /// truncated (torchvision `Resize(int)`).
    ResizeShorter(usize),
    /// `auto` resize: the shorter side to `size` when the image is smaller than `size` (an
    /// upscaled small image, e.g. 28 px Fashion-MNIST at 64: all of it is object, and the
    /// training transform sees it whole), else to `shorter` (the ImageNet convention).
    ResizeShorterAuto {
        /// The training resolution (the crop's side).
        size: usize,
        /// The shorter side for images at least `size` (`size / 0.875`, see
        /// [`SHORTER_CROP_RATIO`]).
        shorter: usize,
    },
    /// Central `size`×`size` window (torchvision `CenterCrop`: offsets rounded half to even,
    /// zero padding when the image is smaller).
    CenterCrop(usize),
    /// torchvision `RandomCrop(size, padding)`: pad every side with `padding` zeros, then take a
    /// `size`×`size` window at offsets drawn uniformly (top first, then left).
    RandomCrop {
        /// The window's side in pixels.
        size: usize,
        /// Zeros added on every side before cropping.
        padding: usize,
    },
    /// Mirror left-right with probability 0.5.
    RandomHorizontalFlip,
    /// `(x - mean[c]) / std[c]` per channel (a one-channel image uses index 0).
    Normalize {
        /// Per-channel mean, on the `[0, 1]` scale.
        mean: [f32; 3],
        /// Per-channel standard deviation, on the `[0, 1]` scale.
        std: [f32; 3],
    },
    /// Fails unless the image is exactly `w`×`h` (resize mode `none`).
    RequireSize {
        /// Required width in pixels.
        w: usize,
        /// Required height in pixels.
        h: usize,
    },
}

impl Step {
    fn describe(&self) -> String {
        match self {
            Step::ToRgb => "to_rgb".into(),
            Step::Resize { w, h } => format!("resize({w}x{h})"),
            Step::ResizeShorter(s) => format!("resize_shorter({s})"),
            Step::ResizeShorterAuto { size, shorter } => {
                format!("resize_shorter(<{size}: {size}, else {shorter})")
            }
            Step::CenterCrop(s) => format!("center_crop({s})"),
            Step::RandomCrop { size, padding } => format!("random_crop({size},pad={padding})"),
            Step::RandomHorizontalFlip => "random_hflip(0.5)".into(),
            // `{:?}` prints the shortest text that reads back to the same f32, so two pipelines
            // have the same description only if their constants are identical.
            Step::Normalize { mean, std } => format!("normalize(mean={mean:?},std={std:?})"),
            Step::RequireSize { w, h } => format!("require({w}x{h})"),
        }
    }

    fn validate(&self) -> Result<()> {
        let positive = |v: usize, what: &str| {
            if v == 0 {
                Err(Error::invalid(format!(
                    "transform {}: {what} must be positive",
                    self.describe()
                )))
            } else {
                Ok(())
            }
        };
        match *self {
            Step::Resize { w, h } | Step::RequireSize { w, h } => {
                positive(w, "width")?;
                positive(h, "height")
            }
            Step::ResizeShorter(s) | Step::CenterCrop(s) => positive(s, "size"),
            Step::ResizeShorterAuto { size, shorter } => {
                positive(size, "size")?;
                positive(shorter, "size")
            }
            Step::RandomCrop { size, .. } => positive(size, "size"),
            Step::Normalize { mean, std } => {
                if std.iter().chain(&mean).any(|v| !v.is_finite()) || std.contains(&0.0) {
                    return Err(Error::invalid(format!(
                        "transform {}: mean and std must be finite and std non-zero",
                        self.describe()
                    )));
                }
                Ok(())
            }
            Step::ToRgb | Step::RandomHorizontalFlip => Ok(()),
        }
    }
}

/// Which random choices a training pipeline makes (the `augment` setting: `crop,flip`, `crop`,
/// `flip` or `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Augment {
    /// Random crop with zero padding.
    pub crop: bool,
    /// Random horizontal flip.
    pub flip: bool,
}

impl std::str::FromStr for Augment {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut augment = Augment::default();
        for part in s.split(',').map(str::trim) {
            match part {
                "crop" => augment.crop = true,
                "flip" => augment.flip = true,
                "none" | "" => {}
                other => {
                    return Err(Error::invalid(format!(
                        "--augment: unknown `{other}` (use crop,flip, crop, flip or none)"
                    )));
                }
            }
        }
        Ok(augment)
    }
}

impl std::fmt::Display for Augment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match (self.crop, self.flip) {
            (true, true) => "crop,flip",
            (true, false) => "crop",
            (false, true) => "flip",
            (false, false) => "none",
        })
    }
}

crate::text_setting!(Augment);

/// How evaluation images are brought to the input size (the `resize` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// `shorter-crop`: shorter side to `floor(size / 0.875)`, then the central `size`×`size`.
    ShorterCrop,
    /// `auto`: as `shorter-crop`, except that an image smaller than `size` is brought to `size`
    /// and only its longer side cropped (no 12% border lost from an upscaled small image).
    Auto,
    /// `exact`: stretched to `size`×`size`.
    Exact,
    /// `none`: the image must already be `size`×`size`.
    None,
}

impl std::str::FromStr for Resize {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "shorter-crop" => Ok(Self::ShorterCrop),
            "auto" => Ok(Self::Auto),
            "exact" => Ok(Self::Exact),
            "none" => Ok(Self::None),
            other => Err(Error::invalid(format!(
                "--resize must be auto, shorter-crop, exact or none, got `{other}`"
            ))),
        }
    }
}

impl std::fmt::Display for Resize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ShorterCrop => "shorter-crop",
            Self::Auto => "auto",
            Self::Exact => "exact",
            Self::None => "none",
        })
    }
}

crate::text_setting!(Resize);

/// An ordered list of steps; the output is CHW f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    steps: Vec<Step>,
}

/// u8 → f32 / 255, computed once; division (not multiplication by 1/255) so values equal
/// torchvision's `ToTensor` bit for bit.
static TO_UNIT: [f32; 256] = {
    let mut t = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as f32 / 255.0;
        i += 1;
    }
    t
};

/// Buffers kept per thread between images: fresh multi-megabyte allocations go back to the OS
/// and page-fault again on every use, which costs more than the transform itself.
/// A step needs at most three live buffers (input, output, the resize's intermediate).
const POOL_SIZE: usize = 3;
/// Buffers above this many floats (16 MB, a 1280x1024 RGB image) are not kept, so a folder of
/// photos does not leave each thread holding hundreds of megabytes.
const POOL_MAX_FLOATS: usize = 4 << 20;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A zeroed buffer of `len` floats, reusing a pooled allocation when there is one.
fn buffer(len: usize) -> Vec<f32> {
    let mut v = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    v.clear();
    v.resize(len, 0.0);
    v
}

fn recycle(v: Vec<f32>) {
    if v.capacity() == 0 || v.capacity() > POOL_MAX_FLOATS {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_SIZE {
            p.push(v);
        }
    });
}

/// The image being transformed: `c` stored planes of `h`×`w`.
struct Planes {
    c: usize,
    h: usize,
    w: usize,
    data: Vec<f32>,
    /// A gray image that is logically RGB (see the module note).
    replicate: bool,
}

impl Planes {
    fn from_image(img: &Image) -> Planes {
        let (w, h, c) = (
            img.width as usize,
            img.height as usize,
            img.channels as usize,
        );
        let plane = w * h;
        let mut data = buffer(plane * c);
        if c == 1 {
            for (d, &p) in data.iter_mut().zip(&img.pixels) {
                *d = TO_UNIT[p as usize];
            }
        } else {
            let (r, rest) = data.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for (((px, r), g), b) in img.pixels.chunks_exact(3).zip(r).zip(g).zip(b) {
                *r = TO_UNIT[px[0] as usize];
                *g = TO_UNIT[px[1] as usize];
                *b = TO_UNIT[px[2] as usize];
            }
        }
        Planes {
            c,
            h,
            w,
            data,
            replicate: false,
        }
    }

    fn channels(&self) -> usize {
        if self.replicate { 3 } else { self.c }
    }

    /// Replaces the pixels with `data` (its old buffer goes back to the pool).
    fn set(&mut self, data: Vec<f32>) {
        recycle(std::mem::replace(&mut self.data, data));
    }

    fn materialize(&mut self) {
        if self.replicate {
            let mut data = buffer(self.data.len() * 3);
            for dst in data.chunks_exact_mut(self.data.len()) {
                dst.copy_from_slice(&self.data);
            }
            self.set(data);
            self.c = 3;
            self.replicate = false;
        }
    }

    /// Writes the result (three-channel if pending) into `out`, which must fit exactly.
    fn write_to(&self, out: &mut [f32]) -> bool {
        let n = self.data.len();
        if self.replicate && out.len() == 3 * n && n > 0 {
            for dst in out.chunks_exact_mut(n) {
                dst.copy_from_slice(&self.data);
            }
            true
        } else if !self.replicate && out.len() == n {
            out.copy_from_slice(&self.data);
            true
        } else {
            false
        }
    }

    /// The `oh`×`ow` window whose top-left corner is at (`top`, `left`) (possibly negative);
    /// pixels outside the image are zero.
    fn window(&mut self, top: i64, left: i64, oh: usize, ow: usize) {
        if top == 0 && left == 0 && oh == self.h && ow == self.w {
            return;
        }
        let (h, w) = (self.h as i64, self.w as i64);
        let mut out = buffer(self.c * oh * ow);
        // Output columns that land inside the image, and where they start in the source.
        let x0 = (-left).clamp(0, ow as i64) as usize;
        let x1 = (w - left).clamp(0, ow as i64) as usize;
        if x0 < x1 {
            for ch in 0..self.c {
                let src = &self.data[ch * self.h * self.w..(ch + 1) * self.h * self.w];
                let dst = &mut out[ch * oh * ow..(ch + 1) * oh * ow];
                for y in 0..oh {
                    let sy = top + y as i64;
                    if sy < 0 || sy >= h {
                        continue;
                    }
                    let s = sy as usize * self.w + (left + x0 as i64) as usize;
                    dst[y * ow + x0..y * ow + x1].copy_from_slice(&src[s..s + (x1 - x0)]);
                }
            }
        }
        self.set(out);
        self.h = oh;
        self.w = ow;
    }

    fn flip(&mut self) {
        for row in self.data.chunks_exact_mut(self.w) {
            row.reverse();
        }
    }

    /// Separable bilinear resize: a horizontal pass over the input rows that the vertical pass
    /// reads, then the vertical pass. Per output pixel this is
    /// `(a*wx0 + b*wx1)*wy0 + (c*wx0 + d*wx1)*wy1`, the same sum in the same order as PyTorch's
    /// CPU kernel for float tensors.
    fn resize(&mut self, ow: usize, oh: usize) {
        if ow == self.w && oh == self.h {
            return;
        }
        let (iw, ih) = (self.w, self.h);
        let xs = linear_taps(iw, ow);
        let ys = linear_taps(ih, oh);
        let mut needed = vec![false; ih];
        for t in &ys {
            needed[t.i0] = true;
            needed[t.i1] = true;
        }
        let mut out = buffer(self.c * oh * ow);
        let mut tmp = buffer(ih * ow);
        for ch in 0..self.c {
            let src = &self.data[ch * ih * iw..(ch + 1) * ih * iw];
            // Horizontal: input row → `ow` values.
            for (y, row) in src.chunks_exact(iw).enumerate() {
                if !needed[y] {
                    continue;
                }
                let dst = &mut tmp[y * ow..(y + 1) * ow];
                if ow == iw {
                    dst.copy_from_slice(row);
                } else {
                    for (d, t) in dst.iter_mut().zip(&xs) {
                        *d = row[t.i0] * t.w0 + row[t.i1] * t.w1;
                    }
                }
            }
            // Vertical: blend two horizontal rows.
            let dst = &mut out[ch * oh * ow..(ch + 1) * oh * ow];
            for (row, t) in dst.chunks_exact_mut(ow).zip(&ys) {
                let a = &tmp[t.i0 * ow..(t.i0 + 1) * ow];
                if oh == ih {
                    row.copy_from_slice(a);
                } else {
                    let b = &tmp[t.i1 * ow..(t.i1 + 1) * ow];
                    for ((o, &a), &b) in row.iter_mut().zip(a).zip(b) {
                        *o = a * t.w0 + b * t.w1;
                    }
                }
            }
        }
        recycle(tmp);
        self.set(out);
        self.w = ow;
        self.h = oh;
    }
}

/// Two source taps and their weights for one output coordinate.
struct Tap {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

/// PyTorch's `align_corners=False` source coordinates: `src = (dst + 0.5) * in/out - 0.5`,
/// clamped at 0; the right tap is clamped at the last pixel. Computed in f32 like PyTorch.
fn linear_taps(input: usize, output: usize) -> Vec<Tap> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            let w1 = (src - i0 as f32).clamp(0.0, 1.0);
            Tap {
                i0,
                i1,
                w0: 1.0 - w1,
                w1,
            }
        })
        .collect()
}

/// Python's `round(x / 2)` for a non-negative integer `x`: halves go to the even neighbour.
fn half_round_even(x: usize) -> usize {
    let k = x / 2;
    if x % 2 == 1 && k % 2 == 1 { k + 1 } else { k }
}

/// torchvision's `center_crop` offset along one axis (negative: the image is zero padded).
fn center_offset(input: usize, crop: usize) -> i64 {
    if input >= crop {
        half_round_even(input - crop) as i64
    } else {
        -(((crop - input) / 2) as i64)
    }
}

/// torchvision `Resize(int)`: the shorter side becomes `size`, the longer keeps the ratio,
/// truncated.
fn shorter_side_dims(w: usize, h: usize, size: usize) -> (usize, usize) {
    let scaled =
        |long: usize, short: usize| ((size as u128 * long as u128) / short as u128).max(1) as usize;
    if w <= h {
        (size, scaled(h, w))
    } else {
        (scaled(w, h), size)
    }
}

impl Pipeline {
    /// A pipeline of the given steps (checked: positive sizes, finite mean/std, std ≠ 0).
    pub fn new(steps: Vec<Step>) -> Result<Pipeline> {
        for s in &steps {
            s.validate()?;
        }
        Ok(Pipeline { steps })
    }

    /// The steps in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The evaluation transform: RGB, bring to `size`×`size` as `resize` says, normalize.
    pub fn eval(size: usize, mean: [f32; 3], std: [f32; 3], resize: Resize) -> Result<Pipeline> {
        let mut steps = vec![Step::ToRgb];
        match resize {
            Resize::ShorterCrop => {
                let shorter = ((size as f64 / SHORTER_CROP_RATIO).floor() as usize).max(size);
                steps.push(Step::ResizeShorter(shorter));
                steps.push(Step::CenterCrop(size));
            }
            Resize::Auto => {
                let shorter = ((size as f64 / SHORTER_CROP_RATIO).floor() as usize).max(size);
                steps.push(Step::ResizeShorterAuto { size, shorter });
                steps.push(Step::CenterCrop(size));
            }
            Resize::Exact => steps.push(Step::Resize { w: size, h: size }),
            Resize::None => steps.push(Step::RequireSize { w: size, h: size }),
        }
        steps.push(Step::Normalize { mean, std });
        Pipeline::new(steps)
    }

    /// The training transform: RGB, shorter side to `size`, then a `size`×`size` window (random
    /// with `padding` zeros around when `augment.crop`, else central), an optional random flip,
    /// normalize. For square datasets (CIFAR, MNIST) the resize is a plain stretch, or nothing
    /// at the native size.
    pub fn train(
        size: usize,
        mean: [f32; 3],
        std: [f32; 3],
        augment: Augment,
        padding: usize,
    ) -> Result<Pipeline> {
        let mut steps = vec![Step::ToRgb, Step::ResizeShorter(size)];
        steps.push(if augment.crop {
            Step::RandomCrop { size, padding }
        } else {
            Step::CenterCrop(size)
        });
        if augment.flip {
            steps.push(Step::RandomHorizontalFlip);
        }
        steps.push(Step::Normalize { mean, std });
        Pipeline::new(steps)
    }

    /// A stable text form of the steps and their constants (a cache key).
    pub fn describe(&self) -> String {
        self.steps
            .iter()
            .map(Step::describe)
            .collect::<Vec<_>>()
            .join(" > ")
    }

    /// Runs the steps; returns CHW f32 values and `[c, h, w]`. Random steps draw from `rng`
    /// in step order, so the same image and rng state give the same output.
    pub fn apply(&self, img: &Image, rng: &mut impl Rng) -> Result<(Vec<f32>, [usize; 3])> {
        let mut p = self.run(img, rng)?;
        p.materialize();
        let shape = [p.c, p.h, p.w];
        Ok((std::mem::take(&mut p.data), shape))
    }

    /// Like [`Pipeline::apply`], but writes into `out` (e.g. the image's slot in a batch), which
    /// must hold exactly `c * h * w` values (see [`Pipeline::output_shape`]).
    pub fn apply_into(
        &self,
        img: &Image,
        rng: &mut impl Rng,
        out: &mut [f32],
    ) -> Result<[usize; 3]> {
        let p = self.run(img, rng)?;
        let shape = [p.channels(), p.h, p.w];
        if !p.write_to(out) {
            return Err(Error::invalid(format!(
                "transformed image is {shape:?} = {} values, the output slot holds {}",
                shape.iter().product::<usize>(),
                out.len()
            )));
        }
        Ok(shape)
    }

    /// The `[c, h, w]` that [`Pipeline::apply`] produces for a `width`×`height` image with
    /// `channels` channels, or the error it would give for that size.
    pub fn output_shape(&self, width: usize, height: usize, channels: usize) -> Result<[usize; 3]> {
        let (mut c, mut w, mut h) = (channels, width, height);
        for step in &self.steps {
            match *step {
                Step::ToRgb => c = c.max(3),
                Step::Resize { w: nw, h: nh } => (w, h) = (nw, nh),
                Step::ResizeShorter(size) => (w, h) = shorter_side_dims(w, h, size),
                Step::ResizeShorterAuto { size, shorter } => {
                    (w, h) = shorter_side_dims(w, h, auto_shorter(w, h, size, shorter))
                }
                Step::CenterCrop(size) => (w, h) = (size, size),
                Step::RandomCrop { size, padding } => {
                    random_crop_fits(w, h, size, padding)?;
                    (w, h) = (size, size);
                }
                Step::RandomHorizontalFlip | Step::Normalize { .. } => {}
                Step::RequireSize { w: rw, h: rh } => require_size(w, h, rw, rh)?,
            }
        }
        Ok([c, h, w])
    }

    /// The steps on f32 planes; a gray image may still be pending replication.
    fn run(&self, img: &Image, rng: &mut impl Rng) -> Result<Planes> {
        img.validate()?;
        let mut p = Planes::from_image(img);
        for step in &self.steps {
            match *step {
                Step::ToRgb => {
                    if p.c == 1 {
                        p.replicate = true;
                    }
                }
                Step::Resize { w, h } => p.resize(w, h),
                Step::ResizeShorter(size) => {
                    let (w, h) = shorter_side_dims(p.w, p.h, size);
                    p.resize(w, h);
                }
                Step::ResizeShorterAuto { size, shorter } => {
                    let target = auto_shorter(p.w, p.h, size, shorter);
                    let (w, h) = shorter_side_dims(p.w, p.h, target);
                    p.resize(w, h);
                }
                Step::CenterCrop(size) => {
                    let top = center_offset(p.h, size);
                    let left = center_offset(p.w, size);
                    p.window(top, left, size, size);
                }
                Step::RandomCrop { size, padding } => {
                    let (ph, pw) = random_crop_fits(p.w, p.h, size, padding)?;
                    // torchvision draws the top offset first, then the left one.
                    let top = rng.gen_range(0..=ph - size) as i64 - padding as i64;
                    let left = rng.gen_range(0..=pw - size) as i64 - padding as i64;
                    p.window(top, left, size, size);
                }
                Step::RandomHorizontalFlip => {
                    if rng.r#gen::<f32>() < 0.5 {
                        p.flip();
                    }
                }
                Step::Normalize { mean, std } => {
                    p.materialize();
                    let plane = p.h * p.w;
                    for (ch, values) in p.data.chunks_exact_mut(plane).enumerate() {
                        let (m, s) = (mean[ch.min(2)], std[ch.min(2)]);
                        for v in values {
                            *v = (*v - m) / s;
                        }
                    }
                }
                Step::RequireSize { w, h } => require_size(p.w, p.h, w, h)?,
            }
        }
        Ok(p)
    }
}

impl Drop for Planes {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.data));
    }
}

/// The shorter side the `auto` resize brings a `w`×`h` image to.
fn auto_shorter(w: usize, h: usize, size: usize, shorter: usize) -> usize {
    if w.min(h) < size { size } else { shorter }
}

/// The padded size, or an error when the crop does not fit even after padding.
fn random_crop_fits(w: usize, h: usize, size: usize, padding: usize) -> Result<(usize, usize)> {
    let pad2 = padding.saturating_mul(2);
    let (ph, pw) = (h.saturating_add(pad2), w.saturating_add(pad2));
    if ph < size || pw < size {
        return Err(Error::invalid(format!(
            "random crop {size}x{size} does not fit in the {w}x{h} image padded by {padding}"
        )));
    }
    Ok((ph, pw))
}

fn require_size(w: usize, h: usize, want_w: usize, want_h: usize) -> Result<()> {
    if (w, h) != (want_w, want_h) {
        return Err(Error::invalid(format!(
            "image is {w}x{h}, expected exactly {want_w}x{want_h} (resize mode `none`; use \
             `exact` or `shorter-crop` to resize)"
        )));
    }
    Ok(())
}
