//! The text encoder against transformers and sentence-transformers (`tools/text_goldens.py`):
//! a tiny BERT with the shared deterministic weights (hidden states, mean pooling, one AdamW step
//! of a classifier on it), the tokenizer's ids, and — when `scripts/fetch-assets.sh` has fetched
//! it — the real all-MiniLM-L6-v2 against `SentenceTransformer.encode`.

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use graft::loss::{Loss, LossKind};
use graft::model::bert::{Bert, BertConfig};
use graft::model::params::{Strictness, load_into, tensor_map};
use graft::model::text_encoder::{
    EncoderFolder, Pooling, TEXT_HEAD, TextClassifier, batch_tensors, normalize, pool,
};
use graft::model::tokenizer::TextTokenizer;
use graft::optim::{Grads, Optimizer, OptimizerConfig, OptimizerKind};
use graft::weights::load_pretrained;

mod common;

use common::{floats, golden, rel_err, values};
use graft::model::params::named_tensors;
use graft::weights::{DType, Format, RawTensor, TensorMap};

/// Mirrors `bert_det_tensor` in tools/text_goldens.py: `offset + scale * sin(0.61 i + 0.1
/// phase + 0.3)` (f64, stored f32), LayerNorm weights 1 ± 0.1, biases ± 0.1, matrices ± 0.2.
fn bert_det_weights<M: Module>(model: &M, head: &str) -> TensorMap {
    let phase = |name: &str| {
        name.bytes()
            .enumerate()
            .map(|(i, b)| (i as u64 + 1) * b as u64)
            .sum::<u64>()
            % 997
    };
    let values = |name: &str, n: usize, scale: f64, offset: f64| -> Vec<f32> {
        let p = phase(name) as f64 * 0.1 + 0.3;
        (0..n)
            .map(|i| (offset + scale * (i as f64 * 0.61 + p).sin()) as f32)
            .collect()
    };
    let tensors = named_tensors(model, head)
        .into_iter()
        .map(|(key, shape, _)| {
            let n = shape.iter().product();
            let leaf = key.rsplit('.').next().unwrap_or("");
            let data = match (leaf, shape.len()) {
                ("weight", 1) => values(&key, n, 0.1, 1.0),
                ("bias", _) => values(&key, n, 0.1, 0.0),
                _ => values(&key, n, 0.2, 0.0),
            };
            (
                key,
                RawTensor {
                    dtype: DType::F32,
                    shape,
                    data,
                },
            )
        })
        .collect();
    TensorMap {
        format: Format::Safetensors,
        tensors,
    }
}

fn ints(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
        .collect()
}

fn tiny_inputs(
    g: &serde_json::Value,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2>) {
    let rows = g["ids"].as_array().unwrap().len();
    let len = g["ids"][0].as_array().unwrap().len();
    let ids = Tensor::from_data(TensorData::new(ints(&g["ids"]), [rows, len]), device);
    let types = Tensor::from_data(
        TensorData::new(ints(&g["token_types"]), [rows, len]),
        device,
    );
    let mask: Vec<f32> = ints(&g["mask"]).into_iter().map(|m| m as f32).collect();
    let mask = Tensor::from_data(TensorData::new(mask, [rows, len]), device);
    (ids, types, mask)
}

fn tiny_config(g: &serde_json::Value) -> BertConfig {
    BertConfig::parse(std::path::Path::new("golden"), &g["config"].to_string()).unwrap()
}

#[test]
fn tiny_bert_matches_transformers() {
    let g = golden("bert_tiny.json");
    let device = common::test_device();
    let config = tiny_config(&g);
    let bert = Bert::new(config, &device);
    let (bert, _) = load_into(
        bert,
        &bert_det_weights(&Bert::new(config, &device), "-"),
        "-",
        Strictness::Strict,
    )
    .unwrap();
    let (ids, types, mask) = tiny_inputs(&g, &device);
    let hidden = bert.forward(ids, types, mask.clone());
    let want = floats(&g["hidden"]);
    let err = rel_err(&values(hidden.clone()), &want);
    assert!(err < 1e-5, "hidden states: relative error {err}");
    // Padding never changes a sequence's result: row 1 alone, unpadded, gives the same states.
    let pooled = values(pool(hidden, mask, Pooling::Mean));
    let err = rel_err(&pooled, &floats(&g["pooled_mean"]));
    assert!(err < 1e-5, "mean pooling: relative error {err}");
}

