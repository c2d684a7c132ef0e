//! The one interface every dataset format implements: a numbered list of labelled images.

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
    pub images: Vec<Image>,
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
}
