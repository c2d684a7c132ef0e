//! Masks predicted for images a segmentation run has never seen (`graft predict --run`:
//! [`SegPredictor`]), and what draws them: the class palette and the colour overlay (also the
//! report's).
//!
//! Each image goes through the run's evaluation transform (resize to the card's size,
//! normalised), the model, an argmax per pixel, and back to the image's own size by nearest
//! neighbour: a predicted mask has the image's size and is a valid graft mask (8-bit class
//! indices).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::data::{Mask, PairTransform};
use super::model_files::SegCard;
use crate::data::Image;
use crate::error::{Error, Result};
use crate::metrics::segmentation::IGNORE_INDEX;
use crate::model::Segmenter;
use crate::tensor::{from_vec, to_vec};

/// Images run through the model at once.
const BATCH: usize = 8;
/// Largest image file read (bytes), as the dataset reads them.
const MAX_FILE_BYTES: u64 = 256 << 20;

/// The mask predicted for one image, at the image's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictedMask {
    /// Class index per pixel, row-major, `width × height`.
    pub mask: Mask,
    /// Pixels per class (`num_classes` entries).
    pub class_pixels: Vec<u64>,
}

/// Reads and decodes the image at `path` (a regular file, JPEG or PNG); errors name the file.
pub fn read_image(path: &Path) -> Result<Image> {
    let bytes = crate::files::read_file_at_most(path, MAX_FILE_BYTES, "image")?;
    Image::decode(path, &bytes)
}

/// Predicts a mask for each image with `model` (pass its
/// [`Segmenter::folded_for_inference`] copy: same masks, less work) and the run's `card`:
/// the evaluation transform, argmax per pixel, nearest-neighbour resize back to each image's
/// size.
pub fn predict_masks(
    model: &Segmenter,
    card: &SegCard,
    images: &[Image],
) -> Result<Vec<PredictedMask>> {
    let device = model.head.weight.device();
    let transform = card.eval_transform();
    let n = transform.size;
    let classes = card.num_classes;
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(BATCH) {
        let mut pixels = Vec::with_capacity(chunk.len() * 3 * n * n);
        for img in chunk {
            pixels.extend(model_input(&transform, img));
        }
        let logits = model.forward(from_vec(pixels, [chunk.len(), 3, n, n], &device));
        let [_, c, h, w] = logits.dims();
        if c != classes || (h, w) != (n, n) {
            return Err(Error::invalid(format!(
                "the model gives {c} classes at {w}x{h}; its card says {classes} at {n}x{n}"
            )));
        }
        let logits = to_vec(logits);
        for (i, img) in chunk.iter().enumerate() {
            let planes = &logits[i * c * h * w..(i + 1) * c * h * w];
            let small = argmax(planes, c, h * w);
            let mask = resize_nearest(&small, n, img.width, img.height);
            let mut class_pixels = vec![0u64; classes];
            for &v in &mask.values {
                class_pixels[v as usize] += 1;
            }
            out.push(PredictedMask { mask, class_pixels });
        }
    }
    Ok(out)
}

/// Images decoded and predicted at once by [`SegPredictor::predict_files`] (bounds the memory
/// of many large images).
const FILE_CHUNK: usize = 8;

/// The mask predicted for one image file, and the files written for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskPrediction {
    /// The image file.
    pub path: PathBuf,
    /// The image's width and height (the mask's).
    pub width: u32,
    /// The image's height.
    pub height: u32,
    /// The predicted mask and its pixels per class.
    pub predicted: PredictedMask,
    /// `OUT/STEM.mask.png` (8-bit gray class indices: a valid graft mask), when written.
    pub mask_file: Option<PathBuf>,
    /// `OUT/STEM.overlay.png` (the image with each class but class 0 blended 50/50 in its
    /// colour: [`class_colour`]), when written.
    pub overlay_file: Option<PathBuf>,
}

/// A finished segmentation run, ready to predict masks.
pub struct SegPredictor {
    /// The run's model with BatchNorm folded into the convolutions (inference only).
    pub model: Segmenter,
    /// The run's card: class names, input size, normalisation.
    pub card: SegCard,
}

