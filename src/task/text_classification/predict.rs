//! Text classification of texts a run has never seen (`graft predict --run TEXT_RUN`).

use std::path::Path;

use burn::tensor::Device;

use super::model_files::{TextCard, load_text_run};
use crate::error::Result;
use crate::model::text_encoder::{TextClassifier, batch_tensors};
use crate::model::tokenizer::TextTokenizer;
use crate::task::classification::predict::{ClassScore, top_k};
use crate::tensor::to_vec;

/// The classes predicted for one text.
#[derive(Debug, Clone, PartialEq)]
pub struct TextPrediction {
    /// The text.
    pub text: String,
    /// The most probable classes, most probable first.
    pub top: Vec<ClassScore>,
}

/// A finished text-classification run, ready to classify texts.
pub struct TextPredictor {
    /// The encoder and its head.
    pub model: TextClassifier,
    /// The run's card: class names, the most tokens a text keeps, pooling.
    pub card: TextCard,
    /// The run's tokenizer (truncating to the card's `max_length`).
    pub tokenizer: TextTokenizer,
    /// Where it runs.
    pub device: Device,
}

impl TextPredictor {
    /// The classifier of the text-classification run in `run_dir`.
    pub fn from_run(run_dir: &Path, device: &Device) -> Result<Self> {
        let (model, card, tokenizer) = load_text_run(run_dir, device)?;
        Ok(Self {
            model,
            card,
            tokenizer,
            device: device.clone(),
        })
    }

    /// One name per class of the head.
    pub fn labels(&self) -> &[String] {
        &self.card.class_names
    }

    /// The logits of `text` (one per class).
    pub fn logits(&self, text: &str) -> Result<Vec<f32>> {
        let batch = self.tokenizer.encode_batch(&[text])?;
        let (ids, types, mask) = batch_tensors(&batch, &self.device);
        Ok(to_vec(self.model.forward(ids, types, mask)))
    }

    /// The `top` most probable classes of `text`.
    pub fn predict(&self, text: &str, top: usize) -> Result<TextPrediction> {
        let logits = self.logits(text)?;
        Ok(TextPrediction {
            text: text.to_string(),
            top: top_k(&logits, top, &self.card.class_names),
        })
    }
}
