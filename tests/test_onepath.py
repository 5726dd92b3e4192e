"""Issue 10: one scoring path (eval / predict / train through runtime.Detector), the runtime <-> export
import graph, the CLI contract, and the CLI / Detector defects of issue 11 item 7."""
import ast
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from edgead import pipeline
from edgead.artifact import read_meta, save_artifact
from edgead.cli import build_parser, main
from edgead.runtime import Detector

from conftest import make_texture_category

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python", "edgead")
SIZE = 64
THRESHOLDS = {"image": 0.5, "pixel": 0.4, "source": "test", "candidates": {"val_image_max": 0.7}}
MODEL_TYPES = ["patchcore", "efficientad", "puad", "fader"]


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    """A tiny MVTec-layout category: 6 train/good, 3 test/good, 3 test/spot with masks (64x64 RGB)."""
    return make_texture_category(str(tmp_path_factory.mktemp("data") / "tex"), size=SIZE, channels=3, tile=16,
                                 n_train=6, n_good=3, n_defect=3, defect=12, defect_range=(8, 40))


def _build(model_type, train_dir):
    """A tiny model of each type (random init; PatchCore fitted on the train images: it needs a bank)."""
    from edgead.data.io import read_image
    from edgead.models import get_model_class

    cls = get_model_class(model_type)
    torch.manual_seed(0)
    if model_type == "patchcore":
        model = cls(dict(backbone="resnet18", allow_random=True, layers=["layer1", "layer2"], image_size=[SIZE, SIZE],
                         coreset_ratio=0.25, num_neighbors=3, embedding_dim=48, batch_size=8,
                         mean=[0.5] * 3, std=[0.25] * 3))
        imgs = [read_image(os.path.join(train_dir, f)) for f in sorted(os.listdir(train_dir))]
        stats = model.fit(torch.from_numpy(model.preprocessing().batch(imgs)), progress=False) or {}
    elif model_type == "fader":
        model = cls({"image_size": [SIZE, SIZE], "widths": [4, 8, 8, 16, 16], "mosaic_scale": 8, "mlp_hidden": 16,
                     "seed": 0})
        stats = {}
    else:
        model = cls({"image_size": [SIZE, SIZE], "out_channels": 8, "size": "S"})
        stats = {}
    return model.eval(), stats


@pytest.fixture(scope="module")
def artifacts(mvtec, tmp_path_factory):
    """artifacts(model_type) -> an artifact of that type with its ONNX export (built once per module)."""
    from edgead.export.onnx import export_onnx

    cache = {}

    def get(model_type):
        if model_type not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model, stats = _build(model_type, os.path.join(mvtec, "train", "good"))
                path = str(tmp_path_factory.mktemp("art") / model_type)
                save_artifact(path, model.model_type, model.artifact_config(), model.preprocessing().to_dict(),
                              model.artifact_tensors(), thresholds=THRESHOLDS, statistics=stats)
                export_onnx(path)
            cache[model_type] = path
        return cache[model_type]

    return get


@pytest.fixture(params=MODEL_TYPES)
def exported(request, artifacts):
    return artifacts(request.param)


def _copy(path, tmp_path):
    dst = str(tmp_path / "copy")
    shutil.copytree(path, dst)
    return dst


