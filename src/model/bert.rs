//! BERT (the encoder of all-MiniLM, bge, ...) built from a Hugging Face `config.json`, with
//! Hugging Face's parameter names: `embeddings.word_embeddings.weight`,
//! `encoder.layer.N.attention.self.query.weight`, ... — so an HF `model.safetensors` (or
//! `pytorch_model.bin`, through graft's safe unpickler) loads by key.
//!
//! `(b, s)` token ids, token type ids and attention mask → `(b, s, hidden)`, as `BertModel`'s
//! `last_hidden_state`: word + position + token type embeddings, LayerNorm (the config's eps),
//! then per layer self-attention (scaled dot product, padded keys masked with the dtype's
//! minimum as transformers does), output dense + dropout + residual LayerNorm, intermediate
//! dense + erf GELU, output dense + dropout + residual LayerNorm. Dropout acts only while the
//! module trains.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use serde::Deserialize;

use super::layers::{Dropout, Embedding, LayerNorm, Linear};
use super::stages::KeyRename;
use crate::error::{Error, Result};
use crate::kernels;

/// The fields of an HF `config.json` a BERT encoder needs.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct BertConfig {
    /// Rows of the word embedding table (token ids are below it).
    pub vocab_size: usize,
    /// Width of every token's hidden state (384 for all-MiniLM-L6-v2, 768 for BERT-base).
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; `hidden_size` is a multiple of it.
    pub num_attention_heads: usize,
    /// Width of each layer's feed-forward block (usually `4 * hidden_size`).
    pub intermediate_size: usize,
    /// The longest sequence the position table covers, in tokens (default 512).
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) embedding table (default 2).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// `eps` of every LayerNorm (default 1e-12).
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Dropout after the embeddings and each dense output (default 0.1).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on the attention probabilities (default 0.1).
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// The id of the padding token (default 0).
    #[serde(default)]
    pub pad_token_id: usize,
}

fn default_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}

/// `config.json` fields graft requires to be what its BERT implements.
#[derive(Debug, Deserialize)]
struct Architecture {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

impl BertConfig {
    /// Parses and checks a `config.json` (`path` names it in messages): a BERT with absolute
    /// positions and erf GELU, every size bounded before anything is built.
    pub fn parse(path: &std::path::Path, text: &str) -> Result<BertConfig> {
        let bad = |msg: String| Error::file(path, msg);
        let arch: Architecture =
            serde_json::from_str(text).map_err(|e| bad(format!("invalid config: {e}")))?;
        if let Some(t) = arch.model_type.as_deref()
            && t != "bert"
        {
            return Err(bad(format!(
                "model_type `{t}`: graft's text encoder is BERT (model_type \"bert\")"
            )));
        }
        if let Some(a) = arch.hidden_act.as_deref()
            && a != "gelu"
        {
            return Err(bad(format!(
                "hidden_act `{a}`: only \"gelu\" (erf) is implemented"
            )));
        }
        if let Some(p) = arch.position_embedding_type.as_deref()
            && p != "absolute"
        {
            return Err(bad(format!(
                "position_embedding_type `{p}`: only \"absolute\" is implemented"
            )));
        }
        let c: BertConfig =
            serde_json::from_str(text).map_err(|e| bad(format!("invalid config: {e}")))?;
        let within = |name: &str, v: usize, max: usize| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err(bad(format!("{name} = {v} is outside 1..={max}")))
            }
        };
        within("vocab_size", c.vocab_size, 1 << 20)?;
        within("hidden_size", c.hidden_size, 8192)?;
        within("num_hidden_layers", c.num_hidden_layers, 96)?;
        within("num_attention_heads", c.num_attention_heads, 128)?;
        within("intermediate_size", c.intermediate_size, 65536)?;
        within("max_position_embeddings", c.max_position_embeddings, 16384)?;
        within("type_vocab_size", c.type_vocab_size, 64)?;
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size, c.num_attention_heads
            )));
        }
        for (name, p) in [
            ("hidden_dropout_prob", c.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                c.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(bad(format!("{name} = {p} is outside [0, 1)")));
            }
        }
        if !(c.layer_norm_eps.is_finite() && c.layer_norm_eps > 0.0) {
            return Err(bad(format!(
                "layer_norm_eps = {} must be > 0",
                c.layer_norm_eps
            )));
        }
        if c.pad_token_id >= c.vocab_size {
            return Err(bad(format!(
                "pad_token_id {} is not below vocab_size {}",
                c.pad_token_id, c.vocab_size
            )));
        }
        Ok(c)
    }

    /// The stage (0 = embeddings, then one per layer) a checkpoint key belongs to, and the
    /// number of stages: `partial:K` trains the last K layers (and the head).
    pub fn stage_of(&self, key: &str) -> (usize, usize) {
        let n = self.num_hidden_layers + 1;
        let layer = key
            .strip_prefix("encoder.layer.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        (layer.map_or(0, |i| (i + 1).min(n - 1)), n)
    }
}

