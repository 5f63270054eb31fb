"""Text-to-image through the Stable Diffusion web UI API (AUTOMATIC1111, Forge, SD.Next).

One `POST /sdapi/v1/txt2img` per (prompt, seed): the web UI can batch only one prompt with
consecutive seeds, and every image here has a seed of its own. A server that cannot be
reached stops the run (every item would fail the same way); an error answer fails one item.
"""

from __future__ import annotations

import base64
import io
import time

from ..errors import ConfigError, FatalError, ItemError

START_HINT = "start the web UI with the --api flag (e.g. `./webui.sh --api`) or set generate.url"


class A1111Backend:
    """`checkpoint`, when set, asks the web UI to switch to that model for these requests."""

    def __init__(self, url: str = "http://127.0.0.1:7860", *, steps: int = 30, guidance: float = 5.0,
                 width: int = 1024, height: int = 1024, sampler: str = "", checkpoint: str = "",
                 timeout: float = 600, retries: int = 2, backoff: float = 1.0):
        self.url = url.strip().rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"generate.url = {url!r}: give an http:// or https:// address of the web UI")
        self.steps, self.guidance = int(steps), float(guidance)
        self.width, self.height = int(width), int(height)
        self.sampler, self.checkpoint = sampler.strip(), checkpoint.strip()
        self.timeout, self.retries, self.backoff = float(timeout), max(0, int(retries)), float(backoff)
        self._session = None
        self._loaded_checkpoint: str | None = None

    def session(self):
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def identity(self) -> dict:
        """Settings plus the checkpoint the web UI has loaded (asked once)."""
        return {"backend": "a1111", "checkpoint": self.checkpoint or self.loaded_checkpoint(),
                "sampler": self.sampler or "default", "steps": self.steps, "guidance": self.guidance,
                "width": self.width, "height": self.height}

    def loaded_checkpoint(self) -> str:
        if self._loaded_checkpoint is None:
            answer = self._request("GET", "/sdapi/v1/options", None)
            self._loaded_checkpoint = str((answer or {}).get("sd_model_checkpoint") or "unknown")
        return self._loaded_checkpoint

    def payload(self, prompt: str, seed: int, negative_prompt: str) -> dict:
        body = {"prompt": prompt, "negative_prompt": negative_prompt, "seed": int(seed),
                "steps": self.steps, "cfg_scale": self.guidance, "width": self.width,
                "height": self.height, "batch_size": 1, "n_iter": 1,
                "send_images": True, "save_images": False}
        if self.sampler:
            body["sampler_name"] = self.sampler
        if self.checkpoint:
            body["override_settings"] = {"sd_model_checkpoint": self.checkpoint}
        return body

    def generate(self, prompts: list[str], seeds: list[int], negative_prompt: str = "") -> list:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        return [self._one(p, s, negative_prompt) for p, s in zip(prompts, seeds, strict=True)]

    def _one(self, prompt: str, seed: int, negative: str):
        answer = self._request("POST", "/sdapi/v1/txt2img", self.payload(prompt, seed, negative))
        images = answer.get("images") if isinstance(answer, dict) else None
        if not images or not isinstance(images[0], str):
            raise ItemError("txt2img answer has no images")
        return decode_image(images[0])

    def _request(self, method: str, route: str, body: dict | None) -> dict | None:
        """JSON answer of one call, retrying refused connections and 5xx a few times.

        Returns None for an HTTP error on a GET (an optional endpoint); raises otherwise.
        """
        import requests

        url = self.url + route
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                reply = self.session().request(method, url, json=body, timeout=(10, self.timeout))
            except requests.ConnectionError as exc:
                if last:
                    raise FatalError(f"generate.url = {self.url}: cannot connect ({type(exc).__name__}); "
                                     + START_HINT) from None
            except requests.Timeout:
                raise ItemError(f"{route} gave no answer within {self.timeout:g} s") from None
            else:
                if reply.status_code < 500 or last:
                    return self._answer(reply, method, route)
            time.sleep(self.backoff * 2 ** attempt)
        raise AssertionError("unreachable")

    def _answer(self, reply, method: str, route: str) -> dict | None:
        if reply.status_code == 404 and route.endswith("txt2img"):
            raise FatalError(f"generate.url = {self.url}: {route} not found (HTTP 404); " + START_HINT)
        if reply.status_code >= 400:
            if method == "GET":
                return None
            excerpt = " ".join(reply.text.split())[:200]
            raise ItemError(f"{route}: HTTP {reply.status_code}: {excerpt}")
        try:
            return reply.json()
        except ValueError:
            raise ItemError(f"{route}: the answer is not JSON") from None

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def decode_image(data: str):
    """A PIL RGB image from base64 PNG/JPEG text (a `data:` prefix is allowed)."""
    from PIL import Image

    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=False)))
        image.load()
    except (ValueError, OSError) as exc:
        raise ItemError(f"txt2img returned an unreadable image ({type(exc).__name__})") from None
    return image.convert("RGB")