impl SegPredictor {
    /// The model of the segmentation run in `run_dir`, on `device`.
    pub fn from_run(run_dir: &Path, device: &burn::tensor::Device) -> Result<Self> {
        let (model, card, _) = super::model_files::load_seg_run(run_dir, device)?;
        // Inference only: BatchNorm folded into the convolutions (same outputs, less work).
        Ok(Self {
            model: model.folded_for_inference(),
            card,
        })
    }

    /// One name per class.
    pub fn labels(&self) -> &[String] {
        &self.card.class_names
    }

    /// The masks of decoded images, each at its image's size.
    pub fn predict_images(&self, images: &[Image]) -> Result<Vec<PredictedMask>> {
        predict_masks(&self.model, &self.card, images)
    }

    /// Predicts the mask of each image file, in order, and hands each to `each` as it is done;
    /// with `out`, first writes `out/STEM.mask.png` and `out/STEM.overlay.png` (`out` is
    /// created if missing). Every file is checked, and every output name distinct
    /// ([`check_mask_inputs`]), before anything is computed or written.
    pub fn predict_files<P: AsRef<Path>, E: From<Error>>(
        &self,
        paths: &[P],
        out: Option<&Path>,
        mut each: impl FnMut(MaskPrediction) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        check_mask_inputs(paths)?;
        if let Some(out) = out {
            std::fs::create_dir_all(out)
                .map_err(|e| Error::file(out, format!("can't create the output folder: {e}")))?;
        }
        for chunk in paths.chunks(FILE_CHUNK) {
            let images = chunk
                .iter()
                .map(|p| read_image(p.as_ref()))
                .collect::<Result<Vec<_>>>()?;
            let predicted = self.predict_images(&images)?;
            for ((path, image), p) in chunk.iter().zip(&images).zip(predicted) {
                let path = path.as_ref();
                let (mut mask_file, mut overlay_file) = (None, None);
                if let Some(out) = out {
                    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                    let m = out.join(format!("{stem}.mask.png"));
                    let o = out.join(format!("{stem}.overlay.png"));
                    crate::files::write_atomic(&m, &mask_png(&p.mask)?)?;
                    let overlay = colour_overlay(image, &p.mask)?;
                    let png = crate::explain::overlay::png_bytes(&overlay)?;
                    crate::files::write_atomic(&o, &png)?;
                    mask_file = Some(m);
                    overlay_file = Some(o);
                }
                each(MaskPrediction {
                    path: path.to_path_buf(),
                    width: image.width,
                    height: image.height,
                    predicted: p,
                    mask_file,
                    overlay_file,
                })?;
            }
        }
        Ok(())
    }

    /// [`SegPredictor::predict_files`], the predictions collected.
    pub fn predict_all<P: AsRef<Path>>(
        &self,
        paths: &[P],
        out: Option<&Path>,
    ) -> Result<Vec<MaskPrediction>> {
        let mut all = Vec::with_capacity(paths.len());
        self.predict_files(paths, out, |p| {
            all.push(p);
            Ok::<(), Error>(())
        })?;
        Ok(all)
    }
}

