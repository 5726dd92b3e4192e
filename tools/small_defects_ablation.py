"""PatchCore ablations for docs/small-defects.md: fit once, keep the raw patch-distance grids, then score
post-processing variants (blur sigma, image score, two-model ensembles) per defect type without refitting.

    # fit (capped bank as in the docs: 100000 sampled candidates -> 6000 rows), one thread
    python tools/small_defects_ablation.py fit --name base --data ../shared/data/magnetic-tile \
        --weights ../shared/weights/mobilenet_v2_imagenet.safetensors --out /tmp/sd [--set key=JSON] [--patch-size 5]
    # score cached grids: image AUROC, pixel AUROC, AUPRO@0.3 on the whole test split and per defect type
    python tools/small_defects_ablation.py eval --out /tmp/sd base [--sigma 4] [--score reweighted|max|topk]
    python tools/small_defects_ablation.py eval --out /tmp/sd base l34      # mean of the median-scaled grids
    # intra-image region statistics added to a fit's bank distances, then eval base_self1 ... --score max
    python tools/small_defects_ablation.py selfscore --out /tmp/sd --weights W base [--q 0.5] [--lam 0.3 1 -1]

Maps are made as the Detector makes them (grid -> bilinear to `image_size`, Gaussian blur there, bilinear
to the image's own size); masks through edgead.data.datasets.load_mask at their own size. The ensemble scales each
model's grids by their median over the test images: a screening device, not a deployable recipe.
"""
import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))


def _build(a):
    """The capped-default PatchCore of the docs (not fitted), its recipe, and the sorted train/test samples."""
    import torch

    from edgead import pipeline
    from edgead.data.datasets import open_dataset
    from edgead.models import get_model_class
    from edgead.models.backbones import default_normalization

    torch.set_num_threads(1)
    ov = {"weights": a.weights}
    for kv in a.set:
        k, v = kv.split("=", 1)
        ov[k] = json.loads(v)
    mean, std = default_normalization("mobilenet_v2", a.weights)
    ov.setdefault("mean", list(mean))
    ov.setdefault("std", list(std))
    ov.setdefault("coreset_candidates", 100000)
    ov.setdefault("bank_max_size", 6000)
    recipe = pipeline.load_recipe(os.path.join(HERE, "..", "models", "patchcore_mobilenet_v2.yaml"), ov)
    ds = open_dataset(a.data)
    train = sorted(ds.train_samples(), key=lambda s: s.path)
    test = sorted(ds.test_samples(), key=lambda s: s.path)
    model = get_model_class("patchcore")(recipe["config"])
    return model, recipe, train, test


def _embed(model, samples):
    """PatchCore patch embeddings (B, N, D) of `samples`, 16 images at a time, as float16."""
    import torch

    from edgead.data.io import read_image

    pre = model.preprocessing()
    out = []
    for i in range(0, len(samples), 16):
        with torch.no_grad():
            e = model.embedder(torch.from_numpy(pre.batch([read_image(s.path) for s in samples[i:i + 16]])).float())
        out.append(e.numpy().astype(np.float16))
    return np.concatenate(out)


