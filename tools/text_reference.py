#!/usr/bin/env python3
"""The PyTorch reference for graft's text benchmarks: the same cases, flags and JSON fields as
`graft bench text-infer` / `graft bench text-step`, run by scripts/bench-vs-pytorch.sh.

    /tmp/pytorch-ref/bin/python tools/text_reference.py text-infer --weights DIR --batch-size 32 --seq-len 128
    /tmp/pytorch-ref/bin/python tools/text_reference.py text-step  --weights DIR --batch-size 32 --seq-len 128

text-infer: the encoder's forward pass + mean pooling on a batch of token ids (no gradients):
texts/s. text-step: one fine-tuning step of encoder + linear head (forward, cross-entropy,
backward, AdamW lr 5e-5 weight decay 0.01), dropout on as in training: texts/s. The ids are
random (seeded), every token attended to, the same in both programs' shapes.
"""

import argparse
import json
import statistics
import time

import torch
from transformers import BertModel


def timed(warm, iters, fn):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", choices=["text-infer", "text-step"])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--iters", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = BertModel.from_pretrained(a.weights, add_pooling_layer=False)
    vocab = model.config.vocab_size
    ids = torch.randint(1000, vocab, (a.batch_size, a.seq_len))
    mask = torch.ones_like(ids)
    if a.bench == "text-infer":
        model.eval()

        def step():
            with torch.no_grad():
                h = model(input_ids=ids, attention_mask=mask).last_hidden_state
                (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)

        t = timed(1, a.iters, step)
    else:
        model.train()
        head = torch.nn.Linear(model.config.hidden_size, 8)
        params = list(model.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01)
        labels = torch.randint(0, 8, (a.batch_size,))

        def step():
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            loss = torch.nn.functional.cross_entropy(head(pooled), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

        t = timed(1, a.iters, step)
    print(json.dumps({
        "bench": a.bench, "model": "bert", "batch_size": a.batch_size, "seq_len": a.seq_len,
        "ms_per_step": round(t * 1e3, 2), "texts_per_s": round(a.batch_size / t, 1),
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
