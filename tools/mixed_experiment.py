#!/usr/bin/env python
"""Mixed supervision on magnetic-tile (issue 13, item 4): k = 0, 5, 20 real defects, one unseen defect type,
and PatchCore, all scored on the same test part.

    PYTHONPATH=python OMP_NUM_THREADS=1 nice -n 10 python tools/mixed_experiment.py \
        --data ../shared/data/magnetic-tile --out /tmp/mixed_exp --runs k0,k5 &
    ... --runs k20,unseen,patchcore &        # a second process (the two share nothing but the split)
    python tools/mixed_experiment.py --data ... --out /tmp/mixed_exp --report   # table + figure

Split (fixed seed, deterministic): for each defect type, its test images (sorted by name) are permuted
with numpy default_rng([seed, crc32(type)]); the first round(pool_fraction * n) go to the injection pool,
the rest to the test part. Pool images whose mask is empty after thresholding at 128 (four `uneven` ones)
stay in the test part. The pool is then ordered once (default_rng(seed) permutation of all pool images):
k = 5 is the first 5, k = 20 the first 20 (nested, as the paper's fractions). The unseen run takes the first
20 pool images whose type is not `--unseen` (default `uneven`, an area-like defect, as the paper's unseen
"area" group). Everything is built from symbolic links under OUT (no image is copied or changed).
PatchCore (models/patchcore_mobilenet_v2.yaml, shared MobileNetV2 weights) is fitted on a random subset of
`--patchcore-train` train/good images (same seed; 0: all) to fit the CPU budget; `--coreset-candidates` and
`--bank-max-size` bound its fit.

Mixed-model options: `--prior knn` (normal_prior), `--prior-bank-size`, `--backbone-lr-scale 0` (frozen
backbone). A run name may end in `_s<N>` (e.g. `k20_s1`): the same run trained with seed N (the split and
pool stay those of --seed), for a second-seed check.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RUNS = ("k0", "k5", "k20", "unseen", "patchcore", "k0cont", "k20cont")


def parse_run(name):
    """'k20' -> ('k20', False, None); 'k20cont' -> ('k20', True, None); 'k20_s1' -> ('k20', False, 1):
    a `_sN` suffix trains with seed N (the split stays that of --seed)."""
    seed = None
    if "_s" in name:
        name, _, sd = name.partition("_s")
        if not sd.isdigit():
            raise SystemExit(f"--runs: bad seed suffix in {name + '_s' + sd!r}; expected e.g. k20_s1")
        seed = int(sd)
    base = name[: -len("cont")] if name.endswith("cont") else name
    if name not in RUNS:
        raise SystemExit(f"--runs: unknown run {name!r}; expected some of {RUNS}, optionally with _s<seed>")
    return base, name != base, seed


def _shared(*parts):
    """../shared/<parts> next to the checkout or next to one of its parents (git worktrees)."""
    base = REPO
    for _ in range(3):
        base = os.path.dirname(base)
        if os.path.isdir(os.path.join(base, "shared")):
            return os.path.join(base, "shared", *parts)
    return os.path.join(os.path.dirname(REPO), "shared", *parts)


def _link(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if not os.path.lexists(dst):
        os.symlink(os.path.abspath(src), dst)


def make_split(data, out, pool_fraction, seed, unseen):
    """-> dict with the test-part root, pool list [(type, image, mask)], and the split itself (JSON)."""
    from edgead.data.datasets import MVTecDataset
    from edgead.data.io import read_mask

    split_path = os.path.join(out, "split.json")
    if os.path.isfile(split_path):
        with open(split_path) as f:
            return json.load(f)
    ds = MVTecDataset(data)
    test = ds.test_samples()
    pool, test_part = [], []
    for t in ds.defect_types():
        items = sorted([s for s in test if s.defect_type == t], key=lambda s: s.path)
        perm = np.random.default_rng([seed, zlib.crc32(t.encode())]).permutation(len(items))
        n_pool = int(round(pool_fraction * len(items)))
        for rank, i in enumerate(perm):
            s = items[int(i)]
            if rank < n_pool and s.mask_paths and read_mask(s.mask_paths[0], 128).any():
                pool.append([t, s.path, s.mask_paths[0]])
            else:
                test_part.append([t, s.path, s.mask_paths[0] if s.mask_paths else None])
    order = np.random.default_rng(seed).permutation(len(pool))
    pool = [pool[int(i)] for i in order]
    root = os.path.join(out, "data_test")
    _link(os.path.join(data, "train", "good"), os.path.join(root, "train", "good"))
    _link(os.path.join(data, "test", "good"), os.path.join(root, "test", "good"))
    for t, p, m in test_part:
        _link(p, os.path.join(root, "test", t, os.path.basename(p)))
        if m:
            _link(m, os.path.join(root, "ground_truth", t, os.path.basename(m)))
    split = {"data": os.path.abspath(data), "seed": seed, "pool_fraction": pool_fraction, "unseen": unseen,
             "test_root": root, "pool": pool, "test_part": test_part,
             "n_test_good": len(os.listdir(os.path.join(data, "test", "good")))}
    os.makedirs(out, exist_ok=True)
    with open(split_path, "w") as f:
        json.dump(split, f, indent=1)
    return split


def pool_dir(out, split, name, k, exclude=None):
    chosen = [e for e in split["pool"] if e[0] != exclude][:k]
    d = os.path.join(out, f"pool_{name}")
    for t, p, m in chosen:
        _link(p, os.path.join(d, t, os.path.basename(p)))
        _link(m, os.path.join(d, "ground_truth", t, os.path.basename(m)))
    return d, chosen


def run_one(name, args, split):
    from edgead import pipeline

    out = args.out
    art, ev = os.path.join(out, f"art_{name}"), os.path.join(out, f"eval_{name}")
    root = split["test_root"]
    t0 = time.time()
    info = {"run": name}
    if name == "patchcore":
        from edgead.models.backbones import default_normalization

        pc_root = os.path.join(out, "data_patchcore")
        good = sorted(os.listdir(os.path.join(split["data"], "train", "good")))
        n_sub = args.patchcore_train if args.patchcore_train > 0 else len(good)  # 0: all
        sub = np.random.default_rng(args.seed).permutation(len(good))[:n_sub]
        for i in sorted(int(j) for j in sub):
            _link(os.path.join(split["data"], "train", "good", good[i]), os.path.join(pc_root, "train", "good", good[i]))
        for d in ("test", "ground_truth"):
            _link(os.path.join(root, d), os.path.join(pc_root, d))
        mean, std = default_normalization("mobilenet_v2", args.weights)
        ov = {"weights": args.weights, "mean": list(mean), "std": list(std), "image_size": [args.image_size] * 2,
              "coreset_ratio": args.coreset_ratio}
        if args.coreset_candidates:
            ov["coreset_candidates"] = args.coreset_candidates
        if args.bank_max_size:
            ov["bank_max_size"] = args.bank_max_size
        pipeline.train(os.path.join(REPO, "models", "patchcore_mobilenet_v2.yaml"), pc_root, art, device="cpu",
                       progress=not args.quiet, overrides=ov)
        info.update(n_train=len(sub), coreset_ratio=args.coreset_ratio, coreset_candidates=args.coreset_candidates,
                    bank_max_size=args.bank_max_size, image_size=args.image_size)
    else:
        base, cont, tseed = parse_run(name)
        ov = {"image_size": [args.image_size] * 2, "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch,
              "patience": args.patience, "t0_epochs": args.t0_epochs, "mask_threshold": 128,
              "seed": args.seed if tseed is None else tseed, "weights": args.weights}
        if args.prior:
            ov["normal_prior"] = args.prior
        if args.prior_bank_size:
            ov["prior_bank_size"] = args.prior_bank_size
        if args.backbone_lr_scale is not None:
            ov["backbone_lr_scale"] = args.backbone_lr_scale
        info.update({k: ov[k] for k in ("seed", "image_size", "epochs", "steps_per_epoch")})
        info.update({k: ov[k] for k in ("normal_prior", "prior_bank_size", "backbone_lr_scale") if k in ov})
        if cont:  # growth: continue the finished `base` run (--init) for the same schedule again
            ov["init"] = os.path.join(out, f"art_{base}" + ("" if tseed is None else f"_s{tseed}"))
            info["init"] = ov["init"]
        if base != "k0":
            k = 20 if base in ("k20", "unseen") else int(base[1:])
            d, chosen = pool_dir(out, split, base, k, exclude=split["unseen"] if base == "unseen" else None)
            ov["defects"] = d
            info["defects"] = [[t, os.path.basename(p)] for t, p, _ in chosen]
        pipeline.train(os.path.join(REPO, "models", "mixed.yaml"), root, art, device="cpu", progress=not args.quiet,
                       overrides=ov)
    info["train_seconds"] = round(time.time() - t0, 1)
    t1 = time.time()
    pipeline.evaluate(art, root, ev, device="cpu", progress=not args.quiet)
    info["eval_seconds"] = round(time.time() - t1, 1)
    with open(os.path.join(ev, "run.json"), "w") as f:
        json.dump(info, f, indent=1)


def _subset_metrics(ev, dtype):
    """image AUROC and FPR at 95 % recall on test/good + one defect type, from eval/scores.csv."""
    from edgead import metrics

    s, y = [], []
    with open(os.path.join(ev, "scores.csv")) as f:
        for r in csv.DictReader(f):
            if r["defect_type"] in ("good", dtype):
                s.append(float(r["score"]))
                y.append(int(r["label"]))
    s, y = np.array(s), np.array(y)
    return metrics.auroc(s, y), metrics.fpr_at_recall(s, y, 0.95)[0], int(y.sum())


def prior_only(args, split, name):
    """For a run with normal_prior knn: image AUROC and FPR at 95 % recall of its prior alone (max, and
    mean_*: mean, of the normalised nearest-neighbour distance map, no learned head) on the test part;
    for the PatchCore run the same two statistics of its own patch-distance grid; cached per bank."""
    import hashlib

    import torch

    from edgead import metrics
    from edgead.artifact import load_artifact
    from edgead.data.io import read_image
    from edgead.models import load_model

    art = os.path.join(args.out, f"art_{name}")
    if not os.path.isdir(art):
        return None
    a = load_artifact(art)
    if a.model_type == "patchcore":
        key_tensors = [a.tensors[k] for k in sorted(a.tensors)]
    elif a.config.get("normal_prior", "none") == "knn":
        key_tensors = [a.tensors["net.prior_bank"], a.tensors["net.prior_scale"]]
    else:
        return None
    key = hashlib.sha1(b"".join(np.ascontiguousarray(t).tobytes() for t in key_tensors)).hexdigest()[:16]
    cache = os.path.join(args.out, f"prior_only_{key}.json")
    if os.path.isfile(cache):
        with open(cache) as f:
            if "mean_image_auroc" not in json.load(f):  # cached before the mean was added
                os.remove(cache)
    if not os.path.isfile(cache):
        model = load_model(art)
        pre = model.preprocessing()
        if a.model_type == "patchcore":
            def distance(x):
                return model.patch_scores(x)[1]
        else:
            net = model.net

            def distance(x):
                return net.prior_distance(net.prior_embed(net.smooth(x))) / net.prior_scale
        root = split["test_root"]
        items = [(os.path.join(root, "test", "good", f), 0) for f in sorted(os.listdir(os.path.join(root, "test", "good")))]
        items += [(p, 1) for _, p, _ in split["test_part"]]
        s, sm = [], []
        with torch.no_grad():
            for i in range(0, len(items), 16):
                x = torch.from_numpy(pre.batch([read_image(p) for p, _ in items[i : i + 16]]))
                d = distance(x)
                s += d.amax(dim=1).tolist()
                sm += d.mean(dim=1).tolist()
        y = np.array([lab for _, lab in items])
        s, sm = np.array(s), np.array(sm)
        res = {"image_auroc": metrics.auroc(s, y), "fpr_at_95_recall": metrics.fpr_at_recall(s, y, 0.95)[0],
               "mean_image_auroc": metrics.auroc(sm, y), "mean_fpr_at_95_recall": metrics.fpr_at_recall(sm, y, 0.95)[0]}
        with open(cache, "w") as f:
            json.dump(res, f)
    with open(cache) as f:
        return json.load(f)


def report(args, split):
    rows, types = [], sorted({t for t, _, _ in split["test_part"]})
    found = sorted((d[len("eval_"):] for d in os.listdir(args.out) if d.startswith("eval_")),
                   key=lambda n: (RUNS.index(parse_run(n)[0] + ("cont" if parse_run(n)[1] else "")), n))
    for name in found:
        ev = os.path.join(args.out, f"eval_{name}")
        if not os.path.isfile(os.path.join(ev, "metrics.json")):
            continue
        with open(os.path.join(ev, "metrics.json")) as f:
            m = json.load(f)["metrics"]
        with open(os.path.join(ev, "run.json")) as f:
            info = json.load(f)
        per = {t: _subset_metrics(ev, t) for t in types}
        info["prior_only"] = prior_only(args, split, name)
        if name != "patchcore":
            with open(os.path.join(args.out, f"art_{name}", "edgead.json")) as f:
                info["calibration"] = json.load(f).get("statistics", {}).get("mixed", {}).get("calibration")
        rows.append({"run": name, "image_auroc": m["image_auroc"], "pixel_auroc": m.get("pixel_auroc"),
                     "aupro": m.get("aupro"), "fpr_at_95_recall": m["image_fpr_at_recall"], "per_type": per, **info})
    lines = ["| run | real defects | image AUROC | pixel AUROC | AUPRO@0.3 | FPR @ 95 % recall | "
             + f"{split['unseen']}: image AUROC / FPR@95 | train s | calibrated | prior max alone: image AUROC / FPR@95 "
             + "| prior mean alone |", "|---" * 11 + "|"]
    for r in rows:
        nd = "PatchCore" if r["run"] == "patchcore" else str(len(r.get("defects", [])))
        if r.get("init"):
            nd += f" (--init {os.path.basename(r['init'])}: 2x schedule)"
        if "_s" in r["run"]:
            nd += f" (train seed {r['run'].partition('_s')[2]})"
        if r["run"].startswith("unseen"):
            nd += f" (no {split['unseen']})"
        a, fp, _ = r["per_type"][split["unseen"]]
        lines.append(f"| {r['run']} | {nd} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['aupro']:.3f} | "
                     f"{r['fpr_at_95_recall']:.3f} | {a:.3f} / {fp:.3f} | {r['train_seconds']:.0f} | "
                     + ("yes" if (r.get("calibration") or {}).get("applied") else "no" if r["run"] != "patchcore" else "")
                     + " | " + (f"{po['image_auroc']:.3f} / {po['fpr_at_95_recall']:.3f} | "
                                f"{po['mean_image_auroc']:.3f} / {po['mean_fpr_at_95_recall']:.3f} |"
                                if (po := r.get("prior_only")) else " | |"))
    lines += ["", "Per defect type (test/good + that type): image AUROC / FPR at 95 % recall", "",
              "| run | " + " | ".join(f"{t} (n={rows[0]['per_type'][t][2]})" for t in types) + " |" if rows else "",
              "|---" * (len(types) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['run']} | " + " | ".join(f"{r['per_type'][t][0]:.3f} / {r['per_type'][t][1]:.3f}" for t in types) + " |")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    if rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        names = [r["run"] for r in rows]
        axes[0].bar(names, [r["fpr_at_95_recall"] for r in rows], color="tab:red")
        axes[0].set_title("FPR at 95 % recall (lower is better)")
        axes[1].bar(names, [r["image_auroc"] for r in rows], color="tab:blue")
        axes[1].set_ylim(0.5, 1.0), axes[1].set_title("image AUROC")
        for ax in axes:
            ax.tick_params(axis="x", labelrotation=30)
        fig.tight_layout(), fig.savefig(os.path.join(args.out, "results.png"), dpi=100), plt.close(fig)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=_shared("data", "magnetic-tile"))
    p.add_argument("--out", default="/tmp/mixed_exp")
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma list of {RUNS}")
    p.add_argument("--report", action="store_true", help="only write the table of the finished runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool-fraction", type=float, default=0.3)
    p.add_argument("--unseen", default="uneven")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps-per-epoch", type=int, default=30)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--t0-epochs", type=int, default=6)
    p.add_argument("--patchcore-train", type=int, default=200, help="train/good images PatchCore fits on; 0: all")
    p.add_argument("--coreset-ratio", type=float, default=0.05)
    p.add_argument("--coreset-candidates", type=int, default=None, help="PatchCore coreset_candidates")
    p.add_argument("--bank-max-size", type=int, default=None, help="PatchCore bank_max_size")
    p.add_argument("--prior", choices=("none", "knn"), default=None, help="mixed normal_prior (default: the recipe's)")
    p.add_argument("--prior-bank-size", type=int, default=None)
    p.add_argument("--backbone-lr-scale", type=float, default=None, help="mixed backbone_lr_scale (0: frozen)")
    p.add_argument("--weights", default=_shared("weights", "mobilenet_v2_imagenet.safetensors"))
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    split = make_split(args.data, args.out, args.pool_fraction, args.seed, args.unseen)
    if args.report:
        report(args, split)
        return 0
    names = [r for r in args.runs.split(",") if r]
    for name in names:
        parse_run(name)
    for name in names:
        print(f"=== {name} ({time.strftime('%H:%M:%S')})", flush=True)
        run_one(name, args, split)
    return 0


if __name__ == "__main__":
    sys.exit(main())
