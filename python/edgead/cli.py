"""The `edgead` command line (also `python -m edgead`).

    edgead train RECIPE DATA OUT [--category C] [--device auto] [--weights PATH] [--val-fraction F]
    edgead eval ARTIFACT DATA [--out DIR] [--set-threshold f1|fpr]
    edgead predict ARTIFACT INPUT... [--out DIR]
    edgead export ARTIFACT [--format onnx|tensorrt] [--precision fp32|fp16|int8] [--dla-core N] [--out PATH]
    edgead bench ARTIFACT [--backend B] [--batch-sizes 1,8] [--out PATH]
    edgead make-data OUT [--n-images N] [--size S]
    edgead demo [--out DIR] [--device auto] [--weights PATH] [--quick]

Exit codes: 0 ok, 1 runtime failure (message printed), 2 usage / input errors.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

__all__ = ["main", "build_parser", "find_mobilenet_weights"]

_PKG = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_PKG))
# Recipes: the repository's models/ folder, installed into the wheel as edgead/recipes/ (CMakeLists.txt).
RECIPES_DIRS = [d for d in (os.path.join(_PKG, "recipes"), os.path.join(_REPO, "models")) if os.path.isdir(d)]
MOBILENET_ENV = "EDGEAD_MOBILENET_WEIGHTS"
MOBILENET_FILE = "mobilenet_v2_imagenet.safetensors"


def _recipe_path(name: str) -> str:
    """A recipe path, or the name of one in the repository's models/ folder (with or without .yaml)."""
    if os.path.isfile(name):
        return name
    for d in RECIPES_DIRS:
        for cand in (os.path.join(d, name), os.path.join(d, name + ".yaml")):
            if os.path.isfile(cand):
                return cand
    raise FileNotFoundError(f"recipe '{name}' not found (neither a file nor a name in {RECIPES_DIRS})")


def find_mobilenet_weights(explicit: Optional[str] = None) -> Optional[str]:
    """--weights, else $EDGEAD_MOBILENET_WEIGHTS, else ../shared/weights next to the repository (source checkout)
    or next to the working directory; None if absent."""
    if explicit:
        if not os.path.isfile(explicit):
            raise FileNotFoundError(f"--weights: file '{explicit}' does not exist")
        return explicit
    env = os.environ.get(MOBILENET_ENV)
    if env:
        if not os.path.isfile(env):
            raise FileNotFoundError(f"${MOBILENET_ENV} points to '{env}', which does not exist")
        return env
    for base in (os.path.dirname(_REPO), os.path.dirname(os.getcwd())):
        cand = os.path.join(base, "shared", "weights", MOBILENET_FILE)
        if os.path.isfile(cand):
            return cand
    return None


# ------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------
def cmd_train(a) -> int:
    from edgead import pipeline

    overrides = {"weights": a.weights, "val_fraction": a.val_fraction, "seed": a.seed}
    if a.weights:
        # the recipe's mean/std belong to its default weights; a weights file brings its own normalisation
        from edgead.pipeline import load_recipe

        backbone = load_recipe(_recipe_path(a.recipe))["config"].get("backbone")
        if backbone:
            from edgead.models.backbones import default_normalization

            mean, std = default_normalization(backbone, a.weights)
            overrides["mean"], overrides["std"] = list(mean), list(std)
    if a.coreset_ratio is not None:
        overrides["coreset_ratio"] = a.coreset_ratio
    if a.image_size is not None:
        overrides["image_size"] = [a.image_size, a.image_size]
    if a.defects or a.init:  # mixed supervision (edgead.models.mixed) only
        if load_recipe_model(a.recipe) != "mixed":
            raise ValueError("--defects/--init: only the 'mixed' model learns from real defects / continues training")
        overrides["defects"], overrides["init"] = a.defects, a.init
    pipeline.train(_recipe_path(a.recipe), a.data, a.out, category=a.category, device=a.device,
                   progress=not a.quiet, overrides=overrides)
    return 0


def load_recipe_model(recipe: str) -> str:
    from edgead.pipeline import load_recipe

    return load_recipe(_recipe_path(recipe))["model"]


def cmd_eval(a) -> int:
    from edgead import pipeline

    out = a.out or os.path.join(a.artifact, "eval")
    pipeline.evaluate(a.artifact, a.data, out, device=a.device, category=a.category, set_threshold=a.set_threshold,
                      progress=not a.quiet)
    return 0


def cmd_predict(a) -> int:
    from edgead import pipeline

    out = a.out or os.path.join(a.artifact, "predictions")
    pipeline.predict(a.artifact, a.inputs if len(a.inputs) > 1 else a.inputs[0], out, device=a.device,
                     progress=not a.quiet)
    return 0


def cmd_export(a) -> int:
    from edgead.export import cli_export

    return int(cli_export(a) or 0)


def cmd_bench(a) -> int:
    from edgead.runtime.bench import cli_bench

    return int(cli_bench(a) or 0)


