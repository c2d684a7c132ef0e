#!/usr/bin/env python3
"""Goldens for graft's frozen-feature tools, from the reference implementations users know:

- the L-BFGS probe (`graft::linear_model::logistic`): scikit-learn's StandardScaler +
  LogisticRegression(solver="lbfgs") fitted to a tight tolerance on a fixed feature matrix, with
  and without class weights (graft's `λ` is scikit-learn's `1 / (C Σ w_i)`);
- transferability scores (`graft::transferability`) on the same matrix and on a wide one
  (n < d): LogME by the reference code, thuml/LogME's `LogME.py` (not on PyPI: download it from
  github.com/thuml/LogME and give its path as THUML_LOGME; numba is shimmed if absent; the
  committed goldens came from commit 3a08950), else by `logme_numpy` below (the same fixed
  point, written from the paper; the script asserts that both agree when both run); H-score as
  the Transfer-Learning-Library's `h_score`; LEEP and NCE as thuml/LogME's `LEEP.py`/`NCE.py`;
  leave-one-out weighted k-NN as DINO's `knn_classifier`.

    THUML_LOGME=/path/to/LogME.py /tmp/pytorch-ref/bin/python tools/probe_goldens.py

Writes tests/fixtures/goldens/probe.json. The features are stored (small), not regenerated.
"""
import json, os

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "goldens", "probe.json")


