//! The one interface every dataset format implements: a numbered list of labelled images.

use sha2::{Digest, Sha256};

use crate::data::image::Image;
use crate::error::{Error, Result};

/// A numbered collection of labelled images, `0..len()`.
///
/// Labels are cheap (held in memory and validated when the source is opened); `load` may do I/O
/// and decoding, and is called concurrently from the loader's worker threads, hence `Send + Sync`.
pub trait Source: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// Class index of sample `i` (`i < len()`); always below the dataset's class count.
    fn label(&self, i: usize) -> usize;
    /// Decodes sample `i`. Errors name the file (and record) that failed.
    fn load(&self, i: usize) -> Result<Image>;
    /// Where sample `i` comes from, for messages: a file path or
    /// `"cifar10 data_batch_2.bin record 17"`.
    fn describe(&self, i: usize) -> String;

    /// An identifier of the samples' content, in order: equal ids mean equal samples (what a
    /// cache of per-sample results is keyed by). A hash of the bytes for sources held in
    /// memory; of each file's path, size and modification time for folders.
    fn content_id(&self) -> Result<String>;

    /// True when the source has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All labels, in sample order.
    fn labels(&self) -> Vec<usize> {
        (0..self.len()).map(|i| self.label(i)).collect()
    }
}

/// Images already in memory: for tests, `predict`-style callers and synthetic data.
#[derive(Debug, Clone)]
pub struct InMemory {
    /// Used in `describe` (`"NAME sample 3"`).
    pub name: String,
    /// The samples, in index order.
    pub images: Vec<Image>,
    /// The class of each image (`labels[i]` is `images[i]`'s).
    pub labels: Vec<usize>,
}

impl InMemory {
    /// Checks that there is one label per image and that every image is well formed.
    pub fn new(
        name: impl Into<String>,
        images: Vec<Image>,
        labels: Vec<usize>,
    ) -> Result<InMemory> {
        let name = name.into();
        if images.len() != labels.len() {
            return Err(Error::invalid(format!(
                "{name}: {} images but {} labels",
                images.len(),
                labels.len()
            )));
        }
        for (i, img) in images.iter().enumerate() {
            img.validate()
                .map_err(|e| Error::invalid(format!("{name} sample {i}: {e}")))?;
        }
        Ok(InMemory {
            name,
            images,
            labels,
        })
    }
}

impl Source for InMemory {
    fn len(&self) -> usize {
        self.images.len()
    }

    fn label(&self, i: usize) -> usize {
        self.labels[i]
    }

    fn load(&self, i: usize) -> Result<Image> {
        self.images.get(i).cloned().ok_or_else(|| {
            Error::invalid(format!(
                "{}: no sample {i} (len {})",
                self.name,
                self.images.len()
            ))
        })
    }

    fn describe(&self, i: usize) -> String {
        format!("{} sample {i}", self.name)
    }

    fn content_id(&self) -> Result<String> {
        let mut h = ContentHash::new();
        for img in &self.images {
            h.add(
                &[img.width, img.height, u32::from(img.channels)]
                    .map(u32::to_le_bytes)
                    .concat(),
            );
            h.add(&img.pixels);
        }
        Ok(h.finish())
    }
}

/// SHA-256 over length-prefixed parts: the `content_id` of every source.
pub struct ContentHash(Sha256);

impl ContentHash {
    /// An empty hash.
    pub fn new() -> Self {
        ContentHash(Sha256::new())
    }

    /// Adds one part (its length first, so parts cannot run into each other).
    pub fn add(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    /// The SHA-256 of everything added, as 64 lowercase hex digits.
    pub fn finish(self) -> String {
        format!("{:x}", self.0.finalize())
    }
}

impl Default for ContentHash {
    fn default() -> Self {
        Self::new()
    }
}
