"""Text-to-image through the Stable Diffusion web UI API (AUTOMATIC1111, Forge, SD.Next).

One `POST /sdapi/v1/txt2img` per (prompt, seed): the web UI can batch only one prompt with
consecutive seeds, and every image here has a seed of its own.

The model is named in the config, never taken from whatever the web UI has loaded: every
request asks for `checkpoint` (`override_settings.sd_model_checkpoint`, kept loaded
afterwards), and every answer's `info` must name that checkpoint and the requested seed, or
the item fails. The web UI silently falls back to another model when the name is unknown,
so this check is what keeps a misspelled checkpoint from filling a run with images made by
the wrong model under the right key.

Errors: a server that cannot be reached, a missing API route, a refused login or an unknown
sampler stop the run (every item would fail the same way); any other error answer fails one
item with the web UI's own message. Only 502/503/504 (a proxy or a restarting server) are
retried; a 500 (an exception in the web UI, such as running out of GPU memory) would fail
the same way again.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
from pathlib import PurePosixPath

from ..errors import ConfigError, FatalError, ItemError, public_url

START_HINT = "start the web UI with the --api flag (e.g. `./webui.sh --api`) or set generate.url"
RETRY_STATUS = {502, 503, 504}
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf")
TITLE = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]$")
HASH_ONLY = re.compile(r"^[0-9a-fA-F]{8,64}$")


class A1111Backend:
    """`checkpoint` is the web UI's checkpoint title (as /sdapi/v1/sd-models lists it, e.g.
    `sd_xl_base_1.0.safetensors [31e35c80fc]`), its file name, or its hash."""

    def __init__(self, url: str = "http://127.0.0.1:7860", *, checkpoint: str, steps: int = 30,
                 guidance: float = 5.0, width: int = 1024, height: int = 1024, sampler: str = "",
                 scheduler: str = "", refiner: str = "", refiner_switch_at: float = 0.8,
                 timeout: float = 600, retries: int = 2, backoff: float = 1.0, auth_env: str = ""):
        self.url = url.strip().rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            shown = "" if "@" in url else f" = {url!r}"     # a login in it is never shown
            raise ConfigError(f"generate.url{shown}: give an http:// or https:// address of the web UI")
        self.shown = public_url(self.url)      # for messages: no login, query or fragment
        self.checkpoint = checkpoint.strip()
        if not self.checkpoint or self.checkpoint == "tiny":
            raise ConfigError(f"generate.model = {checkpoint!r}: with generate.backend = a1111 it must "
                              "name a web UI checkpoint, e.g. 'sd_xl_base_1.0.safetensors [31e35c80fc]' "
                              "(the titles are listed at GENERATE_URL/sdapi/v1/sd-models)")
        self.steps, self.guidance = int(steps), float(guidance)
        self.width, self.height = int(width), int(height)
        self.sampler, self.scheduler, self.refiner = sampler.strip(), scheduler.strip(), refiner.strip()
        self.refiner_switch_at = float(refiner_switch_at)
        self.timeout, self.retries, self.backoff = float(timeout), max(0, int(retries)), float(backoff)
        self._auth = _login(auth_env)
        self._session = None

    def session(self):
        if self._session is None:
            import requests

            self._session = requests.Session()
            if self._auth:
                self._session.auth = self._auth
        return self._session

    def identity(self) -> dict:
        """Every setting that changes pixels, from the config alone (no request: a dry run
        and the cache keys never depend on what the web UI happens to have loaded)."""
        return {"backend": "a1111", "checkpoint": self.checkpoint, "sampler": self.sampler or "default",
                "scheduler": self.scheduler or "default", "steps": self.steps, "guidance": self.guidance,
                "width": self.width, "height": self.height, "refiner": self.refiner or None,
                "refiner_switch_at": self.refiner_switch_at if self.refiner else None}

    def payload(self, prompt: str, seed: int, negative_prompt: str) -> dict:
        body = {"prompt": prompt, "negative_prompt": negative_prompt, "seed": int(seed),
                "steps": self.steps, "cfg_scale": self.guidance, "width": self.width,
                "height": self.height, "batch_size": 1, "n_iter": 1,
                "send_images": True, "save_images": False,
                "override_settings": {"sd_model_checkpoint": self.checkpoint},
                "override_settings_restore_afterwards": False}
        if self.sampler:
            body["sampler_name"] = self.sampler
        if self.scheduler:
            body["scheduler"] = self.scheduler
        if self.refiner:
            body["refiner_checkpoint"] = self.refiner
            body["refiner_switch_at"] = self.refiner_switch_at
        return body

    def generate(self, prompts: list[str], seeds: list[int], negative_prompt: str = "") -> list:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        bad = [s for s in seeds if int(s) < 0]
        if bad:
            raise ConfigError(f"generate.seeds: seed {bad[0]} asks the web UI for a random seed; the "
                              "image could not be made again. Give seeds >= 0")
        return [self._one(p, s, negative_prompt) for p, s in zip(prompts, seeds, strict=True)]

    def _one(self, prompt: str, seed: int, negative: str):
        answer = self._request("POST", "/sdapi/v1/txt2img", self.payload(prompt, seed, negative))
        images = answer.get("images") if isinstance(answer, dict) else None
        if not images or not isinstance(images[0], str):
            raise ItemError("txt2img answer has no images")
        self.check_info(answer.get("info"), int(seed))
        return decode_image(images[0])

    def check_info(self, raw, seed: int) -> None:
        """Fail the item unless `info` says the image came from our checkpoint and seed."""
        try:
            info = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            info = None
        if not isinstance(info, dict):
            raise ItemError("txt2img answer has no readable `info`: cannot check which model and "
                            "seed made the image")
        used = " ".join(str(info.get(k) or "") for k in ("sd_model_name", "sd_model_hash")).strip()
        if not checkpoint_matches(self.checkpoint, info):
            raise ItemError(f"the web UI made the image with {used or 'an unnamed model'!r}, not with "
                            f"generate.model = {self.checkpoint!r} (a name it does not know falls back "
                            "to another model; see /sdapi/v1/sd-models)")
        seeds = info.get("all_seeds") or ([info["seed"]] if "seed" in info else [])
        if not seeds:
            raise ItemError("txt2img `info` lists no seed: cannot check the image is reproducible")
        if int(seeds[0]) != seed:
            raise ItemError(f"the web UI used seed {seeds[0]}, not the requested {seed}")

    def _request(self, method: str, route: str, body: dict | None) -> dict | None:
        """JSON answer of one call; refused connections and 502/503/504 are retried."""
        import requests

        url = self.url + route
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                reply = self.session().request(method, url, json=body, timeout=(10, self.timeout))
            except requests.ConnectionError as exc:
                if last:
                    raise FatalError(f"generate.url = {self.shown}: cannot connect ({type(exc).__name__}); "
                                     + START_HINT) from None
            except requests.Timeout:
                raise ItemError(f"{route} gave no answer within generate.timeout = {self.timeout:g} s"
                                ) from None
            else:
                if reply.status_code not in RETRY_STATUS or last:
                    return self._answer(reply, route)
            time.sleep(self.backoff * 2 ** attempt)
        raise AssertionError("unreachable")

    def _answer(self, reply, route: str) -> dict | None:
        status, text = reply.status_code, " ".join(reply.text.split())
        if status == 404 and _detail(reply) == "Not Found":
            raise FatalError(f"generate.url = {self.shown}: {route} not found (HTTP 404); " + START_HINT)
        if status == 404:
            raise FatalError(f"generate.url = {self.shown}: {route}: HTTP 404: {text[:500]} (check "
                             "generate.sampler, generate.scheduler and generate.refiner)")
        if status == 401:
            raise FatalError(f"generate.url = {self.shown}: the web UI asks for a login (--api-auth); put "
                             "USER:PASSWORD in an environment variable and name it in generate.api_auth_env")
        if status >= 400:
            raise ItemError(f"{route}: HTTP {status}: {text[:500]}")
        try:
            return reply.json()
        except ValueError:
            raise ItemError(f"{route}: the answer is not JSON") from None

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def _detail(reply) -> str:
    try:
        data = reply.json()
    except ValueError:
        return ""
    return str(data.get("detail", "")) if isinstance(data, dict) else ""


def _login(env: str) -> tuple[str, str] | None:
    """(user, password) from the environment variable named `env` ("" = no login)."""
    if not env:
        return None
    value = os.environ.get(env, "")
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise ConfigError(f"generate.api_auth_env = {env}: the variable is "
                          f"{'not set' if not value else 'not USER:PASSWORD'}; put the web UI's "
                          "--api-auth login in it")
    return user, password


def _strip_extension(name: str) -> str:
    for ext in MODEL_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[:-len(ext)]
    return name


def checkpoint_matches(requested: str, info: dict) -> bool:
    """Whether `info` (sd_model_name, sd_model_hash) names the requested checkpoint. The
    request may be a title `path/name.safetensors [hash]`, a file name or path, or a hash;
    the web UI reports the file name without folder and extension, and a short hash."""
    name = str(info.get("sd_model_name") or "")
    short = str(info.get("sd_model_hash") or "").lower()
    if not name and not short:
        return False
    requested = requested.strip()
    match = TITLE.match(requested)
    path, wanted_hash = (match["name"], match["hash"].lower()) if match else (requested, "")
    if HASH_ONLY.match(requested) and not match:
        path, wanted_hash = "", requested.lower()
    if wanted_hash and short and not (short.startswith(wanted_hash) or wanted_hash.startswith(short)):
        return False
    if wanted_hash and not short and not path:
        return False
    if path:
        stem = _strip_extension(path.replace("\\", "/"))
        names = {stem, PurePosixPath(stem).name, stem.replace("/", "_")}
        if name not in names:
            return False
    return True


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