#[test]
fn padding_never_changes_a_result() {
    let g = golden("bert_tiny.json");
    let device = common::test_device();
    let config = tiny_config(&g);
    let (bert, _) = load_into(
        Bert::new(config, &device),
        &bert_det_weights(&Bert::new(config, &device), "-"),
        "-",
        Strictness::Strict,
    )
    .unwrap();
    let (ids, types, mask) = tiny_inputs(&g, &device);
    let batched = values(pool(
        bert.forward(ids.clone(), types.clone(), mask.clone()),
        mask,
        Pooling::Mean,
    ));
    // Row 1 has 4 tokens: run it alone, without padding.
    let alone_ids = ids.slice([1..2, 0..4]);
    let alone_types = types.slice([1..2, 0..4]);
    let alone_mask = Tensor::<2>::ones([1, 4], &device);
    let alone = values(pool(
        bert.forward(alone_ids, alone_types, alone_mask.clone()),
        alone_mask,
        Pooling::Mean,
    ));
    let h = config.hidden_size;
    let err = rel_err(&batched[h..2 * h], &alone);
    assert!(err < 1e-6, "padding changed the pooled output: {err}");
}

#[test]
fn one_adamw_step_of_a_text_classifier_matches_pytorch() {
    let g = golden("bert_tiny.json");
    let device = common::test_device();
    let config = tiny_config(&g);
    let model = TextClassifier::new(config, 3, Pooling::Mean, &device);
    let weights = bert_det_weights(&model, "head");
    let (model, _) = load_into(model, &weights, "head", Strictness::Strict).unwrap();
    let ad = device.clone().autodiff();
    let model = model.fork(&ad).train();
    let (ids, types, mask) = tiny_inputs(&g, &ad);
    let logits = model.forward(ids, types, mask);
    let err = rel_err(&values(logits.clone()), &floats(&g["logits"]));
    assert!(err < 1e-5, "logits: relative error {err}");
    let labels: Vec<usize> = g["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let loss = Loss {
        kind: LossKind::CrossEntropy {
            label_smoothing: 0.0,
        },
        class_weights: None,
    }
    .forward(logits, graft::tensor::labels(&labels, &ad));
    let l = values(loss.clone())[0] as f64;
    assert!((l - g["loss"].as_f64().unwrap()).abs() < 1e-5, "loss {l}");
    let mut grads = Grads::default();
    grads.accumulate(&model, &mut loss.backward());
    let mut opt = Optimizer::new(OptimizerConfig {
        kind: OptimizerKind::AdamW,
        weight_decay: 0.01,
        ..OptimizerConfig::default()
    });
    let model = opt.step(model, &grads, &|_| 1e-3);
    let after = tensor_map(&model.valid(), "head");
    for (key, want) in g["after_step"].as_object().unwrap() {
        let (_, got) = after.get(key).unwrap_or_else(|| panic!("no {key}"));
        let err = rel_err(got, &floats(want));
        assert!(
            err < 1e-5,
            "{key} after one AdamW step: relative error {err}"
        );
    }
}

#[test]
fn tokenizer_ids_match_hugging_face() {
    let g = golden("tokenizer.json");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text/tokenizer.json");
    let tok = TextTokenizer::from_file(&path, g["max_length"].as_u64().unwrap() as usize).unwrap();
    for (text, want) in g["texts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(g["ids"].as_array().unwrap())
    {
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(text.as_str().unwrap()).unwrap(), want, "{text}");
    }
}

#[test]
fn real_minilm_matches_sentence_transformers() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/assets/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "skipped: {} missing (scripts/fetch-assets.sh)",
            dir.display()
        );
        return;
    }
    let g = golden("minilm.json");
    let folder = EncoderFolder::read(&dir).unwrap();
    assert_eq!(
        folder.max_length,
        g["max_seq_length"].as_u64().unwrap() as usize
    );
    assert!(folder.normalize);
    assert_eq!(folder.pooling, Pooling::Mean);
    let tok = folder.tokenizer().unwrap();
    let texts: Vec<&str> = g["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for (text, want) in texts.iter().zip(g["ids"].as_array().unwrap()) {
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(text).unwrap(), want, "token ids of {text:?}");
    }
    let device = common::test_device();
    let weights = load_pretrained(folder.weights.as_ref().unwrap()).unwrap();
    let (bert, report) = load_into(
        Bert::new(folder.config, &device),
        &weights,
        TEXT_HEAD,
        Strictness::SkipHead,
    )
    .unwrap();
    assert!(report.loaded > 90);
    let batch = tok.encode_batch(&texts).unwrap();
    let (ids, types, mask) = batch_tensors(&batch, &device);
    let emb = normalize(pool(
        bert.forward(ids, types, mask.clone()),
        mask,
        folder.pooling,
    ));
    let got = values(emb);
    let want: Vec<f32> = g["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(floats)
        .collect();
    let max = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max <= 1e-5, "max |Δ| {max} over the embeddings");
}
