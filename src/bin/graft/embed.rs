//! `graft embed`: sentence embeddings from a text model folder (Hugging Face or
//! sentence-transformers), pooled and normalised as the folder says — what
//! `SentenceTransformer.encode` returns.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::Args;
use graft::model::bert::Bert;
use graft::model::params::{Strictness, load_into};
use graft::model::text_encoder::{EncoderFolder, TEXT_HEAD, batch_tensors, normalize, pool};
use graft::task::text_classification::encoder_weights;
use graft::tensor::to_vec;

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// The model folder (config.json, tokenizer.json, model.safetensors or pytorch_model.bin),
    /// or a published text model by name (all-MiniLM-L6-v2), downloaded once and checked.
    #[arg(long)]
    weights: String,
    /// Texts to embed.
    texts: Vec<String>,
    /// A file of texts, one a line (added after the ones given as arguments).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Print one JSON line: {"embeddings": [[...], ...]}.
    #[arg(long)]
    json: bool,
    /// Texts per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

pub fn run(a: EmbedArgs) -> Result<()> {
    let mut texts = a.texts.clone();
    if let Some(f) = &a.file {
        texts.extend(graft::files::read_text(f)?.lines().map(str::to_string));
    }
    if texts.is_empty() {
        bail!("no texts: give them as arguments or with --file");
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let root = graft::files::cache_root(None);
    let dir = graft::weights::hub::resolve_path(&a.weights, "bert", &root, false)?;
    let folder = EncoderFolder::read(&dir)?;
    let Some(path) = &folder.weights else {
        bail!(
            "{}: no weights (model.safetensors or pytorch_model.bin)",
            dir.display()
        );
    };
    let tokenizer = folder.tokenizer()?;
    let device = Device::flex();
    let (bert, _) = load_into(
        Bert::new(folder.config, &device),
        &encoder_weights(path)?,
        TEXT_HEAD,
        Strictness::SkipHead,
    )?;
    let mut rows: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
    let dim = folder.config.hidden_size;
    // Longest first, as sentence-transformers' encode: batches pad little; each row goes back
    // to its text's place.
    let order = graft::data::text::longest_first(&texts);
    for chunk in order.chunks(a.batch_size) {
        let refs: Vec<&str> = chunk.iter().map(|&k| texts[k].as_str()).collect();
        let batch = tokenizer.encode_batch(&refs)?;
        let (ids, types, mask) = batch_tensors(&batch, &device);
        let mut e = pool(bert.forward(ids, types, mask.clone()), mask, folder.pooling);
        if folder.normalize {
            e = normalize(e);
        }
        for (&k, row) in chunk.iter().zip(to_vec(e).chunks_exact(dim)) {
            rows[k] = row.to_vec();
        }
    }
    if a.json {
        println!("{}", serde_json::json!({ "embeddings": rows }));
    } else {
        for (text, row) in texts.iter().zip(&rows) {
            let head: Vec<String> = row.iter().take(6).map(|v| format!("{v:.4}")).collect();
            println!("{dim} dims [{}, ...]  {text}", head.join(", "));
        }
    }
    Ok(())
}
