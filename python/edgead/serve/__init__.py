"""`edgead serve ARTIFACT`: a real Triton Inference Server (through PyTriton) around one edgead.runtime.Detector.

    from edgead.serve import Server
    with Server(Detector.load(artifact, backend="onnxruntime"), http_port=8000) as srv:   # starts tritonserver
        ...                                                                                # edgead.client.Client

Needs the optional extra ``pip install "edgead[serve]"`` (nvidia-pytriton, which bundles tritonserver, and
tritonclient). See docs/serving.md.
"""
from edgead.serve.server import ServeError, Server, serve, serve_available

__all__ = ["Server", "ServeError", "serve", "serve_available"]