def features(n, d, classes, seed):
    """Class-dependent Gaussian-ish features with unequal scales and offsets, rounded to f32."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.normal(size=(classes, d))
    x = centres[y] + rng.normal(scale=1.5, size=(n, d))
    x = x * rng.uniform(0.1, 20.0, size=d) + rng.uniform(-5, 5, size=d)
    return x.astype(np.float32), y


def probe_case(x, y, classes, lam, class_weight):
    scaler = StandardScaler().fit(x.astype(np.float64))
    xs = scaler.transform(x.astype(np.float64))
    w = np.ones(len(y)) if class_weight is None else np.array([class_weight[c] for c in y])
    C = 1.0 / (lam * w.sum())
    lr = LogisticRegression(C=C, solver="lbfgs", tol=1e-12, max_iter=100000,
                            class_weight=None if class_weight is None else dict(enumerate(class_weight)))
    lr.fit(xs, y)
    coef = lr.coef_ / scaler.scale_
    intercept = lr.intercept_ - coef @ scaler.mean_
    return {"l2": lam, "class_weights": class_weight, "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
            "coef": coef.tolist(), "intercept": intercept.tolist(),
            "standardised_coef": lr.coef_.tolist(), "standardised_intercept": lr.intercept_.tolist()}


def logme_numpy(f, y):
    """LogME's fixed point (You et al. 2021, arXiv 2110.10545 alg. 2), decomposition of f^T f
    (n > d) or f f^T (n <= d); mean over classes of the log evidence / n."""
    f = f.astype(np.float64)
    n, d = f.shape
    if n > d:
        vals, v = np.linalg.eigh(f.T @ f)
        keep = np.sqrt(np.clip(vals, 0, None)) > 1e-10
        sigma, proj = vals[keep], (v[:, keep].T @ f.T) / np.sqrt(vals[keep])[:, None]
    else:
        vals, u = np.linalg.eigh(f @ f.T)
        sigma, proj = np.clip(vals, 0, None), u.T
    out = []
    for c in range(int(y.max()) + 1):
        yc = (y == c).astype(np.float64)
        x2 = (proj @ yc) ** 2
        res_x2 = (yc ** 2).sum() - x2.sum()
        alpha = beta = 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum()
            m2 = (sigma * x2 / (t + sigma) ** 2).sum()
            res2 = (x2 / (1 + sigma / t) ** 2).sum() + res_x2
            alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= 1e-3:
                break
        out.append((d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.log(alpha + beta * sigma).sum()
                    - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi)) / n)
    return float(np.mean(out))


def logme_reference(f, y):
    path = os.environ.get("THUML_LOGME")
    if not path:
        return None
    import importlib.util, sys, types
    if "numba" not in sys.modules:
        try:
            import numba  # noqa: F401
        except ImportError:
            sys.modules["numba"] = types.SimpleNamespace(njit=lambda fn: fn)
    spec = importlib.util.spec_from_file_location("thuml_logme", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return float(mod.LogME(regression=False).fit(f.astype(np.float64), y))


def hscore(f, y):
    f = f.astype(np.float64)
    covf = np.cov(f, rowvar=False)
    g = np.zeros_like(f)
    for c in range(int(y.max()) + 1):
        g[y == c] = f[y == c].mean(axis=0)
    return float(np.trace(np.linalg.pinv(covf, rcond=1e-15) @ np.cov(g, rowvar=False)))


def leep(probs, y):
    n, cs = probs.shape
    ct = int(y.max()) + 1
    joint = np.stack([(probs / n)[y == c].sum(axis=0) for c in range(ct)])
    cond = (joint / joint.sum(axis=0, keepdims=True)).T
    return float(np.mean(np.log((probs @ cond)[np.arange(n), y])))


def nce(z, y, cs, ct):
    joint = np.zeros((ct, cs))
    for s_, t_ in zip(z, y):
        joint[t_, s_] += 1.0 / len(z)
    pz = joint.sum(axis=0)
    h = 0.0
    for s_ in range(cs):
        for t_ in range(ct):
            if joint[t_, s_] > 0:
                h -= joint[t_, s_] * np.log(joint[t_, s_] / pz[s_])
    return float(-h)


def knn_loo(f, y, k=20, T=0.07):
    u = f.astype(np.float32) / np.maximum(np.linalg.norm(f.astype(np.float32), axis=1, keepdims=True), 1e-12)
    sims = (u @ u.T).astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    correct = 0
    for i in range(len(y)):
        nn = np.argsort(-sims[i], kind="stable")[:k]
        votes = np.zeros(int(y.max()) + 1)
        for j in nn:
            votes[y[j]] += np.exp(sims[i, j] / T)
        correct += int(np.argmax(votes) == y[i])
    return correct / len(y)


def scores_case(name, x, y, classes):
    ref = logme_reference(x, y)
    mine = logme_numpy(x, y)
    if ref is not None:
        assert abs(ref - mine) <= 1e-9 * max(1.0, abs(ref)), (ref, mine)
    # A made-up 6-class source head's softmax on these features (fixed projection).
    rng = np.random.default_rng(1)
    logits = x.astype(np.float64) @ rng.normal(scale=0.05, size=(x.shape[1], 6))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
    return {"name": name, "x": x.reshape(-1).tolist(), "y": y.tolist(), "d": x.shape[1], "classes": classes,
            "logme": ref if ref is not None else mine, "logme_from": "thuml/LogME" if ref is not None else "logme_numpy",
            "hscore": hscore(x, y), "knn": knn_loo(x, y),
            "source_probs": probs.reshape(-1).tolist(), "source_classes": 6,
            "leep": leep(probs.astype(np.float64), y),
            "nce": nce(probs.argmax(axis=1), y, 6, classes)}


def main():
    classes, d = 4, 7
    x, y = features(160, d, classes, 0)
    cases = [probe_case(x, y, classes, lam, cw) for lam, cw in
             [(1e-1, None), (1e-3, None), (1e-2, [0.5, 2.0, 1.0, 3.0])]]
    xw, yw = features(12, 20, 3, 2)
    scores = [scores_case("tall", x, y, classes), scores_case("wide", xw, yw, 3)]
    print("logme", [(c["name"], c["logme"], c["logme_from"]) for c in scores])
    out = {"x": x.reshape(-1).tolist(), "y": y.tolist(), "d": d, "classes": classes, "probe": cases,
           "scores": scores}
    with open(OUT, "w") as f:
        json.dump(out, f)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