/// Where HF's keys are not Rust field names: `attention.self` (`self` is a keyword) and
/// `LayerNorm` (capitalised).
pub const KEY_RENAMES: &[KeyRename] = &[
    KeyRename {
        container: "BertAttention",
        field: "self_attention",
        key: "self",
    },
    KeyRename {
        container: "BertEmbeddings",
        field: "layer_norm",
        key: "LayerNorm",
    },
    KeyRename {
        container: "BertSelfOutput",
        field: "layer_norm",
        key: "LayerNorm",
    },
];

/// HF's init for every weight matrix: N(0, initializer_range = 0.02).
const INIT_STD: f64 = 0.02;

fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    use burn::module::Param;
    use burn::tensor::Distribution;
    Linear {
        weight: Param::from_tensor(Tensor::random(
            [d_out, d_in],
            Distribution::Normal(0.0, INIT_STD),
            device,
        )),
        bias: Param::from_tensor(Tensor::zeros([d_out], device)),
    }
}

/// HF's `BertEmbeddings`: word + position + token-type embeddings, then LayerNorm and
/// dropout (`embeddings.*`).
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// `[vocab_size, hidden]`: one vector per token id.
    pub word_embeddings: Embedding,
    /// `[max_position_embeddings, hidden]`: one vector per absolute position.
    pub position_embeddings: Embedding,
    /// `[type_vocab_size, hidden]`: one vector per segment (sentence A / B).
    pub token_type_embeddings: Embedding,
    /// Over the sum of the three embeddings (`embeddings.LayerNorm`).
    pub layer_norm: LayerNorm,
    /// `hidden_dropout_prob`, after the LayerNorm.
    pub dropout: Dropout,
}

/// HF's `BertSelfAttention`: multi-head scaled dot-product attention over the layer's
/// input (`attention.self.*`).
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// Query projection, `hidden → hidden`.
    pub query: Linear,
    /// Key projection, `hidden → hidden`.
    pub key: Linear,
    /// Value projection, `hidden → hidden`.
    pub value: Linear,
    /// `attention_probs_dropout_prob`, on the attention probabilities.
    pub dropout: Dropout,
    /// The number of heads (`num_attention_heads`); not a parameter.
    #[module(skip)]
    pub heads: usize,
}

/// `LayerNorm(dropout(dense(x)) + residual)`: HF's `BertSelfOutput` (after attention) and
/// `BertOutput` (after the feed-forward block), which have the same parameters.
#[derive(Module, Debug)]
pub struct BertSelfOutput {
    /// The output projection (`hidden → hidden` after attention, `intermediate → hidden`
    /// after the feed-forward block).
    pub dense: Linear,
    /// Over the projection plus the residual (`LayerNorm` in HF's keys).
    pub layer_norm: LayerNorm,
    /// `hidden_dropout_prob`, on the projection.
    pub dropout: Dropout,
}

/// HF's `BertAttention`: self-attention and its output block (`attention.*`).
#[derive(Module, Debug)]
pub struct BertAttention {
    /// `attention.self` in the checkpoints ([`KEY_RENAMES`]).
    pub self_attention: BertSelfAttention,
    /// Projection, dropout and residual LayerNorm (`attention.output.*`).
    pub output: BertSelfOutput,
}

/// HF's `BertIntermediate`: the feed-forward block's expansion, followed by erf GELU.
#[derive(Module, Debug)]
pub struct BertIntermediate {
    /// `hidden → intermediate_size`.
    pub dense: Linear,
}

/// One transformer layer (`encoder.layer.N.*`): attention, then the feed-forward block,
/// each with a residual LayerNorm (post-norm, as BERT).
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Self-attention with its residual LayerNorm.
    pub attention: BertAttention,
    /// The feed-forward expansion and GELU.
    pub intermediate: BertIntermediate,
    /// The feed-forward projection back to `hidden`, with its residual LayerNorm.
    pub output: BertSelfOutput,
}

/// HF's `BertEncoder`: the stack of layers (`encoder.*`).
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// `num_hidden_layers` layers, applied in order (`encoder.layer.N`).
    pub layer: Vec<BertLayer>,
}

/// The encoder: `embeddings.*` and `encoder.layer.N.*` (an HF checkpoint's `pooler.*` is not
/// used: sentence embeddings pool the hidden states).
#[derive(Module, Debug)]
pub struct Bert {
    /// Token ids → the first hidden states.
    pub embeddings: BertEmbeddings,
    /// The transformer layers.
    pub encoder: BertEncoder,
    /// The `config.json` the encoder was built from; not a parameter.
    #[module(skip)]
    pub config: BertConfig,
}

