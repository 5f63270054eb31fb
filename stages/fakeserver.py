"""A scripted OpenAI-compatible server on loopback, for tests and benchmarks.

Real HTTP (stdlib `ThreadingHTTPServer`, one thread per connection on 127.0.0.1) with
scripted replies, a request log and injected faults (status codes with headers, slow,
malformed, truncated and dropped answers). It lives in the package so that benchmarks and
users checking a config need nothing from `tests/`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuickHandler(BaseHTTPRequestHandler):
    """A handler whose answers leave in one write, on a socket with TCP_NODELAY.

    The stdlib handler writes the headers and then the body as two small sends; with
    Nagle's algorithm on, the second waits for the client's delayed ACK of the first
    (about 40 ms on Linux) on every keep-alive request. A buffered `wfile` (flushed once
    per request by `handle_one_request`) and TCP_NODELAY remove that stall.
    """

    wbufsize = 1 << 16

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:
        pass


class LocalServer:
    """A stdlib HTTP server on a free loopback port, served from a daemon thread.

    Subclasses set `path_prefix` and implement `_handler()` returning the handler class.
    """

    path_prefix = ""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.path_prefix}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError


@dataclass
class Fault:
    """One injected failure: kind in status | slow | malformed | drop | truncated."""

    kind: str
    status: int = 500
    headers: dict = field(default_factory=dict)
    seconds: float = 0.0
    body: str = ""


def default_reply(request: dict) -> str:
    """Echo-ish deterministic answer; JSON when a schema or JSON mode is asked for."""
    fmt = request.get("response_format") or {}
    if fmt.get("type") in ("json_schema", "json_object"):
        return json.dumps({"matches": False, "missing": [], "revised_prompt": "a test prompt"})
    last = request["messages"][-1]["content"]
    if isinstance(last, list):
        last = " ".join(p.get("text", "") for p in last if p.get("type") == "text")
    return "caption for: " + " ".join(str(last).split())[:80]


class FakeOpenAI(LocalServer):
    """Scripted OpenAI-compatible server. Use `.url` as base_url."""

    path_prefix = "/v1"

    def __init__(self, reply: Callable[[dict], str] = default_reply, *,
                 models: tuple[str, ...] = ("fake-model",), reject_json_schema: bool = False,
                 reject_json_object: bool = False, reject_images: bool = False,
                 capability_status: int = 500):
        self.reply = reply
        self.models = models
        self.reject_json_schema = reject_json_schema
        self.reject_json_object = reject_json_object
        self.reject_images = reject_images
        self.capability_status = capability_status
        self.faults: deque[Fault] = deque()
        self.fault_every = 0          # with `every_fault`: fail every Nth chat request
        self.every_fault: Fault | None = None
        self.fault_when: Callable[[dict], Fault | None] | None = None   # per request, by content
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.get_paths: list[str] = []   # every GET (the model listing), in order
        self.chat_count = 0
        self.latency = 0.0
        self.dead = False             # after kill(): every request is dropped unanswered
        super().__init__()

    def kill(self) -> int:
        """Stop answering at once, also on open keep-alive connections; return requests seen."""
        with self.lock:
            self.dead = True
            seen = len(self.requests)
        self.server.shutdown()
        self.server.server_close()
        return seen

    def inject(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    @property
    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if "messages" in r]

    def _next_fault(self, request: dict) -> Fault | None:
        with self.lock:
            self.chat_count += 1
            if self.fault_when is not None:
                chosen = self.fault_when(request)
                if chosen is not None:
                    return chosen
            if self.faults:
                return self.faults.popleft()
            if self.fault_every and self.every_fault and self.chat_count % self.fault_every == 0:
                return self.every_fault
        return None

    def _capability_error(self, request: dict) -> str:
        fmt = (request.get("response_format") or {}).get("type")
        if fmt == "json_schema" and self.reject_json_schema:
            return "response_format type json_schema is not supported"
        if fmt == "json_object" and self.reject_json_object:
            return "response_format json_object is not supported"
        if self.reject_images:
            for msg in request["messages"]:
                if isinstance(msg.get("content"), list) and any(
                        p.get("type") == "image_url" for p in msg["content"]):
                    return "image input is not supported - hint: you may need to provide the mmproj"
        return ""

    def _handler(self):
        fake = self

        class Handler(QuickHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, body: dict | str, headers: dict | None = None) -> None:
                data = body if isinstance(body, str) else json.dumps(body)
                raw = data.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, str(v))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                with fake.lock:
                    fake.get_paths.append(self.path)
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "owned_by": "test"} for m in fake.models]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                if fake.dead:
                    self.close_connection = True
                    self.connection.close()
                    return
                with fake.lock:
                    fake.requests.append(request)
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                fault = fake._next_fault(request)
                if fake.latency:
                    time.sleep(fake.latency)
                if fault is not None and self._apply(fault):
                    return
                problem = fake._capability_error(request)
                if problem:
                    self._send(fake.capability_status, {"error": {
                        "code": fake.capability_status, "message": problem,
                        "type": "invalid_request_error"}})
                    return
                text = fake.reply(request)
                self._send(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "created": 0,
                    "model": request.get("model", ""),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

            def _apply(self, fault: Fault) -> bool:
                if fault.kind == "status":
                    self._send(fault.status, {"error": {"message": fault.body or "injected"}},
                               fault.headers)
                    return True
                if fault.kind == "slow":
                    time.sleep(fault.seconds)
                    return False
                if fault.kind == "malformed":
                    self._send(200, fault.body or "{this is not json")
                    return True
                if fault.kind == "truncated":
                    raw = b'{"id": "x", "choices": [{"message": {"content": "cut'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw) + 50))
                    self.end_headers()
                    self.wfile.write(raw)
                    self.wfile.flush()
                    self.close_connection = True
                    return True
                if fault.kind == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return True
                raise ValueError(f"unknown fault {fault.kind}")

        return Handler


def serve_in_subprocess(latency: float = 0.0):
    """Start a FakeOpenAI in its own process (its own GIL, like a real server).

    Returns (process, base_url). Used by benchmarks, where a server sharing the client's
    interpreter would measure the GIL, not the client.
    """
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    code = (f"import sys, time; sys.path.insert(0, {root!r})\n"
            "from stages.fakeserver import FakeOpenAI\n"
            f"s = FakeOpenAI().__enter__(); s.latency = {latency!r}\n"
            "print(s.url, flush=True)\n"
            "while True: time.sleep(3600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    return proc, url
