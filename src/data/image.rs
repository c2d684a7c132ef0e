//! The decoded image every source hands out: 8-bit pixels, HWC row-major, gray or RGB.

use std::path::Path;

use crate::error::{Error, Result};

/// A decoded image. `pixels[(y * width + x) * channels + c]` is channel `c` at column `x`, row `y`.
///
/// Sources produce 8-bit pixels because that is what the files hold; the transform pipeline
/// converts to `f32` exactly once (see [`crate::data::transform`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels (columns).
    pub width: u32,
    /// Height in pixels (rows).
    pub height: u32,
    /// 1 (gray) or 3 (RGB).
    pub channels: u8,
    /// HWC row-major, `width * height * channels` bytes.
    pub pixels: Vec<u8>,
}

impl Image {
    /// Builds an image, checking that the buffer matches the dimensions.
    pub fn new(width: u32, height: u32, channels: u8, pixels: Vec<u8>) -> Result<Image> {
        let img = Image {
            width,
            height,
            channels,
            pixels,
        };
        img.validate()?;
        Ok(img)
    }

    /// Builds an image from planar (CHW) bytes, the layout of CIFAR records.
    pub fn from_chw(width: u32, height: u32, channels: u8, chw: &[u8]) -> Result<Image> {
        let plane = (width as usize)
            .checked_mul(height as usize)
            .ok_or_else(|| Error::invalid(format!("image {width}x{height} is too large")))?;
        let c = channels as usize;
        if plane.checked_mul(c) != Some(chw.len()) {
            return Err(Error::invalid(format!(
                "planar image {width}x{height}x{channels} needs {} bytes, got {}",
                plane.saturating_mul(c),
                chw.len()
            )));
        }
        let mut pixels = vec![0u8; chw.len()];
        if c == 1 {
            pixels.copy_from_slice(chw);
        } else {
            // Interleave plane by plane; each inner loop walks one source plane linearly.
            for (ch, src) in chw.chunks_exact(plane).enumerate() {
                for (dst, &v) in pixels[ch..].iter_mut().step_by(c).zip(src) {
                    *dst = v;
                }
            }
        }
        Image::new(width, height, channels, pixels)
    }

    /// Decodes JPEG or PNG bytes read from `path` (named in the error). Gray images stay
    /// one-channel (the pipeline's `ToRgb` replicates them cheaply); everything else becomes RGB
    /// (alpha is dropped, 16-bit is reduced to 8-bit).
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Image> {
        let img = image::load_from_memory(bytes)
            .map_err(|e| Error::file(path, format!("not a decodable image: {e}")))?;
        let (width, height) = (img.width(), img.height());
        if width == 0 || height == 0 {
            return Err(Error::file(
                path,
                format!("image has no pixels ({width}x{height})"),
            ));
        }
        let gray = matches!(
            img.color(),
            image::ColorType::L8
                | image::ColorType::L16
                | image::ColorType::La8
                | image::ColorType::La16
        );
        let (channels, pixels) = if gray {
            (1, img.into_luma8().into_raw())
        } else {
            (3, img.into_rgb8().into_raw())
        };
        Image::new(width, height, channels, pixels).map_err(|e| Error::file(path, e.to_string()))
    }

    /// Checks the invariants: 1 or 3 channels, non-empty, buffer length = w * h * c.
    pub fn validate(&self) -> Result<()> {
        if self.channels != 1 && self.channels != 3 {
            return Err(Error::invalid(format!(
                "image has {} channels; only 1 (gray) and 3 (RGB) are supported",
                self.channels
            )));
        }
        if self.width == 0 || self.height == 0 {
            return Err(Error::invalid(format!(
                "image has no pixels ({}x{})",
                self.width, self.height
            )));
        }
        let expected = (self.width as usize)
            .checked_mul(self.height as usize)
            .and_then(|n| n.checked_mul(self.channels as usize));
        if expected != Some(self.pixels.len()) {
            return Err(Error::invalid(format!(
                "image {}x{}x{} needs {} bytes, got {}",
                self.width,
                self.height,
                self.channels,
                expected.map_or_else(|| "too many".to_string(), |n| n.to_string()),
                self.pixels.len()
            )));
        }
        Ok(())
    }

    /// The value of channel `c` at column `x`, row `y` (`None` outside the image).
    pub fn get(&self, x: u32, y: u32, c: u8) -> Option<u8> {
        if x >= self.width || y >= self.height || c >= self.channels {
            return None;
        }
        let i =
            (y as usize * self.width as usize + x as usize) * self.channels as usize + c as usize;
        self.pixels.get(i).copied()
    }
}