impl Bert {
    /// A randomly initialised encoder as transformers initialises one (N(0, 0.02) weights,
    /// zero biases, LayerNorm at identity).
    pub fn new(config: BertConfig, device: &Device) -> Bert {
        let h = config.hidden_size;
        let ln = || LayerNorm::new(h, config.layer_norm_eps, device);
        let drop = || Dropout::new(config.hidden_dropout_prob);
        let layer = (0..config.num_hidden_layers)
            .map(|_| BertLayer {
                attention: BertAttention {
                    self_attention: BertSelfAttention {
                        query: linear(h, h, device),
                        key: linear(h, h, device),
                        value: linear(h, h, device),
                        dropout: Dropout::new(config.attention_probs_dropout_prob),
                        heads: config.num_attention_heads,
                    },
                    output: BertSelfOutput {
                        dense: linear(h, h, device),
                        layer_norm: ln(),
                        dropout: drop(),
                    },
                },
                intermediate: BertIntermediate {
                    dense: linear(h, config.intermediate_size, device),
                },
                output: BertSelfOutput {
                    dense: linear(config.intermediate_size, h, device),
                    layer_norm: ln(),
                    dropout: drop(),
                },
            })
            .collect();
        Bert {
            embeddings: BertEmbeddings {
                word_embeddings: Embedding::new(config.vocab_size, h, INIT_STD, device),
                position_embeddings: Embedding::new(
                    config.max_position_embeddings,
                    h,
                    INIT_STD,
                    device,
                ),
                token_type_embeddings: Embedding::new(config.type_vocab_size, h, INIT_STD, device),
                layer_norm: ln(),
                dropout: drop(),
            },
            encoder: BertEncoder { layer },
            config,
        }
    }

    /// `(b, s)` ids, token types and mask (1 = token, 0 = padding) → `(b, s, hidden)`.
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        token_types: Tensor<2, Int>,
        mask: Tensor<2>,
    ) -> Tensor<3> {
        self.forward_tapped(ids, token_types, mask, &mut |words| words)
    }

    /// [`Bert::forward`] with the word embeddings `(b, s, hidden)` handed to `tap`, which
    /// returns what the encoder goes on with (token saliency continues from a copy that
    /// requires a gradient).
    pub fn forward_tapped(
        &self,
        ids: Tensor<2, Int>,
        token_types: Tensor<2, Int>,
        mask: Tensor<2>,
        tap: &mut dyn FnMut(Tensor<3>) -> Tensor<3>,
    ) -> Tensor<3> {
        let [b, s] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..s as i64, &device)
            .reshape([1, s])
            .expand([b, s]);
        let e = &self.embeddings;
        let x = tap(e.word_embeddings.forward(ids))
            + e.token_type_embeddings.forward(token_types)
            + e.position_embeddings.forward(positions);
        let mut x = e.dropout.forward(e.layer_norm.forward(x));
        // transformers: (1 - mask) * finfo(float32).min, added to every query's scores.
        let bias = mask.neg().add_scalar(1.0).mul_scalar(f32::MIN as f64);
        for layer in &self.encoder.layer {
            x = layer.forward(x, bias.clone());
        }
        x
    }
}

impl BertLayer {
    fn forward(&self, x: Tensor<3>, bias: Tensor<2>) -> Tensor<3> {
        let a = &self.attention;
        let context = a.self_attention.forward(x.clone(), bias);
        let attended = a.output.forward(context, x);
        let inner = kernels::gelu(self.intermediate.dense.forward_tokens(attended.clone()));
        self.output.forward(inner, attended)
    }
}

impl BertSelfOutput {
    /// `LayerNorm(dropout(dense(x)) + residual)`.
    fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        let y = self.dropout.forward(self.dense.forward_tokens(x));
        self.layer_norm.forward(y + residual)
    }
}

impl BertSelfAttention {
    /// Multi-head scaled dot-product attention; `bias` `(b, s)` masks padded keys. The heads
    /// are read in place from the projections (`kernels::attention_probs`).
    fn forward(&self, x: Tensor<3>, bias: Tensor<2>) -> Tensor<3> {
        let q = self.query.forward_tokens(x.clone());
        let k = self.key.forward_tokens(x.clone());
        let v = self.value.forward_tokens(x);
        if !self.dropout.is_active(&v.device()) {
            return kernels::attention(q, k, v, bias, self.heads);
        }
        let probs = kernels::attention_probs(q, k, bias, self.heads);
        kernels::attention_context(self.dropout.forward(probs), v, self.heads)
    }
}
