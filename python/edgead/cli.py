"""The `edgead` command line (also `python -m edgead`).

    edgead train RECIPE DATA OUT [--category C] [--device auto] [--weights PATH] [--val-fraction F]
    edgead eval ARTIFACT DATA [--out DIR] [--set-threshold f1|fpr] [--backend torch|onnxruntime|tensorrt]
    edgead predict ARTIFACT INPUT... [--out DIR] [--backend torch|onnxruntime|tensorrt]
    edgead export ARTIFACT [--format onnx|tensorrt|triton] [--precision fp32|fp16|int8] [--dla-core N] [--out PATH]
    edgead serve ARTIFACT [--backend B] [--http-port 8000] [--grpc-port 8001] [--max-batch-size 32] [...]
    edgead bench ARTIFACT... [--backend B] [--batch-sizes 1,8] [--out PATH]
    edgead distill-teacher --images DIR --out FILE [...]
    edgead make-data OUT [--n-images N] [--size S]
    edgead demo [--out DIR] [--device auto] [--weights PATH] [--quick]

This module declares every argument (`edgead VERB --help` lists each option with its default) and
calls library functions with explicit arguments; no library function receives the argparse
Namespace. Building the parser imports no torch.

Exit codes: 0 ok, 1 runtime failure (message printed, also for running out of memory), 2 usage /
input errors, 130 interrupted.
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
# argument types: a bad value is an argparse usage error naming the option
# ------------------------------------------------------------------------------------------------
def _int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {v}")
        return v

    parse.__name__ = f"int>={lo}"
    return parse


def _float_in(lo: float, hi: float, lo_open: bool, hi_open: bool):
    desc = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {desc}, got {text!r}") from None
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)  # False for NaN
        if not ok:
            raise argparse.ArgumentTypeError(f"expected a number in {desc}, got {text}")
        return v

    parse.__name__ = f"number in {desc}"
    return parse


def _batch_sizes(text: str) -> List[int]:
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1 (e.g. 1,32), got {text!r}") from None
    if not sizes or any(b < 1 for b in sizes):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1 (e.g. 1,32), got {text!r}")
    return sizes


_POSITIVE = _int_at_least(1)


def _threshold_spec(text: str):
    """A threshold option: a number, else a candidate name (resolved by runtime.resolve_threshold)."""
    try:
        return float(text)
    except ValueError:
        return text
_NON_NEGATIVE = _int_at_least(0)
_VAL_FRACTION = _float_in(0.0, 1.0, lo_open=False, hi_open=True)
_RATIO = _float_in(0.0, 1.0, lo_open=True, hi_open=False)


# ------------------------------------------------------------------------------------------------
# commands: each turns the parsed arguments into one library call with explicit arguments
# ------------------------------------------------------------------------------------------------
def _normalisation_overrides(backbone: Optional[str], weights: str) -> dict:
    """A weights file brings its own mean/std (the recipe's belong to its default weights)."""
    if not backbone:
        return {}
    from edgead.models.backbones import default_normalization

    mean, std = default_normalization(backbone, weights)
    return {"mean": list(mean), "std": list(std)}


def cmd_train(a) -> int:
    from edgead import pipeline

    recipe = _recipe_path(a.recipe)
    overrides = {"weights": a.weights, "val_fraction": a.val_fraction, "seed": a.seed}
    if a.weights:
        overrides.update(_normalisation_overrides(pipeline.load_recipe(recipe)["config"].get("backbone"), a.weights))
    if a.coreset_ratio is not None:
        overrides["coreset_ratio"] = a.coreset_ratio
    if a.image_size is not None:
        overrides["image_size"] = [a.image_size, a.image_size]
    overrides.update(tile=a.tile, stride=a.stride)
    if a.defects or a.init:  # mixed supervision (edgead.models.mixed) only
        if load_recipe_model(a.recipe) != "mixed":
            raise ValueError("--defects/--init: only the 'mixed' model learns from real defects / continues training")
        overrides["defects"], overrides["init"] = a.defects, a.init
    pipeline.train(recipe, a.data, a.out, category=a.category, device=a.device, progress=not a.quiet,
                   overrides=overrides)
    return 0


def load_recipe_model(recipe: str) -> str:
    from edgead.pipeline import load_recipe

    return load_recipe(_recipe_path(recipe))["model"]


def cmd_eval(a) -> int:
    from edgead import pipeline

    out = a.out or os.path.join(a.artifact, "eval")
    pipeline.evaluate(a.artifact, a.data, out, device=a.device, category=a.category, set_threshold=a.set_threshold,
                      progress=not a.quiet, backend=a.backend, precision=a.precision, batch_size=a.batch_size,
                      tile=a.tile, stride=a.stride)
    return 0


def cmd_predict(a) -> int:
    from edgead import pipeline

    out = a.out or os.path.join(a.artifact, "predictions")
    pipeline.predict(a.artifact, a.inputs if len(a.inputs) > 1 else a.inputs[0], out, device=a.device,
                     progress=not a.quiet, batch_size=a.batch_size, backend=a.backend, precision=a.precision,
                     tile=a.tile, stride=a.stride)
    return 0


def cmd_export(a) -> int:
    from edgead.export import export_artifact

    triton = None
    if a.format == "triton":
        triton = dict(max_batch_size=a.max_batch_size, max_queue_delay_us=a.max_queue_delay_us,
                      instances=a.instances, instance_kind=a.instance_kind, name=a.model_name)
    export_artifact(a.artifact, format=a.format, precision=a.precision, dla_core=a.dla_core, out=a.out,
                    calibration=a.calibration, triton=triton)
    return 0


def cmd_serve(a) -> int:
    from edgead.serve import serve

    serve(a.artifact, backend=a.backend, device=None if a.device == "auto" else a.device, precision=a.precision,
          threshold=a.threshold, pixel_threshold=a.pixel_threshold, name=a.model_name, host=a.host,
          http_port=a.http_port, grpc_port=a.grpc_port, metrics_port=a.metrics_port, max_batch_size=a.max_batch_size,
          max_queue_delay_us=a.max_queue_delay_us, dynamic_batching=not a.no_dynamic_batching, instances=a.instances,
          log_verbose=a.log_verbose, startup_timeout_s=a.startup_timeout)
    return 0


def cmd_bench(a) -> int:
    from edgead.runtime.bench import bench_artifacts

    backends = [b for b in a.backend.replace(",", " ").split() if b]
    if "tensorrt" in backends:  # the runtime never builds engines: build a missing one here (the export side)
        for art in a.artifact:
            try:
                from edgead.export.tensorrt import find_or_build_engine

                find_or_build_engine(art, precision=a.precision or "fp16")
            except Exception as e:  # reported by the benchmark as "not measured"
                print(f"edgead bench: no TensorRT engine for {art}: {type(e).__name__}: {e}", file=sys.stderr)
    device = None if a.device == "auto" else a.device
    return bench_artifacts(a.artifact, backends=backends, batch_sizes=a.batch_sizes, iterations=a.iterations,
                           warmup=a.warmup, device=device, precision=a.precision, threads=a.threads,
                           image_size=a.image_size, out=a.out, command="edgead " + " ".join(a.argv))


def cmd_distill(a) -> int:
    from edgead.models.distill import distill_teacher

    isz = list(a.image_size)
    meta = distill_teacher(backbone=a.backbone, weights=a.weights, image_folder=a.images, out_path=a.out,
                           size=a.size.upper(), iterations=a.iterations, batch_size=a.batch_size, device=a.device,
                           progress=not a.quiet, image_size=(isz[0], isz[-1]), layers=tuple(a.layers),
                           backbone_scale=a.backbone_scale, seed=a.seed)
    print(json.dumps(meta, indent=2))
    return 0


def cmd_make_data(a) -> int:
    from edgead.data.synthetic import make_large_train_split

    out = make_large_train_split(a.out_dir, n_images=a.n_images, size=a.size, grey=not a.rgb, seed=a.seed,
                                 workers=a.workers, progress=not a.quiet, n_test_good=a.n_test_good,
                                 n_per_defect=a.n_per_defect)
    print(f"dataset written to {out}")
    return 0


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
        overrides.update(_normalisation_overrides("mobilenet_v2", weights))
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
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default (also None and False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" not in text and action.default is not argparse.SUPPRESS and action.option_strings:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgead", description="Industrial visual anomaly detection: train, evaluate, deploy.",
                                formatter_class=_HelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def verb(name, help_text):
        return sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)

    def torch_device(sp):
        sp.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1")

    def quiet(sp):
        sp.add_argument("--quiet", action="store_true", help="no progress bars / tables")

    def tiling(sp):  # edgead.tiling: tiles of the full-resolution image, maps stitched at its size
        sp.add_argument("--tile", type=_NON_NEGATIVE, default=None,
                        help="tile size in pixels (None: the recipe's / artifact's tiling; 0: no tiling)")
        sp.add_argument("--stride", type=_POSITIVE, default=None,
                        help="tile stride in pixels, <= --tile (None: the stored stride, else the tile: no overlap)")

    def scoring(sp, batch_size):
        sp.add_argument("--backend", choices=["torch", "onnxruntime", "tensorrt"], default="torch",
                        help="runtime.Detector backend that scores: torch (the trained model), onnxruntime "
                             "(needs `edgead export`), tensorrt (engine built on this GPU when missing)")
        sp.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None,
                        help="backend precision (None: fp32; fp16 for tensorrt)")
        sp.add_argument("--batch-size", type=_POSITIVE, default=batch_size, help="images per backend call")
        sp.add_argument("--device", default="auto",
                        help="auto (torch: cuda if available; onnxruntime: cpu), cpu or cuda")

    t = verb("train", "train a model from a recipe on an MVTec-layout category")
    t.add_argument("recipe", help="recipe YAML path, or a name in models/ (e.g. patchcore_mobilenet_v2)")
    t.add_argument("data", help="dataset category folder (train/good, test/...), or a root with --category")
    t.add_argument("out", help="artifact directory to write (checked before training)")
    t.add_argument("--category", default=None, help="category sub-folder of DATA")
    t.add_argument("--weights", default=None, help="backbone weights file (overrides the recipe; mean/std follow the file)")
    t.add_argument("--val-fraction", type=_VAL_FRACTION, default=None,
                   help="held-out fraction of train/good in [0, 1) (None: the recipe's, else 0.1)")
    t.add_argument("--seed", type=int, default=None, help="validation split seed (None: the recipe's, else 0)")
    t.add_argument("--coreset-ratio", type=_RATIO, default=None, help="PatchCore coreset ratio in (0, 1] (overrides the recipe)")
    t.add_argument("--image-size", type=_POSITIVE, default=None, help="square input size (overrides the recipe)")
    tiling(t)
    t.add_argument("--defects", default=None,
                   help="mixed model: folder of real defects (<type>/* images, ground_truth/<type>/<stem>_mask.png "
                        "masks; an image without mask is an image-level label)")
    t.add_argument("--init", default=None, help="mixed model: continue training from this earlier artifact")
    torch_device(t)
    quiet(t)
    t.set_defaults(func=cmd_train)

    e = verb("eval", "evaluate an artifact on a test split (metrics, ROC/PRO plots, thresholds)")
    e.add_argument("artifact", help="artifact directory")
    e.add_argument("data", help="dataset category folder with test/ (and ground_truth/)")
    e.add_argument("--out", default=None, help="report folder (None: ARTIFACT/eval)")
    e.add_argument("--category", default=None, help="category sub-folder of DATA")
    e.add_argument("--set-threshold", choices=["f1", "fpr", "recall"], default=None,
                   help="activate the F1-optimal, FPR-0.5%% or recall-95%% threshold in the artifact")
    scoring(e, 16)
    tiling(e)
    quiet(e)
    e.set_defaults(func=cmd_eval)

    pr = verb("predict", "score images: heatmaps, masks, scores.csv/results.json")
    pr.add_argument("artifact", help="artifact directory")
    pr.add_argument("inputs", nargs="+", help="image files and/or folders")
    pr.add_argument("--out", default=None, help="output folder (None: ARTIFACT/predictions)")
    scoring(pr, 8)
    tiling(pr)
    quiet(pr)
    pr.set_defaults(func=cmd_predict)

    def triton_batching(sp, queue_delay_us):
        sp.add_argument("--model-name", default="edgead", help="Triton model name clients call")
        sp.add_argument("--max-batch-size", type=_POSITIVE, default=32, help="Triton max batch size")
        sp.add_argument("--max-queue-delay-us", type=_NON_NEGATIVE, default=queue_delay_us,
                        help="dynamic batching: how long a request may wait for others (microseconds)")
        sp.add_argument("--instances", type=_POSITIVE, default=1, help="model instances (Triton instance group count)")

    ex = verb("export", "export an artifact to ONNX / a TensorRT engine / a Triton model repository")
    ex.add_argument("artifact", help="artifact directory")
    ex.add_argument("--format", choices=["onnx", "tensorrt", "triton"], default="onnx",
                    help="what to write (triton: a model repository at --out, see docs/serving.md)")
    ex.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None,
                    help="TensorRT precision (None: fp16); for --format onnx: fp32 (None) or int8 "
                         "(ONNX Runtime static quantization -> model.int8.onnx, needs --calibration)")
    ex.add_argument("--dla-core", type=_NON_NEGATIVE, default=None, help="Jetson DLA core for TensorRT (GPU fallback on)")
    ex.add_argument("--calibration", default=None,
                    help="folder of normal images for INT8 calibration (required with --precision int8)")
    ex.add_argument("--out", default=None, help="output path (None: inside the artifact; required for triton)")
    triton_batching(ex, 500)  # a GPU server's repository: wait a little to fill batches
    ex.add_argument("--instance-kind", choices=["gpu", "cpu"], default="gpu",
                    help="triton: where the network's instances run (KIND_GPU / KIND_CPU)")
    ex.set_defaults(func=cmd_export)

    sv = verb("serve", "serve an artifact with Triton Inference Server (tritonserver from nvidia-pytriton; needs edgead[serve])")
    sv.add_argument("artifact", help="artifact directory")
    sv.add_argument("--backend", choices=["auto", "tensorrt", "onnxruntime", "torch"], default="auto",
                    help="runtime.Detector backend")
    sv.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the backend runs")
    sv.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None, help="backend precision")
    sv.add_argument("--threshold", type=_threshold_spec, default=None, help="image threshold: a number or a candidate name (None: the artifact's)")
    sv.add_argument("--pixel-threshold", type=_threshold_spec, default=None, help="pixel threshold: a number or a candidate name")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the server on the network)")
    sv.add_argument("--http-port", type=_POSITIVE, default=8000, help="HTTP port")
    sv.add_argument("--grpc-port", type=_POSITIVE, default=8001, help="gRPC port")
    sv.add_argument("--metrics-port", type=_POSITIVE, default=8002, help="Prometheus metrics port")
    triton_batching(sv, 0)  # requests that queue while the model is busy still batch (docs/serving.md)
    sv.add_argument("--no-dynamic-batching", action="store_true", help="serve each request as sent")
    sv.add_argument("--log-verbose", type=_NON_NEGATIVE, default=0, help="tritonserver log verbosity")
    sv.add_argument("--startup-timeout", type=float, default=120.0,
                    help="seconds tritonserver and the model get to become ready before serve fails")
    sv.set_defaults(func=cmd_serve)

    b = verb("bench", "latency / throughput of an artifact on runtime backends")
    b.add_argument("artifact", nargs="+", help="artifact directories")
    b.add_argument("--backend", default="all", help="all, or comma-separated names: tensorrt, onnxruntime, torch, auto")
    b.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 32], help="comma-separated batch sizes, e.g. 1,32")
    b.add_argument("--iterations", type=_POSITIVE, default=50, help="timed calls per batch size")
    b.add_argument("--warmup", type=_NON_NEGATIVE, default=3, help="untimed calls first")
    b.add_argument("--threads", type=_POSITIVE, default=None, help="CPU threads per backend (None: the library's)")
    b.add_argument("--image-size", type=_POSITIVE, nargs="+", default=None,
                   help="input image size H [W] (None: the model's input size)")
    b.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the backends run")
    b.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None, help="GPU precision")
    b.add_argument("--out", default=".", help="report folder, or a .json path (a .md table is written beside it)")
    b.set_defaults(func=cmd_bench)

    dt = verb("distill-teacher", "distil an EfficientAD/PUAD teacher PDN from a pretrained backbone")
    dt.add_argument("--backbone", default="wide_resnet50_2", help="resnet18 | wide_resnet50_2 | mobilenet_v2")
    dt.add_argument("--weights", default=None, help="backbone weights file (or 'imagenet' to download)")
    dt.add_argument("--images", required=True, help="folder of images to distil on (ImageNet in the paper), searched recursively")
    dt.add_argument("--out", required=True, help="output .safetensors (a .json sidecar is written next to it)")
    dt.add_argument("--size", default="S", choices=["S", "M", "s", "m"], help="PDN size")
    dt.add_argument("--iterations", type=_POSITIVE, default=60000, help="training steps")
    dt.add_argument("--batch-size", type=_POSITIVE, default=8, help="images per step")
    dt.add_argument("--image-size", type=_POSITIVE, nargs="+", default=[256], help="PDN input size: H [W]")
    dt.add_argument("--layers", nargs="+", default=["layer2", "layer3"], help="backbone layers to distil")
    dt.add_argument("--backbone-scale", type=float, default=2.0, help="backbone input = this x the PDN input size")
    dt.add_argument("--device", default="cpu", help="torch device")
    dt.add_argument("--seed", type=int, default=0, help="random seed")
    dt.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bar")
    dt.set_defaults(func=cmd_distill)

    md = verb("make-data", "generate a large synthetic SEM-like dataset (MVTec layout)")
    md.add_argument("out_dir", help="output folder (created; re-running resumes)")
    md.add_argument("--n-images", type=_POSITIVE, default=23888, help="train/good images (MIIC-sized)")
    md.add_argument("--size", type=_POSITIVE, default=256, help="image side in pixels")
    md.add_argument("--rgb", action="store_true", help="write 3-channel images (else grey)")
    md.add_argument("--seed", type=int, default=0, help="random seed")
    md.add_argument("--workers", type=_POSITIVE, default=max(1, min(8, os.cpu_count() or 1)), help="processes")
    md.add_argument("--n-test-good", type=_NON_NEGATIVE, default=0, help="test/good images")
    md.add_argument("--n-per-defect", type=_NON_NEGATIVE, default=0, help="test images per defect type, with masks")
    md.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bar")
    md.set_defaults(func=cmd_make_data)

    d = verb("demo", "build the demo textures, train PatchCore + MobileNetV2, evaluate, report")
    d.add_argument("--out", default="edgead-demo", help="working folder")
    d.add_argument("--weights", default=None,
                   help=f"MobileNetV2 weights file (None: ${MOBILENET_ENV}, ../shared/weights, torchvision download)")
    d.add_argument("--quick", action="store_true", help="fewer images (a smoke test, ~1 minute)")
    torch_device(d)
    quiet(d)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return int(args.func(args) or 0)
    except MemoryError as e:
        detail = f" ({e})" if str(e) else ""
        print(f"edgead {args.command}: error: out of memory{detail}. Use smaller inputs or a smaller --batch-size, "
              "or free memory (other processes, GPU)", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f"edgead {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, ImportError, OSError) as e:
        print(f"edgead {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"edgead {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