# ----------------------------------------------------------------------------------------------
# one scoring path
# ----------------------------------------------------------------------------------------------
def test_evaluate_onnxruntime_equals_torch(exported, mvtec, tmp_path):
    """evaluate(..., backend='onnxruntime') on the exported graph == backend='torch' within 1e-4 (fp32)."""
    art = _copy(exported, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rt = pipeline.evaluate(art, mvtec, str(tmp_path / "t"), device="cpu", backend="torch", progress=False)
        ro = pipeline.evaluate(art, mvtec, str(tmp_path / "o"), device="cpu", backend="onnxruntime", progress=False)
    assert (rt["backend"], ro["backend"]) == ("torch", "onnxruntime")
    mt, mo = rt["metrics"], ro["metrics"]
    assert {"image_auroc", "pixel_auroc", "aupro"} <= set(mt) and set(mt) == set(mo)
    for k, v in mt.items():
        if isinstance(v, float):
            assert abs(v - mo[k]) <= 1e-4 * max(1.0, abs(v)), (k, v, mo[k])
    assert set(rt["threshold_candidates"]) == set(ro["threshold_candidates"])
    for k, v in rt["threshold_candidates"].items():
        assert abs(v - ro["threshold_candidates"][k]) <= 1e-4 * max(1.0, abs(v)), k

    def scores(d):
        rows = open(os.path.join(d, "scores.csv")).read().splitlines()[1:]
        return np.array([float(r.rsplit(",", 1)[1]) for r in rows])

    st, so = scores(str(tmp_path / "t")), scores(str(tmp_path / "o"))
    assert st.shape == (6,) and np.all(np.isfinite(st))
    np.testing.assert_allclose(so, st, rtol=1e-4, atol=1e-4 * np.abs(st).max())


def test_predict_backends_agree_and_follow_the_detector(exported, mvtec, tmp_path):
    """pipeline.predict writes what the Detector returns (scores, labels, masks at the image size)."""
    inputs = os.path.join(mvtec, "test", "spot")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rt = pipeline.predict(exported, inputs, str(tmp_path / "t"), device="cpu", progress=False, backend="torch")
        ro = pipeline.predict(exported, inputs, str(tmp_path / "o"), device="cpu", progress=False,
                              backend="onnxruntime")
        det = Detector.load(exported, backend="onnxruntime", device="cpu")
    ref = det(sorted(os.path.join(inputs, f) for f in os.listdir(inputs)))
    np.testing.assert_allclose([r["score"] for r in ro], ref.scores, rtol=1e-6)
    np.testing.assert_allclose([r["score"] for r in rt], ref.scores, rtol=1e-4, atol=1e-4 * np.abs(ref.scores).max())
    assert [r["anomalous"] for r in ro] == [bool(v) for v in ref.scores >= THRESHOLDS["image"]]
    from edgead.data.io import read_image

    for r, m in zip(ro, ref.masks):
        assert np.array_equal(read_image(r["mask"]) > 127, m)
        assert r["defect_pixels"] == int(m.sum())


def test_train_scores_validation_through_the_detector(mvtec, tmp_path, monkeypatch):
    """train() calibrates thresholds on scores from runtime.Detector (torch backend around the new model)."""
    calls = []
    real = Detector.score_files

    def spy(self, items, progress=False, desc="scoring"):
        calls.append((self.backend.name, desc, len(items)))
        return real(self, items, progress, desc)

    monkeypatch.setattr(Detector, "score_files", spy)
    recipe = {"model": "patchcore", "config": dict(backbone="resnet18", allow_random=True, layers=["layer1", "layer2"],
                                                   image_size=[SIZE, SIZE], coreset_ratio=0.5, num_neighbors=3,
                                                   mean=[0.5] * 3, std=[0.25] * 3),
              "train": {"val_fraction": 0.34, "seed": 0}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = pipeline.train(recipe, mvtec, str(tmp_path / "a"), device="cpu", progress=False)
    assert calls == [("torch", "validation", 2)]
    th = read_meta(art)["thresholds"]
    # the calibrated image threshold is the quantile of what the deployed Detector scores on those images
    from edgead.data.datasets import open_dataset, split_samples

    val = split_samples(open_dataset(mvtec).train_samples(), 0.34, 0)[1]
    s, _ = Detector.load(art, backend="torch", device="cpu").score_files(val)
    assert th["image"] == pytest.approx(float(np.quantile(s, 0.995)), rel=1e-5)


def test_fader_torch_forward_uses_the_softmask_kernel(monkeypatch):
    """The torch backend's FADeR forward calls edgead._C's soft mask (via the edgead::softmask_apply op)
    and matches the plain torch definition, which the ONNX export keeps."""
    from edgead import ops
    from edgead.models import fader as fader_mod

    calls = []
    real = ops.softmask_apply

    def spy(pred, features, out=None):
        calls.append(tuple(features.shape))
        return real(pred, features, out)

    monkeypatch.setattr(ops, "softmask_apply", spy)
    model = fader_mod.FADeR({"image_size": [SIZE, SIZE], "widths": [4, 8, 8, 16, 16], "mosaic_scale": 8,
                             "mlp_hidden": 16, "seed": 0}).eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        got = model.reconstruct(x)
    assert len(calls) == model.unet.n_skips  # one per skip connection
    monkeypatch.setattr(fader_mod, "softmask_inference", fader_mod.softmask_torch)
    with torch.no_grad():
        ref = model.reconstruct(x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    p, f = torch.rand(2, 8, 8), torch.rand(2, 4, 32, 32)
    torch.testing.assert_close(fader_mod.softmask_op(p, f), fader_mod.softmask_torch(p, f), rtol=1e-6, atol=1e-7)


def test_patchcore_post_keeps_framework_arrays_until_the_knn(artifacts):
    """post_patchcore takes torch tensors as they come (CUDA on a GPU backend) and gives the NumPy path's result."""
    exported = artifacts("patchcore")
    from edgead.artifact import load_artifact
    from edgead.runtime import post_patchcore

    art = load_artifact(exported)
    assert post_patchcore.SUPPORTS_CUDA_ARRAYS
    emb = np.random.default_rng(0).standard_normal((2, 256, 48)).astype(np.float32)
    s_np, m_np = post_patchcore.postprocess({"embeddings": emb}, art)
    s_t, m_t = post_patchcore.postprocess({"embeddings": torch.from_numpy(emb)}, art)
    np.testing.assert_array_equal(s_t, s_np)
    np.testing.assert_array_equal(m_t, m_np)


@pytest.mark.cuda
def test_patchcore_post_receives_cuda_arrays_on_torch_cuda(artifacts):  # pragma: no cover - GPU only
    """Torch CUDA backend: PatchCore post-processing gets CUDA tensors (no host copy before the kNN)."""
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    from edgead.runtime import postprocess as pp
    from edgead.runtime import post_patchcore

    seen = []

    def wrapped(outputs, artifact):
        seen.append({k: (type(v).__module__, bool(getattr(v, "is_cuda", False))) for k, v in outputs.items()})
        return post_patchcore.postprocess(outputs, artifact)

    exported = artifacts("patchcore")
    x = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    # only the CUDA call runs with the recording wrapper; the onnxruntime-CPU reference below must not be
    # recorded (its post-processing rightly receives numpy arrays)
    prev = pp.register("patchcore", wrapped, supports_cuda_arrays=True)
    try:
        det = Detector.load(exported, backend="torch", device="cuda")
        res = det(x)
    finally:
        pp.unregister("patchcore")
        if prev is not None:
            pp.register("patchcore", *prev)
    ref = Detector.load(exported, backend="onnxruntime", device="cpu")(x)
    assert seen and all(v == ("torch", True) for s in seen for v in s.values()), seen
    np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-3, atol=1e-3 * np.abs(ref.scores).max())


# ----------------------------------------------------------------------------------------------
# artifact layout and the import graph
# ----------------------------------------------------------------------------------------------
def _imports(path):
    """(module, imported names) of every import statement in a file, module-level or local."""
    tree = ast.parse(open(path).read())
    rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].replace(os.sep, ".")
    mod = rel[: -len(".__init__")] if rel.endswith(".__init__") else rel
    pkg = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.append((base, [a.name for a in node.names]))
    return mod, pkg, out


def _py_files(sub=""):
    for dirpath, _, files in os.walk(os.path.join(PKG, sub)):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(dirpath, f)


def test_runtime_and_export_do_not_import_each_other_in_a_cycle():
    def targets(sub):
        found = set()
        for path in _py_files(sub):
            for module, names in _imports(path)[2]:
                full = [module] + [f"{module}.{n}" for n in names]
                found |= {t.split(".")[1] for t in full if t.startswith("edgead.") and t.count(".") >= 1}
        return found

    runtime_uses, export_uses = targets("runtime"), targets("export")
    assert "export" not in runtime_uses, "edgead.runtime imports edgead.export"
    assert not ("runtime" in export_uses and "export" in runtime_uses)


def _package_of(name):
    parts = name.split(".")
    if len(parts) >= 2 and os.path.isdir(os.path.join(PKG, parts[1])):
        return "edgead." + parts[1]
    return "edgead"


def test_no_private_names_imported_across_packages():
    bad = []
    for path in _py_files():
        mod, _, imports = _imports(path)
        for module, names in imports:
            if not module.startswith("edgead"):
                continue
            for n in names or [""]:
                target = f"{module}.{n}" if n else module
                private = any(p.startswith("_") and not p.startswith("__") for p in target.split(".")[1:])
                if private and _package_of(target) != _package_of(mod):
                    bad.append(f"{mod} imports {target}")
    assert not bad, bad


def test_runtime_imports_neither_torch_nor_export():
    code = ("import sys, edgead.runtime, edgead.runtime.bench, edgead.runtime.post_patchcore, "
            "edgead.runtime.post_fader, edgead.runtime.post_efficientad;"
            "bad = [m for m in ('torch', 'edgead.export', 'edgead.models') if m in sys.modules];"
            "assert not bad, bad")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(PKG))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_layout_names_come_from_artifact():
    from edgead import artifact
    from edgead.export import onnx as eonnx
    from edgead.export import quantize
    from edgead.runtime import backends

    assert eonnx.ONNX_FILE == artifact.ONNX_FILE == "model.onnx"
    assert quantize.INT8_ONNX_FILE == artifact.INT8_ONNX_FILE == "model.int8.onnx"
    meta = {"exports": {"onnx": {"file": "g.onnx"}}}
    assert artifact.export_file(meta, "/a") == os.path.join("/a", "g.onnx")
    assert artifact.export_file({}, "/a", "onnx_int8") == os.path.join("/a", "model.int8.onnx")
    with pytest.raises(ValueError, match="key"):
        artifact.export_file({}, "/a", "engine")
    assert not hasattr(backends, "make_backend")


