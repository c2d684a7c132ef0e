#!/usr/bin/env python3
"""Reference values for graft's text encoder, from transformers / sentence-transformers.

    /tmp/pytorch-ref/bin/pip install transformers sentence-transformers
    /tmp/pytorch-ref/bin/python tools/text_goldens.py

Writes into tests/fixtures/:
  goldens/bert_tiny.json    a tiny BertModel (config below) with the deterministic weights every
                            parity test uses (det_tensor_for, mirrored in tests/common): its
                            last_hidden_state and masked-mean pooling for a padded batch, and
                            one AdamW step of a linear head on the pooled output (dropout 0)
  text/tokenizer.json       a small WordPiece tokenizer (BERT normalizer and pre-tokenizer)
  goldens/tokenizer.json    its token ids for texts with unicode, accents, unknown words
  goldens/minilm.json       sentence-transformers' encode() of the real all-MiniLM-L6-v2 for
                            the same kind of texts (only when scripts/fetch-assets.sh has put
                            the model in .cache/assets/all-MiniLM-L6-v2)
  goldens/step_schedules.json  the per-step learning rates of transformers'
                            get_{constant,linear,cosine}_schedule_with_warmup (warmup_ratio 0.1)

Name sections to write only those: `text_goldens.py schedules`.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from goldens import name_phase  # noqa: E402  (the shared per-name phase)

GOLDENS = ROOT / "tests" / "fixtures" / "goldens"
TEXT = ROOT / "tests" / "fixtures" / "text"

TINY = dict(
    vocab_size=40,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=32,
    max_position_embeddings=24,
    type_vocab_size=2,
    layer_norm_eps=1e-12,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    hidden_act="gelu",
    model_type="bert",
    pad_token_id=0,
)

TEXTS = [
    "Transfer learning in Rust.",
    "Ünïcödé: café, naïve, Zürich — and emoji 🚀!",
    "x",
    "",
    "a much longer sentence that goes on and on " * 40,
]


def det_values(name, n, scale, offset=0.0):
    """offset + scale * sin(0.61 i + 0.1 phase(name) + 0.3), f64 then f32. Not the image tests'
    step π/4: with it every row of a 16-wide table would repeat (period 8), all tokens would be
    equal and attention gradients vanish."""
    i = np.arange(n, dtype=np.float64)
    return (offset + scale * np.sin(i * 0.61 + name_phase(name) * 0.1 + 0.3)).astype(np.float32)


def bert_det_tensor(key, shape):
    """The tiny BERT's weights (mirrored in tests/text_parity.rs): LayerNorm weights 1 ± 0.1,
    biases ± 0.1, matrices ± 0.2."""
    n = int(np.prod(shape))
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "weight" and len(shape) == 1:
        v = det_values(key, n, 0.1, 1.0)
    elif leaf == "bias":
        v = det_values(key, n, 0.1)
    else:
        v = det_values(key, n, 0.2)
    return torch.from_numpy(v.reshape(shape))


def tolist(t):
    return t.detach().double().flatten().tolist()


def bert_tiny():
    from transformers import BertConfig, BertModel

    config = BertConfig(**TINY)
    model = BertModel(config, add_pooling_layer=False)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("position_ids"):
            state[key] = value
            continue
        state[key] = bert_det_tensor(key, list(value.shape))
    model.load_state_dict(state)
    ids = torch.tensor([[2, 7, 11, 5, 3, 9, 4], [2, 13, 6, 3, 0, 0, 0]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
    model.eval()
    with torch.no_grad():
        hidden = model(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    # One AdamW step of encoder + a 3-class head on the mean-pooled output (train mode, dropout
    # 0 in this config): loss, and a few parameters after the step.
    model.train()
    head = torch.nn.Linear(16, 3)
    with torch.no_grad():
        head.weight.copy_(bert_det_tensor("head.weight", [3, 16]))
        head.bias.copy_(bert_det_tensor("head.bias", [3]))
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    labels = torch.tensor([2, 0])
    out = model(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
    logits = head((out * m).sum(1) / m.sum(1).clamp(min=1e-9))
    loss = torch.nn.functional.cross_entropy(logits, labels)
    opt.zero_grad()
    loss.backward()
    named = dict(model.named_parameters())
    named["head.weight"] = head.weight
    grads = {
        k: tolist(named[k].grad)
        for k in [
            "head.weight",
            "encoder.layer.1.attention.self.query.weight",
            "embeddings.word_embeddings.weight",
            "encoder.layer.0.output.LayerNorm.bias",
        ]
    }
    opt.step()
    after = {
        "head.weight": tolist(head.weight),
        "encoder.layer.1.attention.self.query.weight": tolist(
            model.encoder.layer[1].attention.self.query.weight
        ),
        "embeddings.word_embeddings.weight": tolist(model.embeddings.word_embeddings.weight),
        "encoder.layer.0.output.LayerNorm.bias": tolist(model.encoder.layer[0].output.LayerNorm.bias),
    }
    golden = {
        "config": TINY,
        "ids": ids.tolist(),
        "token_types": types.tolist(),
        "mask": mask.tolist(),
        "hidden": tolist(hidden),
        "hidden_shape": list(hidden.shape),
        "pooled_mean": tolist(pooled),
        "labels": labels.tolist(),
        "logits": tolist(logits),
        "loss": float(loss),
        "grads": grads,
        "after_step": after,
    }
    (GOLDENS / "bert_tiny.json").write_text(json.dumps(golden))


def tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list("abcdefghijklmnopqrstuvwxyz.,!:—")
    vocab += ["##s", "##ing", "##er", "the", "and", "in", "on", "transfer", "learning", "rust",
              "cafe", "naive", "##e", "##n", "##g"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    TEXT.mkdir(parents=True, exist_ok=True)
    tok.save(str(TEXT / "tokenizer.json"))
    tok.enable_truncation(32)
    ids = [tok.encode(t).ids for t in TEXTS]
    (GOLDENS / "tokenizer.json").write_text(json.dumps({"texts": TEXTS, "max_length": 32, "ids": ids}))


def minilm():
    folder = ROOT / ".cache" / "assets" / "all-MiniLM-L6-v2"
    if not (folder / "config.json").exists():
        print(f"{folder} missing (scripts/fetch-assets.sh): goldens/minilm.json not written")
        return
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    emb = model.encode(TEXTS, convert_to_numpy=True, batch_size=8)
    tok = model.tokenizer(TEXTS, truncation=True, max_length=model.max_seq_length)
    (GOLDENS / "minilm.json").write_text(
        json.dumps(
            {
                "texts": TEXTS,
                "max_seq_length": model.max_seq_length,
                "ids": tok["input_ids"],
                "embeddings": emb.astype(np.float64).tolist(),
            }
        )
    )


def schedules():
    import math

    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    base, epochs, steps_per_epoch, ratio = 5e-5, 3, 7, 0.1
    total = epochs * steps_per_epoch
    warmup = math.ceil(total * ratio)  # TrainingArguments.get_warmup_steps
    makers = {
        "constant": lambda o: get_constant_schedule_with_warmup(o, warmup),
        "linear": lambda o: get_linear_schedule_with_warmup(o, warmup, total),
        "cosine": lambda o: get_cosine_schedule_with_warmup(o, warmup, total),
    }
    rates = {}
    for name, make in makers.items():
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
        sched = make(opt)
        lrs = []
        for _ in range(total):
            lrs.append(opt.param_groups[0]["lr"])  # the rate this optimizer step uses
            opt.step()
            sched.step()
        rates[name] = lrs
    (GOLDENS / "step_schedules.json").write_text(
        json.dumps(
            {
                "base": base,
                "epochs": epochs,
                "steps_per_epoch": steps_per_epoch,
                "warmup_ratio": ratio,
                "rates": rates,
            }
        )
    )


if __name__ == "__main__":
    torch.manual_seed(0)
    sections = {"bert_tiny": bert_tiny, "tokenizer": tokenizer, "minilm": minilm, "schedules": schedules}
    for name in sys.argv[1:] or list(sections):
        sections[name]()
    print("text goldens written")
