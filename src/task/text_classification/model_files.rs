//! What a finished text run leaves: `model.safetensors` (the encoder under Hugging Face's keys
//! and the head as `classifier.*`), a copy of the model folder's `config.json` and
//! `tokenizer.json`, and `model.json` (classes, pooling, length). The run folder is then itself a
//! model folder: `predict --run`, `eval --run` and `embed --weights RUN` read it.

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::config::FitConfig;
use crate::data::text::TextDataset;
use crate::error::{Error, Result};
use crate::files::{read_text, write_atomic};
use crate::model::bert::BertConfig;
use crate::model::params::{Strictness, load_into, named_tensors};
use crate::model::text_encoder::{EncoderFolder, Pooling, TEXT_HEAD, TextClassifier};
use crate::model::tokenizer::TextTokenizer;
use crate::weights::{load_weights, save_safetensors};

/// `model.json` of a text run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextCard {
    /// `text-classification`: which task wrote the file.
    pub task: String,
    /// Outputs of the head.
    pub num_classes: usize,
    /// Class names in label order.
    pub class_names: Vec<String>,
    /// Tokens a text is truncated to.
    pub max_length: usize,
    /// How the token states become one vector.
    pub pooling: Pooling,
    /// The data spec the run trained on.
    pub data: String,
    /// The training strategy, as its setting's text.
    pub strategy: String,
    /// The model folder the run started from.
    pub source: String,
}

/// Writes the run's model files.
pub(super) fn save(
    run_dir: &Path,
    model: &TextClassifier,
    folder: &EncoderFolder,
    cfg: &FitConfig,
    ds: &TextDataset,
    classes: usize,
    max_length: usize,
) -> Result<()> {
    save_safetensors(
        &run_dir.join("model.safetensors"),
        &named_tensors(model, TEXT_HEAD),
    )?;
    for file in ["config.json", "tokenizer.json"] {
        let text = read_text(&folder.dir.join(file))?;
        write_atomic(&run_dir.join(file), text.as_bytes())?;
    }
    let mut names = ds.class_names.clone();
    names.extend((names.len()..classes).map(|i| format!("class {i}")));
    let card = TextCard {
        task: "text-classification".into(),
        num_classes: classes,
        class_names: names,
        max_length,
        pooling: model.pooling,
        data: cfg.data.clone(),
        strategy: cfg.strategy.to_string(),
        source: folder.dir.display().to_string(),
    };
    let json = serde_json::to_string_pretty(&card).unwrap_or_default();
    write_atomic(&run_dir.join("model.json"), json.as_bytes())
}

/// A finished text run's classifier, card and tokenizer.
pub fn load_text_run(
    run_dir: &Path,
    device: &Device,
) -> Result<(TextClassifier, TextCard, TextTokenizer)> {
    let card_path = run_dir.join("model.json");
    if !run_dir.is_dir() {
        // `run_config` says which run folders there are instead.
        crate::train::run_config(run_dir)?;
    }
    if !card_path.is_file() {
        return Err(Error::file(
            run_dir,
            "no model.json: not a finished text run (give a folder written by `graft fit`, \
             after it has finished)",
        ));
    }
    let card: TextCard = serde_json::from_str(&read_text(&card_path)?)
        .map_err(|e| Error::file(&card_path, format!("invalid model card: {e}")))?;
    if !(1..=crate::config::MAX_CLASSES).contains(&card.num_classes)
        || card.class_names.len() != card.num_classes
    {
        return Err(Error::file(
            &card_path,
            format!(
                "num_classes {} with {} class names",
                card.num_classes,
                card.class_names.len()
            ),
        ));
    }
    let config_path = run_dir.join("config.json");
    let config = BertConfig::parse(&config_path, &read_text(&config_path)?)?;
    if !(2..=config.max_position_embeddings).contains(&card.max_length) {
        return Err(Error::file(
            &card_path,
            format!("max_length {} does not fit the model", card.max_length),
        ));
    }
    let tokenizer = TextTokenizer::from_file(&run_dir.join("tokenizer.json"), card.max_length)?;
    let model = TextClassifier::new(config, card.num_classes, card.pooling, device);
    let weights = load_weights(&run_dir.join("model.safetensors"))?;
    let (model, _) = load_into(model, &weights, TEXT_HEAD, Strictness::Strict)?;
    Ok((model, card, tokenizer))
}
