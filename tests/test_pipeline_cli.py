import json
import os
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from edgead.artifact import read_meta  # noqa: E402
from edgead.cli import build_parser, main  # noqa: E402

from conftest import make_texture_category  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    return make_texture_category(str(tmp_path_factory.mktemp("data") / "tex"))


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    import yaml

    p = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    p.write_text(yaml.safe_dump({
        "model": "patchcore",
        "config": {"backbone": "resnet18", "weights": None, "allow_random": True, "layers": ["layer1", "layer2"],
                   "image_size": [48, 48], "mean": [0.5] * 3, "std": [0.25] * 3, "coreset_ratio": 0.5,
                   "num_neighbors": 3, "batch_size": 8},
        "train": {"val_fraction": 0.2, "seed": 0},
    }))
    return str(p)


def test_parser_has_all_commands():
    p = build_parser()
    for argv in (["train", "r", "d", "o"], ["eval", "a", "d"], ["predict", "a", "x"], ["demo", "--quick"],
                 ["export", "a", "--format", "tensorrt", "--precision", "int8", "--dla-core", "0", "--out", "e"],
                 ["bench", "a", "--backend", "torch", "--batch-sizes", "1,8"], ["make-data", "o", "--n-images", "5", "--size", "64"]):
        a = p.parse_args(argv)
        assert a.command == argv[0] and callable(a.func)


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["train", "no_such_recipe", str(tmp_path), str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing"), str(tmp_path)]) == 2


def test_train_eval_predict(tmp_path, tiny_dataset, recipe, capsys):
    art = str(tmp_path / "art")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", recipe, tiny_dataset, art, "--device", "cpu", "--quiet"]) == 0
    meta = read_meta(art)
    assert meta["model_type"] == "patchcore"
    th = meta["thresholds"]
    assert th["image"] > 0 and th["pixel"] > 0 and "val_image_max" in th["candidates"]
    assert meta["statistics"]["train"]["n_val"] == 2

    ev = str(tmp_path / "eval")
    assert main(["eval", art, tiny_dataset, "--out", ev, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "image_auroc" in out
    rep = json.load(open(os.path.join(ev, "metrics.json")))
    assert rep["metrics"]["image_auroc"] > 0.7  # plumbing test; detection quality: test_patchcore.py
    for f in ("roc.png", "pro.png", "scores.csv"):
        assert os.path.getsize(os.path.join(ev, f)) > 0
    th2 = read_meta(art)["thresholds"]
    assert th2["image"] == th["image"]  # candidates only, active threshold unchanged
    assert "image_f1" in th2["candidates"] and "image_fpr0.005" in th2["candidates"]
    assert main(["eval", art, tiny_dataset, "--out", ev, "--device", "cpu", "--quiet", "--set-threshold", "f1"]) == 0
    assert read_meta(art)["thresholds"]["image"] == read_meta(art)["thresholds"]["candidates"]["image_f1"]

    pred = str(tmp_path / "pred")
    assert main(["predict", art, os.path.join(tiny_dataset, "test", "spot"), os.path.join(tiny_dataset, "test", "good", "000.png"),
                 "--out", pred, "--device", "cpu", "--quiet"]) == 0
    res = json.load(open(os.path.join(pred, "results.json")))["results"]
    assert len(res) == 5
    for r in res:
        assert os.path.isfile(r["heatmap"]) and os.path.isfile(r["mask"])
    assert sum(r["anomalous"] for r in res[:4]) >= 3
    from edgead.data.io import read_image

    assert read_image(res[0]["heatmap"]).shape == (48, 48, 3)
    assert os.path.isfile(os.path.join(pred, "scores.csv"))


def test_train_without_metrics_then_predict(tmp_path, tiny_dataset, recipe):
    """train + predict do not need edgead.metrics; evaluated artifacts load with pipeline.predict too."""
    from edgead import pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = pipeline.train(recipe, tiny_dataset, str(tmp_path / "a"), device="cpu", progress=False,
                             overrides={"val_fraction": 0.0})
    assert "image" not in read_meta(art)["thresholds"]
    res = pipeline.predict(art, os.path.join(tiny_dataset, "test", "spot"), str(tmp_path / "p"), device="cpu", progress=False)
    assert len(res) == 4 and res[0]["anomalous"] is None and "mask" not in res[0]


def test_demo_without_weights_offline_stops_clearly(tmp_path, monkeypatch, capsys):
    from edgead import cli
    from edgead.models import backbones

    monkeypatch.setattr(cli, "find_mobilenet_weights", lambda explicit=None: None)

    def offline(name):
        raise RuntimeError("could not download (offline)")

    monkeypatch.setattr(backbones, "_imagenet_state_dict", offline)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 2
    assert "--weights" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "demo" / "data")


def test_cli_parser_does_not_import_torch_and_knows_every_command():
    import subprocess
    import sys

    code = (
        "import sys; from edgead.cli import build_parser; p = build_parser();"
        "cmds = p._subparsers._group_actions[0].choices;"
        "assert set(cmds) >= {'train','eval','predict','export','bench','distill-teacher','make-data','demo'}, cmds;"
        "a = p.parse_args(['export','A','--format','tensorrt','--calibration','D']); assert a.precision is None and a.calibration == 'D';"
        "b = p.parse_args(['bench','A','--iterations','7','--threads','1']); assert b.iterations == 7 and b.threads == 1;"
        "assert 'torch' not in sys.modules, 'torch imported by the CLI parser'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