def test_cached_engine_matches_every_key_field(tmp_path):
    from edgead.runtime.detector import cached_engine

    gpu = {"name": "NVIDIA H100", "compute_capability": "9.0"}
    eng = tmp_path / "engines"
    eng.mkdir()

    def put(name, **key):
        k = {"onnx_sha256": "abc", "precision": "fp16", "gpu": gpu["name"], "compute_capability": "9.0",
             "tensorrt": "10.3.0", "dla_core": None, "batch": [1, 8, 32]}
        k.update(key)
        (eng / f"{name}.json").write_text(json.dumps({"key": k}))
        (eng / f"{name}.engine").write_bytes(b"x")

    put("int8", precision="int8")
    put("old", tensorrt="8.6.1")
    put("dla", dla_core=0)
    put("other", onnx_sha256="def")
    assert cached_engine(str(tmp_path), "fp16", "abc", gpu, "10.3.0") is None
    put("good")
    assert cached_engine(str(tmp_path), "fp16", "abc", gpu, "10.3.0") == str(eng / "good.engine")
    assert cached_engine(str(tmp_path), "fp16", "abc", {"name": "Orin", "compute_capability": "8.7"}, "10.3.0") is None


# ----------------------------------------------------------------------------------------------
# CLI contract
# ----------------------------------------------------------------------------------------------
def _verbs():
    p = build_parser()
    return p._subparsers._group_actions[0].choices


