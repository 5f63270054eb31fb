"""A local stand-in for the Stable Diffusion web UI API (`--api`), for tests.

It answers `POST /sdapi/v1/txt2img` with a real PNG (a crop of a scikit-image photo whose
position depends on the seed, so different seeds give different images) and
`GET /sdapi/v1/options`, logs every request body, and can be told to fail the next
requests with a given HTTP status.
"""

from __future__ import annotations

import base64
import io
import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from fakes import LocalServer

CHECKPOINT = "sd_xl_base_1.0.safetensors [31e35c80fc]"


def photo_png(width: int, height: int, seed: int) -> bytes:
    """PNG bytes: a width x height crop of the astronaut photo, offset by the seed."""
    from PIL import Image
    from skimage import data

    photo = data.astronaut()
    top, left = seed % (photo.shape[0] - height), (seed * 7) % (photo.shape[1] - width)
    buffer = io.BytesIO()
    Image.fromarray(photo[top:top + height, left:left + width]).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeA1111(LocalServer):
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.failures: list[tuple[int, str]] = []
        super().__init__()

    def fail(self, status: int, body: str = "boom", times: int = 1) -> None:
        """Answer the next `times` txt2img requests with `status`."""
        with self.lock:
            self.failures += [(status, body)] * times

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/sdapi/v1/options":
                    self._send(200, json.dumps({"sd_model_checkpoint": CHECKPOINT}).encode())
                else:
                    self._send(404, b'{"detail": "Not Found"}')

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with fake.lock:
                    fake.requests.append(body)
                    failure = fake.failures.pop(0) if fake.failures else None
                if self.path != "/sdapi/v1/txt2img":
                    return self._send(404, b'{"detail": "Not Found"}')
                if failure:
                    return self._send(failure[0], failure[1].encode(), "text/plain")
                png = photo_png(body["width"], body["height"], body["seed"])
                info = {"seed": body["seed"], "sd_model_name": "sd_xl_base_1.0"}
                answer = {"images": [base64.b64encode(png).decode()], "parameters": body,
                          "info": json.dumps(info)}
                self._send(200, json.dumps(answer).encode())

        return Handler
