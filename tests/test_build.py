import subprocess
import sys

import edgead


def test_build_info_reports_ops_and_cuda_flag():
    info = edgead.build_info()
    assert set(info["ops"]) == {"pro", "knn", "coreset", "msgms", "softmask"}
    assert isinstance(info["cuda"], bool)
    if info["cuda"]:
        assert info["cudart"] == "static"
        assert info["cuda_architectures"]


def test_cuda_available_is_consistent_with_status():
    assert edgead.cuda_available() == (edgead.cuda_status() == "")


def test_importing_edgead_ops_and_metrics_does_not_import_torch():
    code = "import sys, edgead, edgead.ops, edgead.metrics; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