def test_every_verb_help_lists_every_option_with_its_default():
    import re

    for name, sp in _verbs().items():
        blocks, cur = {}, None
        for line in sp.format_help().splitlines():
            m = re.match(r"^  (-[^ ]+)", line)
            if m:
                cur = m.group(1).rstrip(",")
                blocks[cur] = line
            elif cur is not None and line.startswith("      "):
                blocks[cur] += " " + line.strip()
            else:
                cur = None
        opts = [a for a in sp._actions if a.option_strings and a.dest != "help"]
        assert opts, name
        for a in opts:
            block = blocks.get(a.option_strings[0])
            assert block is not None, f"edgead {name} --help does not list {a.option_strings}"
            assert f"(default: {a.default})" in block, f"edgead {name} --help: {a.option_strings} shows no default"


def test_library_functions_take_no_namespace():
    """The CLI calls library functions with explicit arguments: none of them is named cli_* or takes `args`."""
    import inspect

    from edgead import export, pipeline as pl
    from edgead.data import synthetic
    from edgead.models import distill
    from edgead.runtime import bench

    for mod in (export, pl, bench, distill, synthetic):
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            if fn.__module__ == mod.__name__ and name in ("cli_export", "cli_bench"):
                pytest.fail(f"{mod.__name__}.{name} takes an argparse Namespace")
    tree = ast.parse(open(os.path.join(PKG, "cli.py")).read())
    passed = []
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("cmd_")):
        ns = fn.args.args[0].arg
        for call in (c for c in ast.walk(fn) if isinstance(c, ast.Call)):
            args = list(call.args) + [k.value for k in call.keywords]
            if any(isinstance(v, ast.Name) and v.id == ns for v in args):
                passed.append(f"{fn.name}: {ast.unparse(call)[:60]}")
    assert not passed, f"the argparse Namespace is passed on: {passed}"