/// Checks image files before their masks are predicted: each a regular file, each with a file
/// name, and no two with one stem (their `STEM.mask.png` would overwrite each other).
pub fn check_mask_inputs<P: AsRef<Path>>(paths: &[P]) -> Result<()> {
    let mut stems = std::collections::HashMap::new();
    for path in paths {
        let path = path.as_ref();
        crate::files::open_regular(path)?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::file(path, "no file name to name its mask after"))?;
        if let Some(first) = stems.insert(stem.clone(), path) {
            return Err(Error::invalid(format!(
                "{} and {} would both write {stem}.mask.png: predict them in separate runs \
                 (or rename one)",
                first.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

/// `(3·size·size)` normalised CHW floats of `img`: the run's evaluation transform itself
/// (through [`PairTransform::apply`] with an empty mask), so predictions see exactly what
/// evaluation saw.
fn model_input(t: &PairTransform, img: &Image) -> Vec<f32> {
    let blank = Mask {
        width: img.width,
        height: img.height,
        values: vec![0; img.width as usize * img.height as usize],
    };
    // No crop, no flip: the generator is never drawn from.
    let eval = PairTransform {
        crop: false,
        flip: false,
        ..t.clone()
    };
    eval.apply(img, &blank, &mut StdRng::seed_from_u64(0)).0
}

/// The class of highest logit per pixel (the first on ties), from `classes` planes of
/// `plane` values.
fn argmax(logits: &[f32], classes: usize, plane: usize) -> Vec<u8> {
    (0..plane)
        .map(|p| {
            let mut best = 0;
            for k in 1..classes {
                if logits[k * plane + p] > logits[best * plane + p] {
                    best = k;
                }
            }
            best as u8
        })
        .collect()
}

/// A `side × side` class map resized to `width × height` by nearest neighbour (pixel centres,
/// as the transform samples masks).
fn resize_nearest(small: &[u8], side: usize, width: u32, height: u32) -> Mask {
    let (w, h) = (width as usize, height as usize);
    let cols: Vec<usize> = (0..w)
        .map(|x| (((x as f64 + 0.5) * side as f64 / w as f64) as usize).min(side - 1))
        .collect();
    let mut values = Vec::with_capacity(w * h);
    for y in 0..h {
        let sy = (((y as f64 + 0.5) * side as f64 / h as f64) as usize).min(side - 1);
        values.extend(cols.iter().map(|&sx| small[sy * side + sx]));
    }
    Mask {
        width,
        height,
        values,
    }
}

/// Colours of classes 1 to 20 (Kelly's / Trubetskoy's distinct colours); later classes take
/// Pascal VOC's bit-interleaved palette.
const PALETTE: [[u8; 3]; 20] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
    [0, 128, 128],
    [220, 190, 255],
    [170, 110, 40],
    [255, 250, 200],
    [128, 0, 0],
    [170, 255, 195],
    [128, 128, 0],
    [255, 215, 180],
    [0, 0, 128],
    [128, 128, 128],
];

/// The fixed colour of `class` in overlays; `None` for the background (class 0) and ignored
/// pixels (255), which are left uncoloured.
pub fn class_colour(class: u8) -> Option<[u8; 3]> {
    match class {
        0 | IGNORE_INDEX => None,
        c if (c as usize) <= PALETTE.len() => Some(PALETTE[c as usize - 1]),
        c => Some(voc_colour(c)),
    }
}

/// Pascal VOC's palette entry for `class` (its bits spread over the channels' high bits).
fn voc_colour(class: u8) -> [u8; 3] {
    let mut rgb = [0u8; 3];
    let mut c = class;
    for shift in (0..8).rev() {
        for (k, channel) in rgb.iter_mut().enumerate() {
            *channel |= ((c >> k) & 1) << shift;
        }
        c >>= 3;
        if c == 0 {
            break;
        }
    }
    rgb
}

/// `image` (gray or RGB) with every pixel of a coloured class blended 50/50 with the class's
/// colour ([`class_colour`]); background and ignored pixels keep the image's. Same size as
/// the image, which `mask` must have.
pub fn colour_overlay(image: &Image, mask: &Mask) -> Result<RgbImage> {
    if (image.width, image.height) != (mask.width, mask.height) {
        return Err(Error::invalid(format!(
            "a {}x{} mask can't be drawn over a {}x{} image",
            mask.width, mask.height, image.width, image.height
        )));
    }
    let mut out = to_rgb(image);
    for (px, &class) in out.pixels_mut().zip(&mask.values) {
        if let Some(col) = class_colour(class) {
            // Half and half, rounded up.
            px.0 =
                std::array::from_fn(|k| (u16::from(px[k]) + u16::from(col[k])).div_ceil(2) as u8);
        }
    }
    Ok(out)
}

/// `image` as 8-bit RGB (gray replicated).
pub fn to_rgb(image: &Image) -> RgbImage {
    let c = image.channels as usize;
    let w = image.width as usize;
    RgbImage::from_fn(image.width, image.height, |x, y| {
        let i = y as usize * w + x as usize;
        Rgb(std::array::from_fn(|k| image.pixels[i * c + k.min(c - 1)]))
    })
}

/// `mask` as an 8-bit gray PNG of class indices (what [`super::data::read_mask`] reads).
pub fn mask_png(mask: &Mask) -> Result<Vec<u8>> {
    let gray = image::GrayImage::from_raw(mask.width, mask.height, mask.values.clone())
        .ok_or_else(|| Error::invalid("mask buffer does not match its size"))?;
    let mut out = Cursor::new(Vec::new());
    gray.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::invalid(format!("encoding a PNG: {e}")))?;
    Ok(out.into_inner())
}

/// The share of counted pixels (truth not 255) that `predicted` gets right; `None` when no
/// pixel counts or the sizes differ.
pub fn pixel_accuracy(predicted: &Mask, truth: &Mask) -> Option<f64> {
    if (predicted.width, predicted.height) != (truth.width, truth.height) {
        return None;
    }
    let (mut right, mut counted) = (0u64, 0u64);
    for (&p, &t) in predicted.values.iter().zip(&truth.values) {
        if t != IGNORE_INDEX {
            counted += 1;
            right += u64::from(p == t);
        }
    }
    (counted > 0).then(|| right as f64 / counted as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_highest_plane_per_pixel() {
        // 3 classes, 2 pixels: pixel 0 → class 2, pixel 1 → class 0 (tie with 1: the first).
        let logits = [0.0, 1.0, 0.5, 1.0, 0.9, -1.0];
        assert_eq!(argmax(&logits, 3, 2), vec![2, 0]);
    }

    #[test]
    fn nearest_resize_keeps_blocks() {
        let small = [1, 2, 3, 4];
        let m = resize_nearest(&small, 2, 4, 2);
        assert_eq!(m.values, vec![1, 1, 2, 2, 3, 3, 4, 4]);
        let m = resize_nearest(&small, 2, 3, 3);
        // Centres 0.5, 1.5, 2.5 of 3 land at 0.33, 1.0, 1.67 of 2.
        assert_eq!(m.values, vec![1, 2, 2, 3, 4, 4, 3, 4, 4]);
    }

    #[test]
    fn palette_is_distinct_and_skips_background() {
        assert_eq!(class_colour(0), None);
        assert_eq!(class_colour(IGNORE_INDEX), None);
        let colours: std::collections::HashSet<[u8; 3]> =
            (1..IGNORE_INDEX).filter_map(class_colour).collect();
        assert_eq!(colours.len(), 254, "every class has its own colour");
    }

    #[test]
    fn overlay_blends_only_coloured_classes() {
        let img = Image::new(2, 1, 1, vec![100, 100]).unwrap();
        let mask = Mask {
            width: 2,
            height: 1,
            values: vec![0, 1],
        };
        let o = colour_overlay(&img, &mask).unwrap();
        assert_eq!(o.get_pixel(0, 0).0, [100, 100, 100]);
        let c = class_colour(1).unwrap();
        let want: [u8; 3] =
            std::array::from_fn(|k| ((100 + u32::from(c[k])) as f64 / 2.0).round() as u8);
        assert_eq!(o.get_pixel(1, 0).0, want);
        let wrong = Mask {
            width: 1,
            height: 1,
            values: vec![0],
        };
        assert!(colour_overlay(&img, &wrong).is_err());
    }

    #[test]
    fn mask_png_round_trips_and_accuracy_skips_ignored() {
        let mask = Mask {
            width: 3,
            height: 1,
            values: vec![0, 2, 255],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.png");
        std::fs::write(&path, mask_png(&mask).unwrap()).unwrap();
        assert_eq!(super::super::data::read_mask(&path).unwrap(), mask);
        let predicted = Mask {
            values: vec![0, 1, 1],
            ..mask.clone()
        };
        assert_eq!(pixel_accuracy(&predicted, &mask), Some(0.5));
    }
}
