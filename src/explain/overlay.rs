//! A map drawn over its image, as pytorch-grad-cam's `show_cam_on_image` draws it (the map
//! resized bilinearly to the image, OpenCV's jet colours, half heat map and half image, rescaled
//! to the brightest pixel), with a colour bar and a caption line (8×8 bitmap glyphs from
//! `font8x8`, so that the PNG needs no font file).

use std::io::Cursor;

use image::{Rgb, RgbImage, imageops};

use super::cam::{Corners, resize_bilinear};
use crate::error::{Error, Result};

/// `explain`'s overlays enlarge smaller images to this side (a 28-pixel map is unreadable).
const MIN_SIDE: u32 = 224;
/// Text is drawn at this multiple of the 8×8 glyphs.
const TEXT_SCALE: u32 = 2;
const GLYPH: u32 = 8 * TEXT_SCALE;
const MARGIN: u32 = 6;
const BAR_WIDTH: u32 = 14;
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([20, 20, 20]);

/// The network's input `(3, H, W)` (normalised) back in 8-bit RGB: `v·std + mean`.
pub fn denormalize(
    pixels: &[f32],
    (h, w): (usize, usize),
    mean: [f32; 3],
    std: [f32; 3],
) -> RgbImage {
    let plane = h * w;
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        Rgb(std::array::from_fn(|c| {
            let v = pixels[c * plane + i] * std[c] + mean[c];
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        }))
    })
}

/// OpenCV's `COLORMAP_JET` for `v` in [0, 1]: blue → cyan → yellow → red.
pub fn jet(v: f32) -> Rgb<u8> {
    let v = v.clamp(0.0, 1.0);
    let channel = |centre: f32| {
        let x = (1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0);
        (x * 255.0).round() as u8
    };
    Rgb([channel(3.0), channel(2.0), channel(1.0)])
}

/// `image` enlarged to at least `min_side` pixels a side, with `cam` (`h × w`, values in
/// [0, 1]) laid over it as pytorch-grad-cam's `show_cam_on_image` does.
pub fn heat_image(
    image: &RgbImage,
    cam: &[f32],
    (h, w): (usize, usize),
    min_side: u32,
) -> RgbImage {
    let scale = (min_side as f32 / image.width().min(image.height()) as f32).max(1.0);
    let (dw, dh) = (
        (image.width() as f32 * scale).round() as u32,
        (image.height() as f32 * scale).round() as u32,
    );
    let shown = if scale > 1.0 {
        imageops::resize(image, dw, dh, imageops::FilterType::Triangle)
    } else {
        image.clone()
    };
    let heat = resize_bilinear(cam, (h, w), (dh as usize, dw as usize), Corners::HalfPixel);
    // show_cam_on_image: 0.5 heat map + 0.5 image, then divided by the brightest value.
    let mixed: Vec<[f32; 3]> = shown
        .pixels()
        .zip(&heat)
        .map(|(p, &v)| {
            let j = jet(v);
            std::array::from_fn(|c| 0.5 * f32::from(j[c]) / 255.0 + 0.5 * f32::from(p[c]) / 255.0)
        })
        .collect();
    let brightest = mixed
        .iter()
        .flat_map(|p| p.iter().copied())
        .fold(f32::MIN_POSITIVE, f32::max);
    RgbImage::from_fn(dw, dh, |x, y| {
        let p = mixed[(y * dw + x) as usize];
        Rgb(p.map(|v| (v / brightest * 255.0).round() as u8))
    })
}

/// [`heat_image`] at least `MIN_SIDE` (224) pixels a side, with a colour bar on the right and
/// `caption` below: what `graft explain --out` writes.
pub fn overlay(image: &RgbImage, cam: &[f32], hw: (usize, usize), caption: &str) -> RgbImage {
    let heat = heat_image(image, cam, hw, MIN_SIDE);
    let (dw, dh) = heat.dimensions();
    let bar_x = dw + MARGIN;
    let width = bar_x + BAR_WIDTH + MARGIN + GLYPH + MARGIN;
    let height = dh + 2 * MARGIN + GLYPH;
    let mut out = RgbImage::from_pixel(width, height, WHITE);
    imageops::replace(&mut out, &heat, 0, 0);
    // Colour bar: 1 at the top, 0 at the bottom.
    for y in 0..dh {
        let colour = jet(1.0 - y as f32 / (dh - 1).max(1) as f32);
        for x in bar_x..bar_x + BAR_WIDTH {
            out.put_pixel(x, y, colour);
        }
    }
    let label_x = bar_x + BAR_WIDTH + MARGIN / 2;
    draw_text(&mut out, label_x, 0, "1");
    draw_text(&mut out, label_x, dh.saturating_sub(GLYPH), "0");
    let fits = (width / GLYPH) as usize;
    let caption: String = if caption.chars().count() > fits {
        let mut short: String = caption.chars().take(fits.saturating_sub(2)).collect();
        short.push_str("..");
        short
    } else {
        caption.to_string()
    };
    draw_text(&mut out, 0, dh + MARGIN, &caption);
    out
}

/// `img` as PNG bytes.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::invalid(format!("encoding a PNG: {e}")))?;
    Ok(out.into_inner())
}

/// Writes `text` at `(x, y)` (top left) in 8×8 glyphs scaled by [`TEXT_SCALE`]; characters
/// outside ASCII are drawn as `?`, anything outside the image is clipped.
fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str) {
    for (i, ch) in text.chars().enumerate() {
        let code = if ch.is_ascii() {
            ch as usize
        } else {
            '?' as usize
        };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 0 {
                    continue;
                }
                for dy in 0..TEXT_SCALE {
                    for dx in 0..TEXT_SCALE {
                        let px = x + (i as u32 * 8 + col) * TEXT_SCALE + dx;
                        let py = y + row as u32 * TEXT_SCALE + dy;
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, INK);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_runs_blue_to_red() {
        assert_eq!(jet(0.0), Rgb([0, 0, 128]));
        assert_eq!(jet(1.0), Rgb([128, 0, 0]));
        assert_eq!(jet(0.5), Rgb([128, 255, 128]));
    }

    #[test]
    fn overlay_enlarges_small_images_and_heats_the_mapped_corner() {
        let img = RgbImage::from_pixel(28, 28, Rgb([128, 128, 128]));
        // Hot bottom-right cell.
        let cam = [0.0, 0.0, 0.0, 1.0];
        let out = overlay(&img, &cam, (2, 2), "Sneaker 0.97");
        assert!(out.width() > 224 && out.height() > 224);
        let hot = out.get_pixel(220, 220);
        let cold = out.get_pixel(3, 3);
        assert!(
            hot[0] > hot[2] && cold[2] > cold[0],
            "hot {hot:?} cold {cold:?}"
        );
        // The caption is inked below the image.
        let caption_ink = (0..out.width())
            .flat_map(|x| (224..out.height()).map(move |y| (x, y)))
            .filter(|&(x, y)| *out.get_pixel(x, y) == INK)
            .count();
        assert!(caption_ink > 50);
    }
}
