//! Token saliency of a text classifier: gradient × input on the word embeddings (Shrikumar et
//! al. 2016; Captum's `InputXGradient`), summed over the embedding dimension. A token's value is
//! the first-order change of the class logit if its word embedding were scaled to zero:
//! positive tokens raise the class, negative ones lower it.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use crate::error::{Error, Result};
use crate::model::text_encoder::TextClassifier;
use crate::model::tokenizer::TokenBatch;
use crate::tensor::{from_vec, to_vec};

/// For each text of `batch`, one value per token (padding excluded): `Σ_d e_td · ∂logit/∂e_td`
/// for the class `targets[i]`.
pub fn token_saliency(
    model: &TextClassifier,
    batch: &TokenBatch,
    targets: &[usize],
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let (b, s) = (batch.batch, batch.len);
    let ad = device.clone().autodiff();
    // Inference mode on the autodiff device: no dropout, parameters out of the backward pass.
    let model = model.clone().train().freeze();
    let ids = Tensor::<2, Int>::from_data(
        burn::tensor::TensorData::new(batch.ids.clone(), [b, s]),
        &ad,
    );
    let types = Tensor::<2, Int>::from_data(
        burn::tensor::TensorData::new(batch.token_types.clone(), [b, s]),
        &ad,
    );
    let mask = from_vec(batch.mask.clone(), [b, s], &ad);
    let mut leaf = None;
    let logits = model.forward_tapped(ids, types, mask, &mut |words| {
        let words = words.detach().require_grad();
        leaf = Some(words.clone());
        words
    });
    let leaf = leaf.ok_or_else(|| Error::invalid("the encoder never showed its embeddings"))?;
    let [_, classes] = logits.dims();
    let mut select = vec![0f32; b * classes];
    for (i, &t) in targets.iter().enumerate().take(b) {
        if t >= classes {
            return Err(Error::invalid(format!(
                "class {t} is outside the model's {classes} classes"
            )));
        }
        select[i * classes + t] = 1.0;
    }
    let gradients = (logits * from_vec(select, [b, classes], &ad))
        .sum()
        .backward();
    let grad = leaf
        .grad(&gradients)
        .ok_or_else(|| Error::invalid("the backward pass gave no gradient for the embeddings"))?;
    let hidden = leaf.dims()[2];
    let (g, e) = (to_vec(grad), to_vec(leaf.detach()));
    Ok((0..b)
        .map(|i| {
            (0..s)
                .filter(|&t| batch.mask[i * s + t] > 0.0)
                .map(|t| {
                    let at = (i * s + t) * hidden;
                    g[at..at + hidden]
                        .iter()
                        .zip(&e[at..at + hidden])
                        .map(|(a, b)| a * b)
                        .sum()
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bert::BertConfig;
    use crate::model::text_encoder::Pooling;

    /// Gradient × input of a token is d(logit)/dα at α = 1 with the token's word embedding
    /// scaled by α: checked against central differences, padding excluded.
    #[test]
    fn saliency_is_the_derivative_of_scaling_each_token() {
        let device = Device::flex();
        let config = BertConfig {
            vocab_size: 30,
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 32,
            max_position_embeddings: 16,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            pad_token_id: 0,
        };
        let model = TextClassifier::new(config, 3, Pooling::Mean, &device);
        let (b, s) = (2, 5);
        let batch = TokenBatch {
            ids: vec![2, 7, 11, 5, 3, 2, 9, 3, 0, 0],
            token_types: vec![0; b * s],
            mask: vec![1., 1., 1., 1., 1., 1., 1., 1., 0., 0.],
            batch: b,
            len: s,
        };
        let targets = [1, 2];
        let got = token_saliency(&model, &batch, &targets, &device).unwrap();
        assert_eq!(got[0].len(), 5);
        assert_eq!(got[1].len(), 3, "padding has no saliency");
        let logit = |i: usize, t: usize, scale: f32| -> f32 {
            let ids = Tensor::<2, Int>::from_data(
                burn::tensor::TensorData::new(batch.ids.clone(), [b, s]),
                &device,
            );
            let types = Tensor::<2, Int>::zeros([b, s], &device);
            let mask = from_vec(batch.mask.clone(), [b, s], &device);
            let model = model.valid();
            let logits = model.forward_tapped(ids, types, mask, &mut |words| {
                let [_, _, h] = words.dims();
                let mut factor = vec![1f32; b * s * h];
                factor[(i * s + t) * h..(i * s + t + 1) * h].fill(scale);
                words * from_vec(factor, [b, s, h], &device)
            });
            to_vec(logits)[i * 3 + targets[i]]
        };
        let largest = got.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        assert!(largest > 0.0);
        let step = 1e-2;
        for (i, values) in got.iter().enumerate() {
            for (t, &v) in values.iter().enumerate() {
                let fd = (logit(i, t, 1.0 + step) - logit(i, t, 1.0 - step)) / (2.0 * step);
                assert!(
                    (fd - v).abs() <= 2e-2 * largest,
                    "text {i} token {t}: gradient x input {v}, finite difference {fd}"
                );
            }
        }
    }
}
