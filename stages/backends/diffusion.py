"""Text-to-image with diffusers: SDXL by default, any pipeline folder or hub id, or `tiny`.

The pipeline loads on the first `generate`, so building a backend (for `--dry-run` or for
cache keys) costs nothing. Every image gets its own seeded generator: an image depends on
its prompt and seed only, not on what else shares its batch. A model that cannot be loaded
fails in seconds with one line saying what to do; a hub id is looked up in the local
Hugging Face cache first and the hub is asked only when it answers a short probe.
"""

from __future__ import annotations

import gc
import logging
import re
from pathlib import Path

from ..errors import ConfigError, FatalError
from .hub import first_line, load_pretrained, quiet_loading
from .tiny_sdxl import TINY_VERSION, tiny_sdxl_folder

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DTYPES = ("auto", "float16", "bfloat16", "float32")
DEVICES = ("auto", "cpu", "cuda", "mps")
log = logging.getLogger(__name__)


class DiffusersBackend:
    """A diffusers text-to-image pipeline, optionally followed by an SDXL refiner.

    `steps`, `width`, `height` default to 4 and 64x64 for `tiny`, 30 and 1024x1024 otherwise.
    `refiner_split` is the fraction of the denoising done by the base model when a refiner
    is set (the rest is done by the refiner on the base model's latents).
    """

    def __init__(self, model: str = SDXL_BASE, *, cache_dir: Path, device: str = "auto",
                 dtype: str = "auto", steps: int | None = None, guidance: float = 5.0,
                 width: int | None = None, height: int | None = None, scheduler: str = "",
                 refiner: str = "", refiner_split: float = 0.8, batch_size: int = 4,
                 digests: Path | None = None):
        self.model, self.refiner = model.strip(), refiner.strip()
        self.tiny = self.model == "tiny"
        self.cache_dir = Path(cache_dir)
        self.digests = digests            # memo of model-file hashes (None: hash, keep nothing)
        self.device_name, self.dtype_name = device.strip().lower(), dtype.strip().lower()
        size = 64 if self.tiny else 1024
        self.steps = int(steps) if steps is not None else (4 if self.tiny else 30)
        self.guidance, self.scheduler = float(guidance), scheduler.strip()
        self.width = int(width) if width is not None else size
        self.height = int(height) if height is not None else size
        self.refiner_split, self.batch_size = float(refiner_split), max(1, int(batch_size))
        self._check()
        self._pipe = None
        self._refiner = None
        self._fingerprints: dict[str, str] = {}

    def _check(self) -> None:
        if not self.model:
            raise ConfigError("generate.model is empty; give tiny, a hub id or a folder")
        if self.device_name not in DEVICES:
            raise ConfigError(f"generate.device = {self.device_name!r}; accepted: {', '.join(DEVICES)}")
        if self.dtype_name not in DTYPES:
            raise ConfigError(f"generate.dtype = {self.dtype_name!r}; accepted: {', '.join(DTYPES)}")
        if self.steps < 1:
            raise ConfigError(f"generate.steps = {self.steps}: must be at least 1")
        for key, value in (("width", self.width), ("height", self.height)):
            if value < 8 or value % 8:
                raise ConfigError(f"generate.{key} = {value}: must be a positive multiple of 8")
        if not 0.0 < self.refiner_split < 1.0:
            raise ConfigError(f"generate.refiner_split = {self.refiner_split}: must be between 0 and 1")

    # -- what decides the pixels ------------------------------------------------------------

    def device(self) -> str:
        import torch

        mps = getattr(torch.backends, "mps", None)
        available = {"cpu": True, "cuda": torch.cuda.is_available(),
                     "mps": mps is not None and mps.is_available()}
        if self.device_name == "auto":
            return "cuda" if available["cuda"] else "mps" if available["mps"] else "cpu"
        if not available[self.device_name]:
            raise ConfigError(f"generate.device = {self.device_name}, but this machine has no "
                              f"{self.device_name.upper()} device that torch can use; use auto or cpu")
        return self.device_name

    def dtype(self):
        import torch

        if self.dtype_name == "auto":
            use_half = self.device() == "cuda" and not self.tiny
            return torch.float16 if use_half else torch.float32
        return getattr(torch, self.dtype_name)

    def identity(self) -> dict:
        """The model and every setting that changes pixels (device and dtype included)."""
        return {"backend": "diffusers", "model": TINY_VERSION if self.tiny else self.model,
                "refiner": self.refiner, "refiner_split": self.refiner_split if self.refiner else None,
                "scheduler": self.scheduler or "default", "steps": self.steps, "guidance": self.guidance,
                "width": self.width, "height": self.height, "device": self.device(),
                "dtype": str(self.dtype()).replace("torch.", ""),
                "weights": {name: self._fingerprint(name) for name in (self.model, self.refiner)
                            if name and name != "tiny"}}

    def _fingerprint(self, name: str) -> str:
        """A local pipeline folder by its content (fine-tuned in place = another model); a hub
        id or single file by name. Memoised, so the folder is hashed once per change."""
        from .hub import folder_fingerprint

        folder = Path(name).expanduser()
        if not self._fingerprints.get(name):
            self._fingerprints[name] = (folder_fingerprint(folder, self.digests)
                                        if folder.is_dir() else name)
        return self._fingerprints[name]

    async def start(self) -> None:
        """Check, without loading, that the pipelines can be loaded where the run will load
        them (a folder, the local Hugging Face cache, or a reachable hub): a dry run fails
        here exactly as the run would (it passed, then the run exited 2)."""
        import asyncio

        from .hub import check_obtainable

        for name, key in ((self.model, "generate.model"), (self.refiner, "generate.refiner")):
            if name and name != "tiny":
                source = self._source(name, key)
                await asyncio.to_thread(check_obtainable, source, key=key, what="diffusers pipeline",
                                        marker="model_index.json", alternative=", or use tiny")

    # -- loading ------------------------------------------------------------------------------

    def pipeline(self):
        """The loaded text-to-image pipeline (loads it on first use)."""
        if self._pipe is None:
            from diffusers import AutoPipelineForText2Image

            pipe = self._load(AutoPipelineForText2Image, self.model, "generate.model")
            if self.scheduler:
                pipe.scheduler = make_scheduler(self.scheduler, pipe.scheduler)
            if self.refiner:
                from diffusers import StableDiffusionXLImg2ImgPipeline

                self._refiner = self._load(StableDiffusionXLImg2ImgPipeline, self.refiner, "generate.refiner",
                                           text_encoder_2=pipe.text_encoder_2, vae=pipe.vae)
                if self.scheduler:
                    self._refiner.scheduler = make_scheduler(self.scheduler, self._refiner.scheduler)
            self._pipe = pipe
        return self._pipe

    def _load(self, cls, name: str, key: str, **shared):
        source = self._source(name, key)
        with quiet_loading():
            pipe = load_pretrained(lambda src, **kw: self._from_pretrained(cls, src, **kw, **shared),
                                   source, key=key, what="diffusers pipeline", setting=name,
                                   alternative=", or use tiny")
        pipe = pipe.to(self.device())
        if self.device() == "cpu":
            own_memory(pipe)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _from_pretrained(self, cls, source: str, **kwargs):
        """Half precision loads the fp16 weight files when the model has them; without them the
        full-precision files are loaded and cast (said in the log). Any other failure is raised."""
        dtype = self.dtype()
        if str(dtype) == "torch.float16":
            try:
                return cls.from_pretrained(source, dtype=dtype, variant="fp16", **kwargs)
            except (OSError, ValueError) as exc:
                if "variant" not in str(exc).lower():
                    raise
                log.warning("%s has no fp16 weight files (%s); loading the full-precision files "
                            "and casting them to float16", source, first_line(exc, 120))
        return cls.from_pretrained(source, dtype=dtype, **kwargs)

    def _source(self, name: str, key: str) -> str:
        """What to pass to from_pretrained: a pipeline folder or a hub id."""
        if name == "tiny":
            return str(tiny_sdxl_folder(self.cache_dir))
        path = Path(name).expanduser()
        if path.is_file():
            raise FatalError(f"{key} = {name!r} is a single file; give a diffusers folder (with "
                             "model_index.json) or a hub id, or use backend = a1111 for checkpoint files")
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise FatalError(f"{key} = {name!r} is not a diffusers pipeline folder (no model_index.json)")
            return str(path)
        if not HUB_ID.match(name):
            raise FatalError(f"{key} = {name!r}: folder not found (and it is not a hub id like "
                             f"{SDXL_BASE}); fix the path or use tiny")
        return name

    # -- generating ----------------------------------------------------------------------------

    def generate(self, prompts: list[str], seeds: list[int], negative_prompt: str = "") -> list:
        """One PIL image per (prompt, seed) pair, in order; batched by `batch_size`."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        images = []
        for start in range(0, len(prompts), self.batch_size):
            end = start + self.batch_size
            images += self._batch(prompts[start:end], seeds[start:end], negative_prompt)
        return images

    def _batch(self, prompts: list[str], seeds: list[int], negative: str) -> list:
        import torch

        pipe = self.pipeline()
        device = self.device()
        where = "cuda" if device == "cuda" else "cpu"     # mps: CPU generators reproduce across runs
        generators = [torch.Generator(where).manual_seed(int(s)) for s in seeds]
        common = {"prompt": list(prompts), "negative_prompt": [negative] * len(prompts) if negative else None,
                  "num_inference_steps": self.steps, "guidance_scale": self.guidance, "generator": generators}
        try:
            if self._refiner is None:
                return list(pipe(width=self.width, height=self.height, **common).images)
            latents = pipe(width=self.width, height=self.height, denoising_end=self.refiner_split,
                           output_type="latent", **common).images
            return list(self._refiner(image=latents, denoising_start=self.refiner_split, **common).images)
        except torch.OutOfMemoryError:
            raise FatalError(f"out of {device} memory generating {len(prompts)} images of "
                             f"{self.width}x{self.height}; lower generate.batch_size or the size") from None

    def close(self) -> None:
        if self._pipe is None and self._refiner is None:
            return                                  # nothing loaded, nothing to free
        self._pipe = self._refiner = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def make_scheduler(name: str, current):
    """A diffusers scheduler by class name, configured like the pipeline's own `current` one."""
    compatible = {cls.__name__: cls for cls in [type(current), *current.compatibles]}
    if name not in compatible:
        raise ConfigError(f"generate.scheduler = {name!r} does not fit this pipeline; accepted: "
                          f"{', '.join(sorted(compatible))}")
    return compatible[name].from_config(current.config)


def own_memory(pipe) -> None:
    """Copy every weight into freshly allocated memory.

    Weights loaded from safetensors sit at unaligned addresses inside the mapped file, where
    CPU matrix kernels can take another path and differ in the last bit from a model built
    in memory; copies are aligned, which makes outputs reproducible bit for bit.
    """
    import torch

    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for param in component.parameters():
            param.data = param.data.clone()
        for module in component.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = buffer.clone()
