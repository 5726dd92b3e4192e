"""`edgead serve ARTIFACT`: a real Triton Inference Server around one edgead.runtime.Detector: the tritonserver
binary bundled in nvidia-pytriton, started directly on a generated Python-backend model repository.

    from edgead.serve import Server
    with Server(Detector.load(artifact, backend="onnxruntime"), http_port=8000) as srv:   # starts tritonserver
        ...                                                                                # edgead.client.Client

Needs the optional extra ``pip install "edgead[serve]"`` (nvidia-pytriton, which ships tritonserver and the
Python backend, and tritonclient). See docs/serving.md.
"""
from edgead.serve.server import ServeError, Server, free_ports, serve, serve_available, tritonserver_paths

__all__ = ["Server", "ServeError", "free_ports", "serve", "serve_available", "tritonserver_paths"]
