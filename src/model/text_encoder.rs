//! Text encoders: a BERT from a Hugging Face or sentence-transformers folder, its tokenizer, and
//! how token states become one vector per text (pooling, optional L2 normalisation), as the
//! folder's `modules.json` / `1_Pooling/config.json` / `sentence_bert_config.json` say.
//!
//! ```text
//! DIR/config.json                     BERT architecture (required)
//! DIR/tokenizer.json                  the tokenizer (required)
//! DIR/model.safetensors | pytorch_model.bin   weights (optional: none = random init)
//! DIR/modules.json, 1_Pooling/config.json     pooling (default: mean) and Normalize
//! DIR/sentence_bert_config.json       max_seq_length (default: the config's positions)
//! ```

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use serde::Deserialize;

use super::bert::{Bert, BertConfig};
use super::layers::{Dropout, Linear};
use super::tokenizer::{TextTokenizer, TokenBatch};
use crate::error::{Error, Result};
use crate::files::read_text;

/// How a text's token states become one vector (the `pooling` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Whatever the model folder says (sentence-transformers' `1_Pooling`), else mean.
    Auto,
    /// The mean of the tokens' states (padding excluded).
    Mean,
    /// The `[CLS]` token's state.
    Cls,
}

impl std::str::FromStr for Pooling {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "mean" => Ok(Self::Mean),
            "cls" => Ok(Self::Cls),
            other => Err(Error::invalid(format!(
                "--pooling must be auto, mean or cls, got `{other}`"
            ))),
        }
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Mean => "mean",
            Self::Cls => "cls",
        })
    }
}

crate::text_setting!(Pooling);

/// What a model folder holds, read and checked.
#[derive(Debug, Clone)]
pub struct EncoderFolder {
    /// The model folder.
    pub dir: PathBuf,
    /// Its `config.json`, parsed and checked.
    pub config: BertConfig,
    /// The weights file, if the folder has one.
    pub weights: Option<PathBuf>,
    /// The folder's pooling (`Mean` or `Cls`; never `Auto`).
    pub pooling: Pooling,
    /// Whether the folder's pipeline ends with sentence-transformers' Normalize.
    pub normalize: bool,
    /// Tokens a text is truncated to: sentence-transformers' `max_seq_length` when the
    /// folder gives one (at most the position table's size), else `max_position_embeddings`.
    pub max_length: usize,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// Whether `dir` looks like a text model folder (a `config.json` and a `tokenizer.json`).
pub fn is_model_folder(dir: &Path) -> bool {
    dir.join("config.json").is_file() && dir.join("tokenizer.json").is_file()
}

impl EncoderFolder {
    /// Reads a model folder's configuration (not its weights).
    pub fn read(dir: &Path) -> Result<EncoderFolder> {
        if !dir.is_dir() {
            return Err(Error::file(
                dir,
                "not a folder (expected a text model folder)",
            ));
        }
        for required in ["config.json", "tokenizer.json"] {
            if !dir.join(required).is_file() {
                return Err(Error::file(
                    dir,
                    format!(
                        "no {required}: a text model folder holds config.json, tokenizer.json \
                         and the weights (model.safetensors or pytorch_model.bin), as Hugging \
                         Face and sentence-transformers save them"
                    ),
                ));
            }
        }
        let config_path = dir.join("config.json");
        let config = BertConfig::parse(&config_path, &read_text(&config_path)?)?;
        let weights = ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file());
        let (mut pooling, mut normalize) = (Pooling::Mean, false);
        let modules_path = dir.join("modules.json");
        if modules_path.is_file() {
            let modules: Vec<ModuleEntry> = serde_json::from_str(&read_text(&modules_path)?)
                .map_err(|e| Error::file(&modules_path, format!("invalid modules.json: {e}")))?;
            for m in modules {
                if m.kind.ends_with(".Normalize") {
                    normalize = true;
                } else if m.kind.ends_with(".Pooling") {
                    let p = dir.join(&m.path).join("config.json");
                    if p.is_file() {
                        let pc: PoolingConfig = serde_json::from_str(&read_text(&p)?)
                            .map_err(|e| Error::file(&p, format!("invalid pooling config: {e}")))?;
                        pooling = match (pc.pooling_mode_cls_token, pc.pooling_mode_mean_tokens) {
                            (true, false) => Pooling::Cls,
                            (false, true) => Pooling::Mean,
                            _ => {
                                return Err(Error::file(
                                    &p,
                                    "graft pools with one of mean or CLS; this folder asks for \
                                     another combination",
                                ));
                            }
                        };
                    }
                }
            }
        }
        let mut max_length = config.max_position_embeddings;
        let sb = dir.join("sentence_bert_config.json");
        if sb.is_file() {
            let c: SentenceBertConfig = serde_json::from_str(&read_text(&sb)?)
                .map_err(|e| Error::file(&sb, format!("invalid sentence_bert_config: {e}")))?;
            if let Some(m) = c.max_seq_length {
                max_length = m.clamp(2, config.max_position_embeddings);
            }
        }
        Ok(EncoderFolder {
            dir: dir.to_path_buf(),
            config,
            weights,
            pooling,
            normalize,
            max_length,
        })
    }