def cmd_distill(a) -> int:
    from edgead.models.distill import cli_distill

    return int(cli_distill(a) or 0)


def cmd_make_data(a) -> int:
    from edgead.data.synthetic import main_make_data

    return int(main_make_data(a) or 0)


def cmd_demo(a) -> int:
    """Build the demo dataset, train PatchCore + MobileNetV2 per category, evaluate, print a report."""
    from edgead import pipeline
    from edgead.data.demo import DEMO_CATEGORIES, build_demo_dataset

    t0 = time.time()
    weights = find_mobilenet_weights(a.weights)
    recipe = _recipe_path("patchcore_mobilenet_v2")
    overrides = {}
    if weights is not None:
        print(f"edgead demo: MobileNetV2 weights {weights}")
        overrides["weights"] = weights
        # the recipe's normalisation is the Keras one of that file; a user file may differ
        from edgead.models.backbones import default_normalization

        mean, std = default_normalization("mobilenet_v2", weights)
        overrides["mean"], overrides["std"] = list(mean), list(std)
    else:
        print("edgead demo: no local MobileNetV2 weights (--weights, $EDGEAD_MOBILENET_WEIGHTS, ../shared/weights); "
              "trying torchvision's ImageNet download")
        from edgead.models.backbones import build_backbone

        try:
            build_backbone("mobilenet_v2", ("layer2",), weights="imagenet")
        except RuntimeError as e:
            print(f"edgead demo: error: {e}\n"
                  f"The demo needs pretrained MobileNetV2 weights: pass --weights PATH (a torchvision mobilenet_v2 "
                  f"state dict, .safetensors or .pt) or set ${MOBILENET_ENV}.", file=sys.stderr)
            return 2
        from edgead.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        overrides.update(weights="imagenet", mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    if a.quick:
        sizes = dict(size=224, n_train=30, n_test_good=10, n_per_defect=3)
    else:
        sizes = dict(size=224, n_train=60, n_test_good=20, n_per_defect=6)
    data = build_demo_dataset(os.path.join(a.out, "data"), progress=not a.quiet, **sizes)
    rows = []
    for cat in DEMO_CATEGORIES:
        print(f"\n=== {cat} ===", flush=True)
        art = pipeline.train(recipe, os.path.join(data, cat), os.path.join(a.out, "artifacts", cat), device=a.device,
                             progress=not a.quiet, overrides=overrides)
        rep = pipeline.evaluate(art, os.path.join(data, cat), os.path.join(a.out, "eval", cat), device=a.device,
                                progress=not a.quiet)
        m = rep["metrics"]
        rows.append((cat, m.get("image_auroc"), m.get("pixel_auroc"), m.get("aupro"), rep["ms_per_image"]))
    total = time.time() - t0
    print("\nedgead demo: PatchCore + MobileNetV2 on the demo textures")
    hdr = f"{'category':<10} {'image AUROC':>11} {'pixel AUROC':>11} {'AUPRO':>7} {'ms/img':>8}"
    print(hdr + "\n" + "-" * len(hdr))

    def f(v):
        return "-" if v is None else f"{v:.3f}"

    for cat, ia, pa, ap, ms in rows:
        print(f"{cat:<10} {f(ia):>11} {f(pa):>11} {f(ap):>7} {ms:>8.1f}")
    print(f"\nwall time {total:.0f} s; artifacts in {os.path.join(a.out, 'artifacts')}, plots and metrics in "
          f"{os.path.join(a.out, 'eval')}")
    with open(os.path.join(a.out, "demo_report.json"), "w") as fh:
        json.dump({"wall_seconds": round(total, 1), "weights": overrides.get("weights"),
                   "categories": {c: {"image_auroc": ia, "pixel_auroc": pa, "aupro": ap, "ms_per_image": ms}
                                  for c, ia, pa, ap, ms in rows}}, fh, indent=2)
    return 0


# ------------------------------------------------------------------------------------------------
# parser
# ------------------------------------------------------------------------------------------------
def _add_distill_arguments(parser) -> None:
    """Arguments of `edgead distill-teacher` (edgead.models.distill.cli_distill). Declared here: the parser must not import torch."""
    parser.add_argument("--backbone", default="wide_resnet50_2", help="resnet18 | wide_resnet50_2 | mobilenet_v2")
    parser.add_argument("--weights", default=None, help="backbone weights file (or 'imagenet' to download)")
    parser.add_argument("--images", required=True, help="folder of images to distil on (ImageNet in the paper), searched recursively")
    parser.add_argument("--out", required=True, help="output .safetensors (a .json sidecar is written next to it)")
    parser.add_argument("--size", default="S", choices=["S", "M", "s", "m"], help="PDN size")
    parser.add_argument("--iterations", type=int, default=60000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, nargs="+", default=[256], help="PDN input size: H [W]")
    parser.add_argument("--layers", nargs="+", default=["layer2", "layer3"])
    parser.add_argument("--backbone-scale", type=float, default=2.0, help="backbone input = this x the PDN input size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgead", description="Industrial visual anomaly detection: train, evaluate, deploy.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(sp, device=True):
        if device:
            sp.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1")
        sp.add_argument("--quiet", action="store_true", help="no progress bars / tables")

    t = sub.add_parser("train", help="train a model from a recipe on an MVTec-layout category")
    t.add_argument("recipe", help="recipe YAML path, or a name in models/ (e.g. patchcore_mobilenet_v2)")
    t.add_argument("data", help="dataset category folder (train/good, test/...), or a root with --category")
    t.add_argument("out", help="artifact directory to write")
    t.add_argument("--category", help="category sub-folder of DATA")
    t.add_argument("--weights", help="backbone weights file (overrides the recipe; mean/std follow the file)")
    t.add_argument("--val-fraction", type=float, default=None, help="held-out fraction of train/good (default 0.1)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--coreset-ratio", type=float, default=None, help="PatchCore coreset ratio (overrides the recipe)")
    t.add_argument("--image-size", type=int, default=None, help="square input size (overrides the recipe)")
    t.add_argument("--defects", help="mixed model: folder of real defects (<type>/* images, ground_truth/<type>/"
                                     "<stem>_mask.png masks; an image without mask is an image-level label)")
    t.add_argument("--init", help="mixed model: continue training from this earlier artifact")
    common(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate an artifact on a test split (metrics, ROC/PRO plots, thresholds)")
    e.add_argument("artifact")
    e.add_argument("data")
    e.add_argument("--out", help="report folder (default ARTIFACT/eval)")
    e.add_argument("--category")
    e.add_argument("--set-threshold", choices=["f1", "fpr", "recall"],
                   help="activate the F1-optimal, FPR-0.5%% or recall-95%% threshold")
    common(e)
    e.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="score images: heatmaps, masks, scores.csv/results.json")
    pr.add_argument("artifact")
    pr.add_argument("inputs", nargs="+", help="image files and/or folders")
    pr.add_argument("--out", help="output folder (default ARTIFACT/predictions)")
    common(pr)
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="export an artifact to ONNX / a TensorRT engine")
    ex.add_argument("artifact")
    ex.add_argument("--format", choices=["onnx", "tensorrt"], default="onnx")
    ex.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None,
                    help="TensorRT precision (default fp16); for --format onnx: fp32 (default) or int8 "
                         "(ONNX Runtime static quantization -> model.int8.onnx, needs --calibration)")
    ex.add_argument("--dla-core", type=int, default=None, help="Jetson DLA core for TensorRT (GPU fallback on)")
    ex.add_argument("--calibration", help="folder of normal images for INT8 calibration (required with --precision int8)")
    ex.add_argument("--out", help="output path (default inside the artifact)")
    ex.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", help="latency / throughput of an artifact on a runtime backend")
    b.add_argument("artifact")
    b.add_argument("--backend", default="auto", help="tensorrt | onnxruntime | torch | auto")
    b.add_argument("--batch-sizes", default="1,32", help="comma-separated batch sizes (default 1,32)")
    b.add_argument("--iterations", type=int, default=50, help="timed calls per batch size")
    b.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    b.add_argument("--threads", type=int, default=None, help="CPU threads per backend (default: the library's)")
    b.add_argument("--device", default=None, help="cuda or cpu (default: cuda when usable)")
    b.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None, help="GPU precision")
    b.add_argument("--out", help="report folder, or a .json path (a .md table is written beside it)")
    b.set_defaults(func=cmd_bench)

    dt = sub.add_parser("distill-teacher", help="distil an EfficientAD/PUAD teacher PDN from a pretrained backbone")
    _add_distill_arguments(dt)
    dt.set_defaults(func=cmd_distill)

    md = sub.add_parser("make-data", help="generate a large synthetic SEM-like dataset (MVTec layout)")
    try:
        from edgead.data.synthetic import build_make_data_parser

        build_make_data_parser(md)
    except ImportError:  # pragma: no cover
        md.add_argument("out_dir")
        md.add_argument("--n-images", type=int, default=23888)
        md.add_argument("--size", type=int, default=256)
    md.set_defaults(func=cmd_make_data)

    d = sub.add_parser("demo", help="build the demo textures, train PatchCore + MobileNetV2, evaluate, report")
    d.add_argument("--out", default="edgead-demo", help="working folder (default ./edgead-demo)")
    d.add_argument("--weights", help=f"MobileNetV2 weights file (else ${MOBILENET_ENV}, ../shared/weights, torchvision download)")
    d.add_argument("--quick", action="store_true", help="fewer images (a smoke test, ~1 minute)")
    common(d)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f"edgead {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, ImportError, OSError) as e:
        print(f"edgead {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
