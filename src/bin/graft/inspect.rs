//! `graft inspect`: what is in a weights file (and which zoo model it fits), or a dataset's
//! counts per split and class.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

pub fn run(target: &str, all: bool) -> Result<()> {
    let path = Path::new(target);
    // Anything that exists and is not a folder is a file to read as weights (a pipe or a
    // device is then refused by the reader, by name, instead of being taken for a data spec).
    if path.exists() && !path.is_dir() {
        return weights(path, all);
    }
    if graft::model::text_encoder::is_model_folder(path) {
        return text_model(path, all);
    }
    if graft::data::text::is_text_spec(target) {
        let ds = graft::data::text::open_text(target)?;
        println!("dataset {}: {} classes", ds.name, ds.class_names.len());
        let splits: Vec<(&str, &[usize])> = [
            ("train", Some(ds.train.as_slice())),
            ("val", ds.val.as_deref()),
            ("test", Some(ds.test.as_slice())),
        ]
        .into_iter()
        .filter_map(|(n, s)| Some((n, s?)))
        .collect();
        let totals: Vec<String> = splits
            .iter()
            .map(|(n, s)| format!("{n} {}", s.len()))
            .collect();
        println!("texts: {}", totals.join(", "));
        for (c, name) in ds.class_names.iter().enumerate() {
            let counts: Vec<String> = splits
                .iter()
                .map(|(_, s)| format!("{:>8}", ds.class_counts(s)[c]))
                .collect();
            println!("  {c:>4}  {name:<20}{}", counts.join(""));
        }
        return Ok(());
    }
    let ds = graft::data::open(target)?;
    print!("{}", ds.summary());
    Ok(())
}

/// A text model folder: its architecture, pooling, length and weights.
fn text_model(dir: &Path, all: bool) -> Result<()> {
    let f = graft::model::text_encoder::EncoderFolder::read(dir)?;
    let c = f.config;
    println!(
        "{}: BERT, {} layers, hidden {}, {} heads, intermediate {}, vocabulary {}, {} positions",
        dir.display(),
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.intermediate_size,
        c.vocab_size,
        c.max_position_embeddings
    );
    println!(
        "texts cut to {} tokens, {} pooling{}",
        f.max_length,
        f.pooling,
        if f.normalize { ", L2-normalised" } else { "" }
    );
    match &f.weights {
        Some(w) => weights(w, all),
        None => {
            println!("no weights file (only --strategy scratch can use it)");
            Ok(())
        }
    }
}

fn weights(path: &Path, all: bool) -> Result<()> {
    let mut map = graft::weights::load_weights(path)?;
    let format = map.format;
    let prefix = map.strip_common_prefix();
    println!(
        "{}: {} format, {} tensors, {} parameters",
        path.display(),
        format,
        map.len(),
        map.param_count()
    );
    if let Some(p) = prefix {
        println!("common key prefix `{p}` stripped");
    }
    let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();
    for t in map.tensors.values() {
        *dtypes.entry(t.dtype.to_string()).or_default() += 1;
    }
    let dt: Vec<String> = dtypes.iter().map(|(d, n)| format!("{d} ×{n}")).collect();
    println!("dtypes: {}", dt.join(", "));
    let show = if all { map.len() } else { map.len().min(12) };
    for (name, t) in map.tensors.iter().take(show) {
        println!("  {name:<48} {:<5} {:?}", t.dtype.to_string(), t.shape);
    }
    if show < map.len() {
        println!("  ... {} more (--all lists them)", map.len() - show);
    }
    match graft::model::zoo_model_fitting(&map) {
        Some((name, classes)) => println!("matches model `{name}` (head: {classes} classes)"),
        None if map.get("embeddings.word_embeddings.weight").is_some() => {
            println!("a BERT encoder: use its folder (config.json, tokenizer.json) as --weights")
        }
        None => println!("matches no model of the zoo (`graft models`)"),
    }
    Ok(())
}