    /// The folder's tokenizer, truncating to the folder's `max_length`; its vocabulary must fit
    /// the model's.
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        self.tokenizer_with(self.max_length)
    }

    /// The folder's tokenizer, truncating to `max_length` tokens.
    pub fn tokenizer_with(&self, max_length: usize) -> Result<TextTokenizer> {
        let path = self.dir.join("tokenizer.json");
        let tok = TextTokenizer::from_file(&path, max_length)?;
        if tok.vocab_size() > self.config.vocab_size {
            return Err(Error::file(
                &path,
                format!(
                    "the tokenizer knows {} tokens, the model's vocabulary only {}",
                    tok.vocab_size(),
                    self.config.vocab_size
                ),
            ));
        }
        Ok(tok)
    }
}

/// The batch's tensors on `device`: ids, token types, mask.
pub fn batch_tensors(
    b: &TokenBatch,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2>) {
    use burn::tensor::TensorData;
    let shape = [b.batch, b.len];
    (
        Tensor::from_data(TensorData::new(b.ids.clone(), shape), device),
        Tensor::from_data(TensorData::new(b.token_types.clone(), shape), device),
        Tensor::from_data(TensorData::new(b.mask.clone(), shape), device),
    )
}

/// `(b, s, h)` token states → `(b, h)`, padding excluded (sentence-transformers' pooling).
pub fn pool(hidden: Tensor<3>, mask: Tensor<2>, pooling: Pooling) -> Tensor<2> {
    let [b, s, h] = hidden.dims();
    match pooling {
        Pooling::Cls => hidden.slice([0..b, 0..1, 0..h]).reshape([b, h]),
        Pooling::Mean | Pooling::Auto => {
            let m = mask.reshape([b, s, 1]);
            let summed = (hidden * m.clone()).sum_dim(1).reshape([b, h]);
            let count = m.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
            summed / count
        }
    }
}

/// L2-normalised rows (`F.normalize(x, p=2, dim=1)`, eps 1e-12).
pub fn normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// A BERT with a linear classification head on its pooled output (dropout between them while
/// training, as transformers' `BertForSequenceClassification`).
#[derive(Module, Debug)]
pub struct TextClassifier {
    /// The encoder.
    pub backbone: Bert,
    /// Dropout between the pooled vector and the head (`hidden_dropout_prob`).
    pub dropout: Dropout,
    /// `hidden → classes` logits (`classifier` in the saved model).
    pub head: Linear,
    /// How the token states become one vector (`Mean` or `Cls`); not a parameter.
    #[module(skip)]
    pub pooling: Pooling,
}

/// The head's name in a text run's `model.safetensors` (Hugging Face's
/// `BertForSequenceClassification` calls it `classifier`).
pub const TEXT_HEAD: &str = "classifier";

impl TextClassifier {
    /// A randomly initialised encoder of `config` with a fresh head of `classes` outputs.
    pub fn new(config: BertConfig, classes: usize, pooling: Pooling, device: &Device) -> Self {
        TextClassifier {
            backbone: Bert::new(config, device),
            dropout: Dropout::new(config.hidden_dropout_prob),
            head: Linear::new(config.hidden_size, classes, device),
            pooling,
        }
    }

    /// Pooled (not normalised) features of a batch: `(b, hidden)`.
    pub fn features(
        &self,
        ids: Tensor<2, Int>,
        types: Tensor<2, Int>,
        mask: Tensor<2>,
    ) -> Tensor<2> {
        self.features_tapped(ids, types, mask, &mut |words| words)
    }

    /// [`TextClassifier::features`] with the word embeddings handed to `tap` (see
    /// [`Bert::forward_tapped`]).
    fn features_tapped(
        &self,
        ids: Tensor<2, Int>,
        types: Tensor<2, Int>,
        mask: Tensor<2>,
        tap: &mut dyn FnMut(Tensor<3>) -> Tensor<3>,
    ) -> Tensor<2> {
        let hidden = self.backbone.forward_tapped(ids, types, mask.clone(), tap);
        pool(hidden, mask, self.pooling)
    }

    /// Logits `(b, classes)`.
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        types: Tensor<2, Int>,
        mask: Tensor<2>,
    ) -> Tensor<2> {
        self.forward_tapped(ids, types, mask, &mut |words| words)
    }

    /// [`TextClassifier::forward`] with the word embeddings handed to `tap` (see
    /// [`Bert::forward_tapped`]).
    pub fn forward_tapped(
        &self,
        ids: Tensor<2, Int>,
        types: Tensor<2, Int>,
        mask: Tensor<2>,
        tap: &mut dyn FnMut(Tensor<3>) -> Tensor<3>,
    ) -> Tensor<2> {
        let features = self.features_tapped(ids, types, mask, tap);
        self.head.forward(self.dropout.forward(features))
    }
}
