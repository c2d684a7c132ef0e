//! Text → token ids with Hugging Face's `tokenizers` crate, from a model folder's
//! `tokenizer.json`: truncated to the model's maximum length and padded to the batch's longest
//! sequence (whatever fixed padding or truncation the file itself asks for is replaced: a batch
//! never computes padding beyond its longest text).

use std::path::{Path, PathBuf};

use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{Error, Result};

/// A padded batch of token sequences, row-major `(batch, len)`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    /// Token ids, `batch * len` values (padding holds the pad id).
    pub ids: Vec<i64>,
    /// Token type (segment) ids, `batch * len` values (0 for single texts).
    pub token_types: Vec<i64>,
    /// 1 for a token, 0 for padding.
    pub mask: Vec<f32>,
    /// Sequences in the batch (rows).
    pub batch: usize,
    /// Tokens per row: the longest sequence's length after truncation.
    pub len: usize,
}

/// A loaded tokenizer with the truncation length it applies.
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    /// Sequences (special tokens included) are cut to this many tokens.
    pub max_length: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("max_length", &self.max_length)
            .finish()
    }
}

impl TextTokenizer {
    /// Reads `tokenizer.json` and sets truncation to `max_length` tokens and padding to the
    /// longest sequence of each batch.
    pub fn from_file(path: &Path, max_length: usize) -> Result<TextTokenizer> {
        Self::from_json(path, &crate::files::read_text(path)?, max_length)
    }

    /// [`TextTokenizer::from_file`] of a `tokenizer.json` already read (`path` names it in
    /// errors).
    pub fn from_json(path: &Path, text: &str, max_length: usize) -> Result<TextTokenizer> {
        let json: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::file(path, format!("not a tokenizers tokenizer.json: {e}")))?;
        check_templates(path, &json["post_processor"])?;
        let mut inner: Tokenizer = text
            .parse()
            .map_err(|e| Error::file(path, format!("not a tokenizers tokenizer.json: {e}")))?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .unwrap_or(0);
        let pad_token = inner
            .get_padding()
            .map_or_else(|| "[PAD]".to_string(), |p| p.pad_token.clone());
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| Error::file(path, format!("cannot set truncation: {e}")))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..PaddingParams::default()
        }));
        Ok(TextTokenizer {
            inner,
            path: path.to_path_buf(),
            max_length,
        })
    }

    /// The ids of one text, special tokens included (no padding).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.guarded(|t| t.encode(text, true))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The tokens of one text as the model sees them (special tokens included, truncated as
    /// [`TextTokenizer::encode_batch`] truncates): what token saliency is shown on.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let enc = self.guarded(|t| t.encode(text, true))?;
        Ok(enc.get_tokens().to_vec())
    }

    /// Tokenizes `texts` into one padded batch.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<TokenBatch> {
        let encodings = self.guarded(|t| t.encode_batch(texts.to_vec(), true))?;
        let batch = encodings.len();
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut out = TokenBatch {
            ids: Vec::with_capacity(batch * len),
            token_types: Vec::with_capacity(batch * len),
            mask: Vec::with_capacity(batch * len),
            batch,
            len,
        };
        for e in &encodings {
            out.ids.extend(e.get_ids().iter().map(|&i| i64::from(i)));
            out.token_types
                .extend(e.get_type_ids().iter().map(|&i| i64::from(i)));
            out.mask
                .extend(e.get_attention_mask().iter().map(|&m| m as f32));
        }
        Ok(out)
    }

    /// Runs the `tokenizers` crate, its errors and panics (a `tokenizer.json` can make it index
    /// what it never checked) turned into an error naming the file.
    fn guarded<T>(&self, f: impl FnOnce(&Tokenizer) -> tokenizers::Result<T>) -> Result<T> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&self.inner))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::file(&self.path, format!("cannot tokenize: {e}"))),
            Err(_) => Err(Error::file(
                &self.path,
                "the tokenizers crate failed on this tokenizer.json (a malformed file: \
                 re-export it with transformers' save_pretrained)",
            )),
        }
    }

    /// The largest token id the tokenizer can produce (checked against the model's vocabulary).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Checks what the `tokenizers` crate checks when a template post-processor (alone or in a
/// `Sequence`) is built in code but not when one is read from a file, and then panics on the
/// first text: every special token it places is among its `special_tokens`, each of those has
/// as many ids as tokens, and a single text's template places only sequence A. Checked by
/// shape, not by the `type` tag, which the crate's deserializer does not insist on.
fn check_templates(path: &Path, processor: &serde_json::Value) -> Result<()> {
    for p in processor["processors"].as_array().into_iter().flatten() {
        check_templates(path, p)?;
    }
    let defined = &processor["special_tokens"];
    let bad = |what: String| Err(Error::file(path, format!("post_processor: {what}")));
    for (id, token) in defined.as_object().into_iter().flatten() {
        let len = |key: &str| token[key].as_array().map(Vec::len);
        if len("ids") != len("tokens") {
            return bad(format!(
                "the special token `{id}` has {:?} ids but {:?} tokens (they must pair up)",
                len("ids"),
                len("tokens")
            ));
        }
    }
    for side in ["single", "pair"] {
        for piece in processor[side].as_array().into_iter().flatten() {
            // A single text is sequence A; only a pair has a B.
            if side == "single" && piece["Sequence"]["id"].as_str().is_some_and(|s| s != "A") {
                return bad("the `single` template places a sequence other than A".into());
            }
            if let Some(id) = piece["SpecialToken"]["id"].as_str()
                && defined.get(id).is_none()
            {
                return Err(Error::file(
                    path,
                    format!(
                        "post_processor: the `{side}` template places the special token `{id}`, \
                         which its special_tokens do not define"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A template naming a special token it does not define is refused when the file is read
    /// (the fuzzer's find: the tokenizers crate panicked on the first text).
    #[test]
    fn an_undefined_template_token_is_refused_by_name() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let good =
            std::fs::read_to_string(root.join("tests/fixtures/text/tokenizer.json")).unwrap();
        assert!(TextTokenizer::from_json(Path::new("t.json"), &good, 16).is_ok());
        let mut json: serde_json::Value = serde_json::from_str(&good).unwrap();
        json["post_processor"]["special_tokens"]
            .as_object_mut()
            .unwrap()
            .remove("[SEP]");
        let err = TextTokenizer::from_json(Path::new("t.json"), &json.to_string(), 16)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("t.json") && err.contains("`[SEP]`"), "{err}");
    }
}
