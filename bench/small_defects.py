"""Small defects on large images: PatchCore recipes compared at native resolution (docs/small-defects.md).

    python bench/small_defects.py --data ../shared/data/magnetic-tile --recipe models/patchcore_mobilenet_v2.yaml \
        --weights ../shared/weights/mobilenet_v2_imagenet.safetensors --split report --out runs/sd.jsonl

For each recipe (a YAML, optionally with `--set key=value` overrides and a `tiling:` entry) it fits on
train/good (all of it, or `--train-n` images drawn with a fixed seed), scores the chosen part of the
test split at each image's own resolution (tiled recipes: stitched maps; others: the map resized to the
image, as the Detector does) and compares against the masks at their own size (nothing resized).
Writes one JSON line per run: image AUROC (score = max of the stitched map, and the models' own
tile scores), pixel AUROC, AUPRO@0.3, fit seconds, ms per test image.

Test splits (to choose on one part and report on another): within each defect type (and good),
images sorted by name; "select" = every other image starting with the first, "report" = the rest,
"all" = everything. `--every k` keeps every k-th image of the chosen split (a faster subsample).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))


def _split(samples, part: str, every: int):
    by = {}
    for s in samples:
        by.setdefault(s.defect_type, []).append(s)
    out = []
    for k in sorted(by):
        items = sorted(by[k], key=lambda s: s.path)
        if part == "select":
            items = items[0::2]
        elif part == "report":
            items = items[1::2]
        out.extend(items[:: max(1, every)])
    return out


def run(recipe_path, data, weights, sets, split, every, train_n, seed=0, progress=False, fit_only=False):
    import torch

    from edgead import metrics, pipeline
    from edgead.data.datasets import load_mask, open_dataset
    from edgead.models import get_model_class
    from edgead.tiling import Tiling, TiledSamples

    overrides = {"weights": weights}
    for kv in sets:
        k, v = kv.split("=", 1)
        overrides[k] = json.loads(v)
    from edgead.models.backbones import default_normalization

    backbone = pipeline.load_recipe(recipe_path)["config"].get("backbone")
    if backbone:  # as `edgead train --weights`: the weights file brings its own normalisation
        mean, std = default_normalization(backbone, weights)
        overrides.setdefault("mean", list(mean))
        overrides.setdefault("std", list(std))
    recipe = pipeline.load_recipe(recipe_path, overrides)
    ds = open_dataset(data)
    train = sorted(ds.train_samples(), key=lambda s: s.path)
    if train_n and train_n < len(train):
        idx = np.sort(np.random.default_rng(seed).choice(len(train), train_n, replace=False))
        train = [train[i] for i in idx]
    test = _split(ds.test_samples(), split, every)
    model = get_model_class(recipe["model"])(recipe["config"])
    tiling = Tiling.from_config(recipe["tiling"]) if recipe["tiling"] else None
    timing = {}
    select_bank = model.select_bank

    def timed_select_bank(*args, **kw):  # the greedy coreset part of the fit, timed on its own
        c = time.process_time()
        try:
            return select_bank(*args, **kw)
        finally:
            timing["coreset_cpu_s"] = round(time.process_time() - c, 1)

    model.select_bank = timed_select_bank
    t0, c0 = time.perf_counter(), time.process_time()
    items = TiledSamples(train, tiling, seed) if tiling else train
    stats = model.fit(items, None, device="cpu", progress=progress)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    if fit_only:
        return {"recipe": os.path.basename(recipe_path), "sets": sets, "data": os.path.basename(os.path.normpath(data)),
                "n_train": len(train), "n_train_items": len(items), "fit_s": round(fit_s, 1), "fit_cpu_s": round(fit_cpu, 1),
                **timing, "bank_size": stats.get("bank_size"), "n_patches": stats.get("n_patches"),
                "n_candidates": stats.get("n_candidates"), "threads": torch.get_num_threads()}
    # image score both ways: max of the stitched map (default) and the models' own tile scores
    t1, c1 = time.perf_counter(), time.process_time()
    if tiling is None:
        det = pipeline.model_detector(model, "cpu", batch_size=int(recipe["config"].get("batch_size", 16)))
        scores, maps = det.score_files(test, progress, "eval", native=True)
        tile_scores = None
    else:  # one pass, both image scores: max of the stitched map, and max of the model's tile scores
        from edgead.data.io import read_image
        from edgead.tiling import tiled_predict

        pre = model.preprocessing()
        best = []

        def infer(tiles):
            with torch.no_grad():
                s, m = model.predict(torch.from_numpy(pre.batch(tiles)))
            best.append(float(s.max()))
            return s.numpy(), m.numpy()

        scores, maps, tile_scores = [], [], []
        for it in test:
            best.clear()
            sc, m = tiled_predict(read_image(it.path), tiling, infer, chunk=int(recipe["config"].get("batch_size", 16)))
            scores.append(sc)
            maps.append(m)
            tile_scores.append(max(best))
        scores, tile_scores = np.asarray(scores), np.asarray(tile_scores)
    eval_s, eval_cpu = time.perf_counter() - t1, time.process_time() - c1
    labels = np.array([int(s.label) for s in test])
    masks = [load_mask(s, m.shape) for s, m in zip(test, maps)]
    m = metrics.evaluate(scores, labels, list(maps), masks)
    out = {
        "recipe": os.path.basename(recipe_path), "sets": sets, "data": os.path.basename(os.path.normpath(data)),
        "split": split, "every": every, "n_train": len(train), "n_train_items": len(items), "n_test": len(test),
        "n_anomalous": int(labels.sum()), "fit_s": round(fit_s, 1), "ms_per_image": round(1000 * eval_s / len(test), 1),
        "fit_cpu_s": round(fit_cpu, 1), "cpu_ms_per_image": round(1000 * eval_cpu / len(test), 1),
        **timing, "bank_size": stats.get("bank_size"), "n_patches": stats.get("n_patches"),
        "image_auroc": m["image_auroc"], "pixel_auroc": m["pixel_auroc"], "aupro": m["aupro"],
        "tiling": recipe["tiling"], "threads": torch.get_num_threads(),
    }
    if tile_scores is not None:
        out["image_auroc_tile_scores"] = metrics.auroc(tile_scores, labels)
    if split == "all":  # the same run scored on the halves too (report half as in the docs: every 2 and every 1)
        pos = {s.path: i for i, s in enumerate(test)}
        out["parts"] = {}
        for name, part, k in (("select", "select", 1), ("report", "report", 1), ("report_every2", "report", 2)):
            try:
                idx = [pos[s.path] for s in _split(test, part, k)]
                mp = metrics.evaluate(np.asarray(scores)[idx], labels[idx], [maps[i] for i in idx], [masks[i] for i in idx])
                out["parts"][name] = {"n_test": len(idx), "n_anomalous": int(labels[idx].sum()),
                                      "image_auroc": mp["image_auroc"], "pixel_auroc": mp["pixel_auroc"],
                                      "aupro": mp["aupro"]}
                if tile_scores is not None:
                    out["parts"][name]["image_auroc_tile_scores"] = metrics.auroc(tile_scores[idx], labels[idx])
            except Exception as e:  # never lose the main result to a sub-split
                out["parts"][name] = {"error": repr(e)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, nargs="+", help="MVTec-layout category folder(s)")
    ap.add_argument("--recipe", required=True, nargs="+")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--set", action="append", default=[], help="config override key=JSON value (all recipes)")
    ap.add_argument("--split", choices=["select", "report", "all"], default="all")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--train-n", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="JSON-lines file (appended)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--fit-only", action="store_true", help="time the fit only (no scoring)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    for data in a.data:
        for r in a.recipe:
            t = time.time()
            try:
                res = run(r, data, a.weights, a.set, a.split, a.every, a.train_n, progress=a.progress, fit_only=a.fit_only)
            except Exception as e:  # keep going with the next run; the error is recorded
                res = {"recipe": r, "data": data, "sets": a.set, "error": f"{type(e).__name__}: {e}"}
            res["wall_s"] = round(time.time() - t, 1)
            res["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            with open(a.out, "a") as f:
                f.write(json.dumps(res) + "\n")
            print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
