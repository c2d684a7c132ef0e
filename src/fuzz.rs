//! Every parser of untrusted bytes behind one function that takes those bytes: the fuzz targets
//! (`fuzz/`, run with `cargo fuzz`) call these, and `tests/fuzz_corpus.rs` replays their corpora
//! and every crash ever found on the stable toolchain, in the default test run. Each function
//! returns whether the input was accepted; none may panic, abort, hang or allocate without bound
//! — an error is the right answer to a bad input.

use std::path::{Path, PathBuf};

use crate::config::FitConfig;
use crate::data::{CifarKind, CifarSource, IdxSource, Image, Pipeline, Resize, Source};

/// Weight files: safetensors, PyTorch zip and legacy `.pth` (with the restricted unpickler).
pub fn weights(bytes: &[u8]) -> bool {
    crate::weights::parse_weights(Path::new("fuzz.pth"), bytes).is_ok()
}

/// An IDX images file and labels file, split at the position the first byte gives, then every
/// image decoded.
pub fn idx(bytes: &[u8]) -> bool {
    let Some((&first, rest)) = bytes.split_first() else {
        return false;
    };
    let at = (first as usize * rest.len()) / 255;
    let (images, labels) = rest.split_at(at.min(rest.len()));
    let Ok(source) = IdxSource::from_bytes(
        Path::new("fuzz-images"),
        images.to_vec(),
        Path::new("fuzz-labels"),
        labels.to_vec(),
        10,
    ) else {
        return false;
    };
    (0..source.len().min(64)).all(|i| source.load(i).is_ok())
}

/// CIFAR-10 and CIFAR-100 batch files, every record decoded.
pub fn cifar(bytes: &[u8]) -> bool {
    let mut accepted = false;
    for (kind, classes) in [(CifarKind::Cifar10, 10), (CifarKind::Cifar100, 100)] {
        let batch = vec![(PathBuf::from("fuzz.bin"), bytes.to_vec())];
        if let Ok(source) = CifarSource::from_bytes(kind, batch, classes) {
            accepted |= (0..source.len().min(64)).all(|i| source.load(i).is_ok());
        }
    }
    accepted
}

/// An image file (JPEG, PNG), decoded and put through the evaluation transform.
pub fn image(bytes: &[u8]) -> bool {
    let Ok(img) = Image::decode(Path::new("fuzz.img"), bytes) else {
        return false;
    };
    let Ok(pipe) = Pipeline::eval(16, [0.5; 3], [0.25; 3], Resize::ShorterCrop) else {
        return false;
    };
    let mut rng = rand::rngs::mock::StepRng::new(0, 0);
    pipe.apply(&img, &mut rng).is_ok()
}

/// A `--config` TOML file, parsed and checked.
pub fn config(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    toml::from_str::<FitConfig>(text).is_ok_and(|c| c.check().is_ok())
}

/// A text dataset table: `.csv`, `.tsv` or `.jsonl` as the first byte picks, the rest parsed
/// into rows.
pub fn text_table(bytes: &[u8]) -> bool {
    let Some((&first, rest)) = bytes.split_first() else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return false;
    };
    let name = ["fuzz.csv", "fuzz.tsv", "fuzz.jsonl"][first as usize % 3];
    crate::data::text::parse_table(Path::new(name), text).is_ok()
}

/// A `tokenizer.json`, parsed, then a few texts tokenized into a padded batch.
pub fn tokenizer(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let path = Path::new("tokenizer.json");
    let Ok(tokenizer) = crate::model::tokenizer::TextTokenizer::from_json(path, text, 32) else {
        return false;
    };
    let texts = ["Transfer learning.", "Ünïcödé café 🚀", "", "x y z"];
    tokenizer.encode_batch(&texts).is_ok()
}

/// A fuzz target: bytes in, accepted or not.
pub type Target = fn(&[u8]) -> bool;

/// The targets by name, for the corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("weights", weights),
    ("idx", idx),
    ("cifar", cifar),
    ("image", image),
    ("config", config),
    ("text_table", text_table),
    ("tokenizer", tokenizer),
];