# ----------------------------------------------------------------------------------------------
# issue 11 item 7: CLI / Detector defects
# ----------------------------------------------------------------------------------------------
def test_failed_eval_leaves_the_artifact_unchanged(artifacts, mvtec, tmp_path, capsys):
    art = _copy(artifacts("patchcore"), tmp_path)
    before = open(os.path.join(art, "edgead.json")).read()
    out = tmp_path / "report.txt"
    out.write_text("user data")
    assert main(["eval", art, mvtec, "--out", str(out), "--set-threshold", "f1", "--device", "cpu", "--quiet"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert open(os.path.join(art, "edgead.json")).read() == before
    assert out.read_text() == "user data"


def test_eval_writes_thresholds_after_the_report(artifacts, mvtec, tmp_path, monkeypatch):
    """A failure while writing the report (here: the plots) must not have changed the thresholds."""
    art = _copy(artifacts("patchcore"), tmp_path)
    before = read_meta(art)["thresholds"]

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "_plot_curves", boom)
    with pytest.raises(OSError):
        pipeline.evaluate(art, mvtec, str(tmp_path / "e"), device="cpu", set_threshold="f1", progress=False)
    assert read_meta(art)["thresholds"] == before


@pytest.fixture
def no_training(monkeypatch):
    from edgead.models.patchcore import PatchCore

    def fit(*a, **k):
        raise AssertionError("training started before the arguments were checked")

    monkeypatch.setattr(PatchCore, "fit", fit)


TINY_RECIPE = {"model": "patchcore", "config": dict(backbone="resnet18", allow_random=True, layers=["layer1"],
                                                    image_size=[32, 32])}


def test_train_checks_its_output_path_before_training(mvtec, tmp_path, no_training):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="out_dir"):
        pipeline.train(TINY_RECIPE, mvtec, str(f), device="cpu", progress=False)
    d = tmp_path / "userdir"
    d.mkdir()
    (d / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not an edgead artifact"):
        pipeline.train(TINY_RECIPE, mvtec, str(d), device="cpu", progress=False)
    assert (d / "notes.txt").read_text() == "keep" and f.read_text() == "x"


@pytest.mark.parametrize("frac", [float("nan"), -0.1, 1.0, "0.1"])
def test_train_rejects_bad_val_fraction_up_front(mvtec, tmp_path, no_training, frac):
    with pytest.raises(ValueError, match="val_fraction"):
        pipeline.train(TINY_RECIPE, mvtec, str(tmp_path / "a"), device="cpu", progress=False,
                       overrides={"val_fraction": frac})


@pytest.mark.parametrize("value", ["nan", "-0.1", "1", "x"])
def test_cli_val_fraction_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "r", "d", "o", "--val-fraction", value])
    assert e.value.code == 2
    assert "--val-fraction" in capsys.readouterr().err


