"""`edgead serve`: tritonserver (the binary bundled in nvidia-pytriton) on a generated model repository.

The repository (in a temporary folder, removed on stop) holds one Python-backend model:

``<name>``  (dynamic batching, max batch `max_batch_size`, queue delay `max_queue_delay_us`; `instances` copies)
            input  ``image``        FP32 (-1 batch, C, H, W), pre-processed as the artifact says
            output ``score``        FP32 (1,) and ``anomaly_map`` FP32 (H, W) at the model's input size
            model.py = :mod:`edgead.serve.triton_model`: Detector.infer_preprocessed in the backend stub, loaded
            from the artifact with the served Detector's backend / device / precision -- the in-process code.
            Its config parameter ``edgead_meta`` (JSON) carries the model type, pre-processing, thresholds and
            shapes edgead.client needs.

No PyTriton proxy process: tritonserver's Python backend stub runs the Detector itself (PyTriton's bind/proxy
hop measured ~7 ms per request on a 2-core CPU; this path ~1.75 ms, docs/serving.md). PyTriton is only the
package that ships tritonserver, its libraries and the Python backend stubs.

Requests that are wrong (dtype, shape, a payload shorter than its shape) are refused by tritonserver; an empty
batch or NaN/inf by the model, each with its own error response: the other requests of the same dynamic batch are
answered normally and the server keeps serving. Health: ``/v2/health/live``, ``/v2/health/ready``; statistics
``/v2/models/<name>/stats``; Prometheus metrics on the metrics port (``/metrics``).

The Python backend stub embeds ``libpython``: :class:`Server` puts this interpreter's library folder first on
``LD_LIBRARY_PATH``, its ``bin`` first on ``PATH`` and its ``sys.path`` on ``PYTHONPATH`` so the stub runs the
same Python, edgead and packages as this process. The stubs are built against NumPy 1.x: with NumPy >= 2 here
every response would come back empty, so :func:`serve_available` refuses that with a clear message
(``pip install "edgead[serve]"`` resolves numpy<2).

tritonserver runs in its own process group (session); ``stop()`` asks it to exit (SIGTERM, it drains within
``--exit-timeout-secs``), then kills whatever is left of the group (Python backend stubs included). It is also
stopped at interpreter exit, and (when started from the main thread) killed by the kernel if this process dies.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Optional

import numpy as np

__all__ = ["Server", "ServeError", "free_ports", "serve", "serve_available", "tritonserver_paths"]

LOG = logging.getLogger("edgead.serve")
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy
_MODEL_PY = """# written by edgead.serve: the model is edgead.serve.triton_model (Detector.infer_preprocessed)
from edgead.serve.triton_model import TritonPythonModel  # noqa: F401
"""


class ServeError(RuntimeError):
    """The server cannot be started here (missing extra, incompatible environment, port in use, ...)."""


def serve_available() -> Optional[str]:
    """None when `edgead serve` can run in this environment, else the reason it cannot."""
    try:
        import pytriton  # noqa: F401
        import tritonclient  # noqa: F401
    except ImportError as e:
        return f"the optional 'serve' extra is not installed ({e}); pip install \"edgead[serve]\""
    if int(np.__version__.split(".")[0]) >= 2:
        return (f"PyTriton's Python backend stub is built against NumPy 1.x and returns empty tensors with NumPy "
                f"{np.__version__}; use an environment with numpy<2 (pip install \"edgead[serve]\" resolves it)")
    return None


def _check_port(name: str, v) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 < int(v) < 65536:
        raise ValueError(f"Server: argument '{name}' expected a port number in 1..65535, got {v!r}")
    return int(v)



def tritonserver_paths() -> Dict[str, str]:
    """Where the tritonserver bundled in the installed nvidia-pytriton lives: {"root", "bin", "backends", "stub",
    "libs"} (the Python backend stub for this interpreter's version). ServeError when something is missing."""
    try:
        import pytriton
    except ImportError as e:
        raise ServeError(f"edgead serve: nvidia-pytriton (which ships tritonserver) is not installed ({e}); "
                         "pip install \"edgead[serve]\"") from None
    pkg = os.path.dirname(os.path.abspath(pytriton.__file__))
    root = os.path.join(pkg, "tritonserver")
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    libs = os.path.join(os.path.dirname(pkg), "nvidia_pytriton.libs")
    if not os.path.isdir(libs):  # an editable PyTriton install keeps them in the package
        libs = os.path.join(root, "external_libs")
    paths = {"root": root, "bin": os.path.join(root, "bin", "tritonserver"), "backends": os.path.join(root, "backends"),
             "stub": os.path.join(root, "python_backend_stubs", ver, "triton_python_backend_stub"), "libs": libs}
    for k in ("bin", "stub"):
        if not os.path.isfile(paths[k]):
            raise ServeError(f"edgead serve: nvidia-pytriton at {pkg} has no {k} file {paths[k]} "
                             f"(Python {ver} stub missing, or an unexpected package layout)")
    if not os.path.isfile(os.path.join(paths["backends"], "python", "libtriton_python.so")):
        raise ServeError(f"edgead serve: nvidia-pytriton at {pkg} has no Python backend in {paths['backends']}")
    return paths


def free_ports(n: int, host: str = "127.0.0.1") -> list:
    """n distinct free TCP ports on `host` (all n sockets are held while they are picked, so no port repeats)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host if host not in ("0.0.0.0", "") else "127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a listener still blocks; TIME_WAIT does not
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _load_spec(detector) -> Dict[str, Any]:
    """How the backend stub loads the same Detector: Detector.load keyword arguments (JSON-able)."""
    art = detector.artifact
    if not getattr(art, "path", None):
        raise ValueError("Server: argument 'detector' must be loaded from an artifact directory (Detector.load), "
                         "its artifact has no path")
    be = detector.backend
    name = getattr(be, "name", "")
    if name not in ("onnxruntime", "torch", "tensorrt"):
        raise ValueError(f"Server: argument 'detector' has backend {name!r}; expected onnxruntime, torch or tensorrt")
    spec = {"artifact": os.path.abspath(art.path), "backend": name, "device": getattr(be, "device", None),
            "precision": getattr(be, "precision", None), "batch_size": int(detector.batch_size)}
    if name == "tensorrt":
        spec["engine"] = os.path.abspath(be.engine_path)
        spec.pop("device")
    return spec


class Server:
    """tritonserver serving one Detector's artifact on `host` (default loopback only).

    ``start()`` returns once the server and the model are ready (or raises ServeError within
    `startup_timeout_s`, with the end of tritonserver's log); ``stop()`` shuts it down (also on ``with`` exit).
    ``serve_forever()`` blocks until interrupted (Ctrl-C / SIGTERM) -- what `edgead serve` runs.
    The Detector given is only read (artifact path, backend, device, precision, thresholds): the server loads
    its own copy in each model instance; the caller may close it once the Server is constructed.
    Ports given as None are picked free at start(). log_file: tritonserver's output (None: a file in the
    server's temporary folder, ``log_path``; "-": this process's stdout/stderr).
    """

    def __init__(self, detector, name: str = "edgead", host: str = "127.0.0.1", http_port: Optional[int] = 8000,
                 grpc_port: Optional[int] = 8001, metrics_port: Optional[int] = 8002, max_batch_size: int = 32,
                 max_queue_delay_us: int = 0, dynamic_batching: bool = True, instances: int = 1,
                 log_verbose: int = 0, startup_timeout_s: float = 120.0, log_file: Optional[str] = None):
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
            raise ValueError(f"Server: argument 'name' expected letters, digits, '_' or '-', got {name!r}")
        for arg, v, lo in (("max_batch_size", max_batch_size, 1), ("max_queue_delay_us", max_queue_delay_us, 0),
                           ("instances", instances, 1), ("log_verbose", log_verbose, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < lo:
                raise ValueError(f"Server: argument '{arg}' expected an int >= {lo}, got {v!r}")
        if not isinstance(host, str) or not host:
            raise ValueError(f"Server: argument 'host' expected an address such as '127.0.0.1', got {host!r}")
        if isinstance(startup_timeout_s, bool) or not isinstance(startup_timeout_s, (int, float)) or not startup_timeout_s > 0:
            raise ValueError(f"Server: argument 'startup_timeout_s' expected a number > 0, got {startup_timeout_s!r}")
        self.name = name
        self.host = host
        self.http_port = _check_port("http_port", http_port)
        self.grpc_port = _check_port("grpc_port", grpc_port)
        self.metrics_port = _check_port("metrics_port", metrics_port)
        self.max_batch_size = int(max_batch_size)
        self.max_queue_delay_us = int(max_queue_delay_us)
        self.dynamic_batching = bool(dynamic_batching)
        self.instances = int(instances)
        self.log_verbose = int(log_verbose)
        self.startup_timeout_s = float(startup_timeout_s)
        self.log_file = log_file
        self.load_spec = _load_spec(detector)
        pre = detector.preprocessing
        self.input_shape = (int(pre.channels),) + tuple(int(v) for v in pre.size)
        art = detector.artifact
        self._meta = {"model_type": art.model_type, "preprocessing": dict(art.preprocessing),
                      "thresholds": dict(art.thresholds or {}), "config": dict(art.config or {}),
                      "image_threshold": detector.image_threshold, "pixel_threshold": detector.pixel_threshold,
                      "model": self.name, "input": "image", "input_shape": list(self.input_shape),
                      "outputs": ["score", "anomaly_map"], "max_batch_size": self.max_batch_size}
        self.detector_repr = repr(detector)
        self._proc: Optional[subprocess.Popen] = None
        self._token = ""
        self._tmp: Optional[str] = None
        self._log = None
        self.log_path: Optional[str] = None

    # ------------------------------------------------------------------------------------------
    def meta(self) -> Dict[str, Any]:
        """What a client needs to pre-process, threshold and call like the Detector (the model's ``edgead_meta``
        config parameter)."""
        return json.loads(json.dumps(self._meta))

    def model_config(self) -> Dict[str, Any]:
        """The model's config.pbtxt as a dict (edgead.export.triton.to_pbtxt writes it)."""
        from edgead.export.triton import PbEnum, tensor_config

        c, h, w = self.input_shape
        cfg: Dict[str, Any] = {
            "name": self.name, "backend": "python", "max_batch_size": self.max_batch_size,
            "input": [tensor_config("image", "float32", [c, h, w])],
            "output": [tensor_config("score", "float32", [1]), tensor_config("anomaly_map", "float32", [h, w])],
        }
        if self.dynamic_batching:
            cfg["dynamic_batching"] = {"max_queue_delay_microseconds": self.max_queue_delay_us}
        cfg["instance_group"] = [{"count": self.instances, "kind": PbEnum("KIND_CPU")}]
        cfg["parameters"] = [
            {"key": "edgead_load", "value": {"string_value": json.dumps(self.load_spec, sort_keys=True)}},
            {"key": "edgead_meta", "value": {"string_value": json.dumps(self._meta, sort_keys=True)}},
            {"key": "edgead_server", "value": {"string_value": self._token}},
        ]
        return cfg

    def write_repository(self, repo: str) -> str:
        """Write the model repository to `repo` (created): <name>/config.pbtxt and <name>/1/model.py."""
        from edgead.export.triton import to_pbtxt

        d = os.path.join(repo, self.name, "1")
        os.makedirs(d)
        with open(os.path.join(d, "model.py"), "w") as f:
            f.write(_MODEL_PY)
        with open(os.path.join(repo, self.name, "config.pbtxt"), "w") as f:
            f.write(to_pbtxt(self.model_config()))
        return repo

    def _env(self, paths: Dict[str, str]) -> Dict[str, str]:
        env = dict(os.environ)

        def prepend(var, items):
            old = [p for p in env.get(var, "").split(os.pathsep) if p]
            env[var] = os.pathsep.join([p for p in items if p] + [p for p in old if p not in items])

        libdir = sysconfig.get_config_var("LIBDIR") if sysconfig.get_config_var("Py_ENABLE_SHARED") else None
        prepend("LD_LIBRARY_PATH", [libdir, paths["libs"]])
        prepend("PATH", [os.path.join(sys.prefix, "bin")])  # the stub's Python finds this prefix (a venv)
        import edgead

        src = os.path.dirname(os.path.dirname(os.path.abspath(edgead.__file__)))
        prepend("PYTHONPATH", [src] + [p for p in sys.path if p and os.path.isdir(p) and p != src])
        return env

    def _argv(self, paths: Dict[str, str], repo: str, backends: str) -> list:
        a = [paths["bin"], f"--model-repository={repo}", f"--backend-directory={backends}",
             f"--cache-directory={os.path.join(paths['root'], 'caches')}", "--model-control-mode=none",
             "--disable-auto-complete-config", f"--http-address={self.host}", f"--http-port={self.http_port}",
             f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}", "--allow-metrics=true",
             f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}", "--allow-gpu-metrics=false",
             "--exit-timeout-secs=10", f"--log-verbose={self.log_verbose}"]
        return a

    def _ready(self) -> bool:
        """The model is ready on this server (its config carries this start's token: not another server that
        answers on the same port)."""
        base = f"{self.urls['http']}/v2/models/{self.name}"
        try:
            with _LOCAL.open(f"{base}/ready", timeout=2) as r:
                if r.status != 200:
                    return False
            with _LOCAL.open(f"{base}/config", timeout=2) as r:
                cfg = json.loads(r.read())
            return cfg["parameters"]["edgead_server"]["string_value"] == self._token
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            return False

    def _log_tail(self, n: int = 8) -> str:
        """tritonserver's error lines (E...) and its last `n` lines, for an error message."""
        if not self.log_path or not os.path.isfile(self.log_path):
            return ""
        with open(self.log_path, errors="replace") as f:
            lines = [ln.rstrip() for ln in f.read().splitlines() if ln.strip()]
        errs = [ln for ln in lines[:-n] if ln[:1] == "E" and ln[1:5].isdigit()][-10:]
        keep = errs + lines[-n:]
        return "\n  " + "\n  ".join(ln[:2000] for ln in keep) if keep else ""

    def start(self) -> "Server":
        if self._proc is not None:
            return self
        why = serve_available()
        if why is not None:
            raise ServeError(f"edgead serve: {why}")
        paths = tritonserver_paths()
        missing = [attr for attr in ("http_port", "grpc_port", "metrics_port") if getattr(self, attr) is None]
        for attr, port in zip(missing, free_ports(len(missing), self.host)):
            setattr(self, attr, port)
        for attr in ("http_port", "grpc_port", "metrics_port"):  # before tritonserver, for a clear message
            if _port_in_use(self.host, getattr(self, attr)):
                raise ServeError(f"edgead serve: {attr.split('_')[0]} port {getattr(self, attr)} on {self.host} is "
                                 "in use (another server?); choose another port")
        self._token = os.urandom(8).hex()  # readiness must come from this tritonserver, not one on the same port
        tmp = tempfile.mkdtemp(prefix="edgead-serve-")
        self._tmp = tmp
        try:
            repo = self.write_repository(os.path.join(tmp, "models"))
            backends = os.path.join(tmp, "backends")  # the bundled backends + the stub for this Python version
            shutil.copytree(paths["backends"], backends, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy(paths["stub"], os.path.join(backends, "python", "triton_python_backend_stub"))
            if self.log_file == "-":
                out = None
            else:
                self.log_path = os.path.abspath(self.log_file or os.path.join(tmp, "tritonserver.log"))
                self._log = out = open(self.log_path, "ab")
            main = threading.current_thread() is threading.main_thread()
            self._proc = subprocess.Popen(self._argv(paths, repo, backends), env=self._env(paths), stdout=out,
                                          stderr=subprocess.STDOUT if out is not None else None,
                                          stdin=subprocess.DEVNULL, start_new_session=True,
                                          preexec_fn=_die_with_parent if main else None)
        except BaseException:
            self.stop()
            raise
        _LIVE.add(self)
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            while True:
                if self._ready() and self._metrics_up() and self._proc.poll() is None:
                    break
                rc = self._proc.poll()
                if rc is not None or time.monotonic() > deadline:
                    what = (f"exited with status {rc}" if rc is not None
                            else f"was not ready within {self.startup_timeout_s:g} s")
                    log = self._log_tail()
                    raise ServeError(f"edgead serve: tritonserver {what} (ports http {self.http_port}, grpc "
                                     f"{self.grpc_port}, metrics {self.metrics_port} on {self.host})"
                                     + (f"; end of its log:{log}" if log else ""))
                time.sleep(0.1)
        except BaseException:  # not ready, or interrupted while waiting: nothing may be left running
            self.stop()
            raise
        return self

    def _metrics_up(self) -> bool:
        try:
            with _LOCAL.open(self.urls["metrics"], timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    @property
    def pid(self) -> Optional[int]:
        return None if self._proc is None else self._proc.pid

    @property
    def batch_sizes(self) -> Dict[int, int]:
        """Executed batch size -> count so far, from tritonserver's statistics (``/v2/models/<name>/stats``):
        shows what dynamic batching combined."""
        with _LOCAL.open(f"{self.urls['http']}/v2/models/{self.name}/stats", timeout=10) as r:
            st = json.loads(r.read())
        out: Dict[int, int] = {}
        for m in st.get("model_stats", []):
            for b in m.get("batch_stats", []) or []:
                n = int((b.get("compute_infer") or {}).get("count", 0))
                if n:
                    out[int(b["batch_size"])] = out.get(int(b["batch_size"]), 0) + n
        return out

    def serve_forever(self) -> None:
        """Start (if needed) and block until interrupted or tritonserver exits; always stops it."""
        if self._proc is None:
            self.start()
        try:
            while self._proc is not None and self._proc.poll() is None:
                time.sleep(0.5)
            if self._proc is not None:
                raise ServeError(f"edgead serve: tritonserver exited with status {self._proc.returncode}"
                                 + self._log_tail())
        finally:
            self.stop()

    def stop(self) -> None:
        """Ask tritonserver to exit (SIGTERM; it drains for up to 10 s), then kill what is left of its process
        group (the Python backend stubs); remove the temporary repository. Safe to call twice."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None:
            _stop_group(proc)
        if self._log is not None:
            self._log.close()
            self._log = None
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            if self.log_path and self.log_path.startswith(tmp + os.sep):
                self.log_path = None
            shutil.rmtree(tmp, ignore_errors=True)

    @property
    def urls(self) -> Dict[str, str]:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return {"http": f"http://{host}:{self.http_port}", "grpc": f"grpc://{host}:{self.grpc_port}",
                "metrics": f"http://{host}:{self.metrics_port}/metrics"}

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """tritonserver gets SIGTERM if the process that started it dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except Exception:
        pass


def _stop_group(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            LOG.warning("tritonserver (pid %d) did not exit within %.0f s of SIGTERM: killing it", proc.pid, grace_s)
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)  # stubs or a stuck server left in the group
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass


_LIVE: "set[Server]" = set()  # running servers (strong refs: a dropped Server is still stopped at exit)


@atexit.register
def _stop_all() -> None:
    for s in list(_LIVE):
        try:
            s.stop()
        except Exception:  # pragma: no cover - best effort at exit
            pass


def serve(artifact: str, backend: str = "auto", device: Optional[str] = None, precision: Optional[str] = None,
          threshold=None, pixel_threshold=None, **server_kwargs) -> None:
    """Load the artifact's Detector and serve it until interrupted (what `edgead serve` runs)."""
    from edgead.runtime import Detector

    why = serve_available()
    if why is not None:
        raise ServeError(f"edgead serve: {why}")
    det = Detector.load(artifact, backend=backend, device=device, precision=precision, threshold=threshold,
                        pixel_threshold=pixel_threshold)
    try:
        server_kwargs.setdefault("log_file", "-")  # tritonserver's log on this console
        srv = Server(det, **server_kwargs)  # reads the artifact path, backend, device, thresholds
    finally:
        det.close()  # tritonserver's model instances load their own
    if threading.current_thread() is threading.main_thread():
        def _stop(signum, frame):  # SIGTERM (docker stop, systemd) and SIGINT: leave through Server.stop()
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    srv.start()
    print(f"edgead serve: {srv.detector_repr} as model '{srv.name}' on {srv.urls['http']} (HTTP), "
          f"{srv.urls['grpc']} (gRPC), metrics {srv.urls['metrics']}; Ctrl-C stops", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    print("edgead serve: stopped", flush=True)