def fit(a):
    import torch
    import torch.nn as nn

    from edgead.data.io import read_image

    model, recipe, train, test = _build(a)
    if a.patch_size != 3:  # PatchCore's neighbourhood size p (paper: 3), zero-padded average as the default
        model.embedder.pool = nn.AvgPool2d(a.patch_size, stride=1, padding=a.patch_size // 2)
    c0 = time.process_time()
    stats = model.fit(train, None, device="cpu", progress=False)
    fit_cpu = time.process_time() - c0
    model.eval()
    pre = model.preprocessing()
    grids, scores, shapes = [], [], []
    c1 = time.process_time()
    for i in range(0, len(test), 16):
        ims = [read_image(s.path) for s in test[i:i + 16]]
        shapes += [im.shape[:2] for im in ims]
        with torch.no_grad():
            emb, dist, nn_idx = model.patch_scores(torch.from_numpy(pre.batch(ims)))
            s = model._image_scores(emb, dist, nn_idx)
        grids += list(dist.reshape(len(ims), *model.grid).numpy())
        scores += list(s.numpy())
    os.makedirs(a.out, exist_ok=True)
    np.savez(os.path.join(a.out, a.name + ".npz"), grids=np.stack(grids), scores=np.array(scores),
             paths=np.array([s.path for s in test]), labels=np.array([int(s.label) for s in test]),
             types=np.array([s.defect_type for s in test]), shapes=np.array(shapes), data=np.array(a.data),
             image_size=np.array(recipe["config"]["image_size"]))
    print(json.dumps({"name": a.name, "fit_cpu_s": round(fit_cpu, 1), "bank": stats.get("bank_size"),
                      "cpu_ms_per_image": round(1000 * (time.process_time() - c1) / len(test), 1),
                      "grid": list(model.grid), "sets": a.set, "patch_size": a.patch_size}))


def evaluate(a):
    from edgead import metrics
    from edgead.data.datasets import load_mask, open_dataset
    from edgead.runtime.post_patchcore import anomaly_maps

    zs = [dict(np.load(os.path.join(a.out, n + ".npz"))) for n in a.names]
    z = zs[0]
    if len(zs) > 1:
        gh, gw = z["grids"].shape[1:]
        z["grids"] = np.mean([np.stack([cv2.resize((g / np.median(q["grids"])).astype(np.float32), (gw, gh))
                                        for g in q["grids"]]) for q in zs], axis=0)
    ih, iw = (int(v) for v in z["image_size"])
    maps = []
    for g, (h, w) in zip(z["grids"], z["shapes"]):
        m = anomaly_maps(g[None], (ih, iw), a.sigma)[0]  # the deployed PatchCore post-processing
        maps.append(cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR))
    if a.score == "reweighted":
        if len(zs) > 1:
            raise SystemExit("--score reweighted: only for a single model (use max or topk for ensembles)")
        scores = z["scores"]
    elif a.score == "max":
        scores = np.array([m.max() for m in maps])
    else:  # mean of the top 1 % of the map's pixels
        scores = np.array([np.sort(m.ravel())[-max(1, int(0.01 * m.size)):].mean() for m in maps])
    test = sorted(open_dataset(str(z["data"])).test_samples(), key=lambda s: s.path)  # as fit() listed them
    if [s.path for s in test] != [str(p) for p in z["paths"]]:
        raise SystemExit(f"eval: the test images of {z['data']} are not those the grids were made from")
    masks = [load_mask(s, m.shape) for s, m in zip(test, maps)]
    types = z["types"]
    out = {"names": a.names, "sigma": a.sigma, "score": a.score}
    for t in ["all"] + sorted(set(types) - {"good"}):
        idx = np.arange(len(maps)) if t == "all" else np.where((types == "good") | (types == t))[0]
        r = metrics.evaluate(scores[idx], z["labels"][idx], [maps[i] for i in idx], [masks[i] for i in idx])
        out[t] = [round(r["image_auroc"], 3), round(r["pixel_auroc"], 3), round(r["aupro"], 3)]
        if t == "all":
            pos = np.array([int(masks[i].sum()) for i in idx])
            out["positive_pixels"] = {u: int(pos[types[idx] == u].sum()) for u in sorted(set(types) - {"good"})}
    print(json.dumps(out), flush=True)


def selfscore(a):
    """Region-statistics screen (fifth session): each patch's `q`-quantile L2 distance to the other patches
    of its own image (an intra-image deviation score, median by default: a patch of a band that differs
    from the rest of its image is far from at least half of the image), standardised by the same score on
    120 seeded train/good images, added to the cached fit's bank distances (scaled by their median over the
    test images) with weight `lam`; lam < 0 = the self score alone. Writes <base>_self<lam>.npz for `eval`."""
    z = dict(np.load(os.path.join(a.out, a.base + ".npz")))
    a.set, a.data = [], str(z["data"])
    model, _, train, test = _build(a)
    model.eval()
    if [s.path for s in test] != [str(p) for p in z["paths"]]:
        raise SystemExit(f"selfscore: the test images of {a.data} are not those of {a.base}")
    rng = np.random.default_rng(0)
    ref = [train[i] for i in sorted(rng.choice(len(train), min(120, len(train)), replace=False))]

    def scores(emb):
        out = []
        for x in emb.astype(np.float32):
            sq = (x * x).sum(1)
            out.append(np.quantile(np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * x @ x.T, 0)), a.q, axis=1))
        return np.stack(out)

    gh, gw = z["grids"].shape[1:]
    s_test = scores(_embed(model, test)).reshape(-1, gh, gw)
    s_ref = scores(_embed(model, ref))
    zs = (s_test - s_ref.mean()) / s_ref.std()
    d = z["grids"] / np.median(z["grids"])
    for lam in a.lam:
        g = zs if lam < 0 else d + lam * np.maximum(zs, 0)
        name = f"{a.base}_self{lam:g}"
        np.savez(os.path.join(a.out, name + ".npz"), **{**z, "grids": g.astype(np.float32)})
        print(json.dumps({"wrote": name, "q": a.q, "lam": lam}), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--name", required=True)
    f.add_argument("--data", required=True)
    f.add_argument("--weights", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--set", action="append", default=[], help="config override key=JSON value")
    f.add_argument("--patch-size", type=int, default=3)
    e = sub.add_parser("eval")
    e.add_argument("--out", required=True)
    e.add_argument("names", nargs="+")
    e.add_argument("--sigma", type=float, default=4.0)
    e.add_argument("--score", choices=["reweighted", "max", "topk"], default="reweighted")
    r = sub.add_parser("selfscore")
    r.add_argument("--out", required=True)
    r.add_argument("--weights", required=True)
    r.add_argument("base", help="a fit's name under --out (its bank distances and test images)")
    r.add_argument("--q", type=float, default=0.5)
    r.add_argument("--lam", type=float, nargs="+", default=[0.3, 1.0, -1.0])
    a = p.parse_args(argv)
    {"fit": fit, "eval": evaluate, "selfscore": selfscore}[a.cmd](a)


if __name__ == "__main__":
    main()