@pytest.mark.parametrize("bs", [-1, 0, 2.5, True])
def test_detector_rejects_bad_batch_size(artifacts, bs):
    exported = artifacts("efficientad")
    with pytest.raises(ValueError, match="batch_size"):
        Detector.load(exported, backend="onnxruntime", device="cpu", batch_size=bs)
    det = Detector.load(exported, backend="onnxruntime", device="cpu", batch_size=1)
    with pytest.raises(ValueError, match="batch_size"):
        Detector(det.artifact, det.backend, batch_size=bs)
    x = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    assert len(det(x)) == 2  # batch_size=1 splits the batch and returns every result


@pytest.mark.parametrize("argv, option", [
    (["bench", "A", "--iterations", "0"], "--iterations"),
    (["bench", "A", "--batch-sizes", "a,b"], "--batch-sizes"),
    (["bench", "A", "--batch-sizes", "1,0"], "--batch-sizes"),
    (["bench", "A", "--warmup", "-1"], "--warmup"),
    (["predict", "A", "x", "--batch-size", "0"], "--batch-size"),
])
def test_cli_bad_numbers_are_usage_errors(argv, option, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and option in err and "invalid literal" not in err


def test_bench_library_rejects_zero_iterations(tmp_path):
    from edgead.runtime.bench import bench_artifacts

    with pytest.raises(ValueError, match="iterations"):
        bench_artifacts(str(tmp_path), backends=["onnxruntime"], iterations=0, out=str(tmp_path / "b"))


def test_main_turns_memory_error_into_a_message(monkeypatch, capsys):
    def oom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(pipeline, "predict", oom)
    assert main(["predict", "A", "img.png", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "out of memory" in err and "edgead predict" in err


# ----------------------------------------------------------------------------------------------
# coreset progress and interruption in training (issue 10 item 6, Python side)
# ----------------------------------------------------------------------------------------------
def test_training_coreset_selection_is_todays_selection():
    from edgead import ops
    from edgead.models.patchcore import _coreset

    x = torch.from_numpy(np.random.default_rng(3).standard_normal((700, 16)).astype(np.float32))
    for seed in (0, 5):
        start = int(np.random.default_rng(seed).integers(700))
        ref = torch.as_tensor(ops.coreset(x, 90, start=start)).long()
        assert torch.equal(_coreset(x, 90, seed, progress=True), ref)


def test_coreset_progress_bar_only_for_long_runs(monkeypatch, capsys):
    from edgead.models import patchcore

    x = torch.from_numpy(np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32))
    patchcore._coreset(x, 40, 0, progress=True)  # a few ms: below the 2 s delay, no bar
    assert "coreset" not in capsys.readouterr().err
    monkeypatch.setattr(patchcore, "CORESET_PROGRESS_DELAY_S", 0.0)
    patchcore._coreset(x, 40, 0, progress=True)
    err = capsys.readouterr().err
    assert "coreset" in err and "40/40" in err
    patchcore._coreset(x, 40, 0, progress=False)
    assert "coreset" not in capsys.readouterr().err


def test_ctrl_c_during_the_coreset_leaves_no_artifact(mvtec, tmp_path, monkeypatch, capsys):
    from edgead import ops

    calls = []
    real = ops.CoresetSelector.step

    def step(self, k):
        calls.append(k)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, k)

    monkeypatch.setattr(ops.CoresetSelector, "step", step)
    out = tmp_path / "runs" / "art"
    recipe = {"model": "patchcore", "config": dict(backbone="resnet18", allow_random=True, layers=["layer1"],
                                                   image_size=[32, 32], coreset_ratio=0.5)}
    import yaml

    rpath = tmp_path / "r.yaml"
    rpath.write_text(yaml.safe_dump(recipe))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", str(rpath), mvtec, str(out), "--device", "cpu", "--quiet"]) == 130
    assert len(calls) == 2 and "interrupted" in capsys.readouterr().err
    assert not out.exists()
    assert not [p for p in os.listdir(out.parent) if p.startswith(".edgead")] if out.parent.exists() else True
