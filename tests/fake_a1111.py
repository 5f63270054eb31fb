"""A local stand-in for the Stable Diffusion web UI API (`--api`), for tests.

It answers `POST /sdapi/v1/txt2img` with a real PNG (a crop of a scikit-image photo whose
position depends on the seed and on the loaded checkpoint) and an `info` JSON that names the
model used and every seed, like the web UI. It behaves as the web UI does where that
matters: `override_settings.sd_model_checkpoint` switches the model when it names a known
checkpoint (by title, name or hash) and silently keeps the loaded one otherwise; an unknown
sampler is `404 {"detail": "Sampler not found"}`; a route it does not have is
`404 {"detail": "Not Found"}`; with `auth` set, requests without that basic-auth login get
401. It logs every request body and can be told to fail the next requests with a status, or
to ignore the requested seed.
"""

from __future__ import annotations

import base64
import binascii
import io
import json

from fakes import LocalServer, QuickHandler

CHECKPOINTS = [  # (title, model name as info reports it, short hash)
    ("sd_xl_base_1.0.safetensors [31e35c80fc]", "sd_xl_base_1.0", "31e35c80fc"),
    ("SDXL/juggernaut_v9.safetensors [c9e3e68f89]", "juggernaut_v9", "c9e3e68f89"),
]
CHECKPOINT = CHECKPOINTS[0][0]
SAMPLERS = ("Euler a", "Euler", "DPM++ 2M", "DDIM")


def photo_png(width: int, height: int, seed: int, model: int = 0) -> bytes:
    """PNG bytes: a width x height crop of a photo (one per checkpoint), offset by the seed."""
    from PIL import Image
    from skimage import data

    photo = (data.astronaut, data.coffee)[model % 2]()
    top, left = seed % (photo.shape[0] - height), (seed * 7) % (photo.shape[1] - width)
    buffer = io.BytesIO()
    Image.fromarray(photo[top:top + height, left:left + width]).save(buffer, format="PNG")
    return buffer.getvalue()


def find_checkpoint(name: str) -> int | None:
    for k, (title, model, short) in enumerate(CHECKPOINTS):
        if name in (title, title.split(" [")[0], model, short):
            return k
    return None


class FakeA1111(LocalServer):
    def __init__(self, auth: str = "") -> None:
        self.requests: list[dict] = []
        self.auth_headers: list[str] = []
        self.failures: list[tuple[int, str]] = []
        self.loaded = 0                # index into CHECKPOINTS
        self.auth = auth               # "user:password" to require basic auth
        self.ignore_seed = False       # answer with another seed than the one asked for
        self.drop_info = False         # answer without `info`
        super().__init__()

    def fail(self, status: int, body: str = "boom", times: int = 1) -> None:
        """Answer the next `times` txt2img requests with `status`."""
        with self.lock:
            self.failures += [(status, body)] * times

    def _handler(self):
        fake = self

        class Handler(QuickHandler):

            def _send(self, status: int, body: bytes | dict, kind: str = "application/json") -> None:
                raw = json.dumps(body).encode() if isinstance(body, dict) else body
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _authorised(self) -> bool:
                header = self.headers.get("Authorization", "")
                with fake.lock:
                    fake.auth_headers.append(header)
                if not fake.auth:
                    return True
                try:
                    given = base64.b64decode(header.removeprefix("Basic ")).decode()
                except (binascii.Error, UnicodeDecodeError):
                    given = ""
                if given == fake.auth:
                    return True
                self._send(401, {"detail": "Not authenticated"})
                return False

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                if self.path == "/sdapi/v1/options":
                    self._send(200, {"sd_model_checkpoint": CHECKPOINTS[fake.loaded][0]})
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if not self._authorised():
                    return
                with fake.lock:
                    fake.requests.append(body)
                    failure = fake.failures.pop(0) if fake.failures else None
                if self.path != "/sdapi/v1/txt2img":
                    return self._send(404, {"detail": "Not Found"})
                if failure:
                    return self._send(failure[0], failure[1].encode(), "text/plain")
                if body.get("sampler_name") and body["sampler_name"] not in SAMPLERS:
                    return self._send(404, {"detail": "Sampler not found"})
                wanted = (body.get("override_settings") or {}).get("sd_model_checkpoint")
                with fake.lock:
                    if wanted and find_checkpoint(wanted) is not None:
                        fake.loaded = find_checkpoint(wanted)
                    model = fake.loaded
                seed = body["seed"] + 1 if fake.ignore_seed else body["seed"]
                png = photo_png(body["width"], body["height"], seed, model)
                info = {"seed": seed, "all_seeds": [seed], "sd_model_name": CHECKPOINTS[model][1],
                        "sd_model_hash": CHECKPOINTS[model][2], "sampler_name": body.get("sampler_name")}
                answer = {"images": [base64.b64encode(png).decode()], "parameters": body}
                if not fake.drop_info:
                    answer["info"] = json.dumps(info)
                self._send(200, answer)

        return Handler
