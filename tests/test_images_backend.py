"""Image backends: the tiny SDXL through the real from_pretrained path, seeds and batching,
PNG metadata, and the web UI backend against a local fake of its API."""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fake_a1111 import CHECKPOINT, CHECKPOINTS, FakeA1111, photo_png

from stages.backends.images import A1111Backend, DiffusersBackend, read_png_metadata, save_png
from stages.errors import ConfigError, FatalError, ItemError

PROMPTS = ["a red car on the left of a blue bus", "Café crème, 東京", "a cat"]
FAST = {"width": 32, "height": 32, "steps": 2}     # the tiny model's smallest useful work
HANG_GUARD_S = 60                                  # hang guard, not a performance bound


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def same_up_to_rounding(a, b) -> bool:
    """A batch changes the shapes of the matrix products, so float sums round differently:
    at most one intensity level on a few values, never a different picture."""
    diff = np.abs(pixels(a) - pixels(b))
    return int(diff.max()) <= 1 and np.count_nonzero(diff) <= diff.size // 1000


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tiny(cache):
    backend = DiffusersBackend("tiny", cache_dir=cache, batch_size=4, **FAST)
    backend.pipeline()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def singles(tiny):
    """Each PROMPTS[i] with seed 10 + i, generated one call at a time."""
    return [tiny.generate([p], [10 + i])[0] for i, p in enumerate(PROMPTS)]


# -- tiny SDXL --------------------------------------------------------------------------------------

def test_tiny_is_saved_once_and_loaded_through_from_pretrained(tiny, cache):
    from diffusers import StableDiffusionXLPipeline

    from stages.backends.tiny_sdxl import build_tiny_sdxl, tiny_sdxl_folder

    folder = cache / "tiny-sdxl"
    for part in ("model_index.json", "unet", "vae", "text_encoder", "text_encoder_2", "tokenizer_2"):
        assert (folder / part).exists(), part
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert tiny_sdxl_folder(cache) == folder and (folder / "model_index.json").stat().st_mtime_ns == stamp
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == [], "no temp folders left"
    pipe = tiny.pipeline()
    assert isinstance(pipe, StableDiffusionXLPipeline)
    assert len(pipe.tokenizer) == len(pipe.tokenizer_2) == 49408
    fresh = build_tiny_sdxl(cache)      # same seed: the same weights as the saved copy
    for name in ("unet", "vae", "text_encoder_2"):
        saved, rebuilt = getattr(pipe, name).state_dict(), getattr(fresh, name).state_dict()
        assert saved.keys() == rebuilt.keys()
        assert all(bool((saved[k] == rebuilt[k]).all()) for k in saved), name


def test_images_have_the_configured_size(singles):
    assert all(image.size == (32, 32) and image.mode == "RGB" for image in singles)


def test_same_prompt_and_seed_give_identical_pixels(tiny, singles):
    again = tiny.generate([PROMPTS[0]], [10])[0]
    assert np.array_equal(pixels(again), pixels(singles[0]))


def test_different_seeds_or_prompts_give_different_images(tiny, singles):
    other_seed = tiny.generate([PROMPTS[0]], [99])[0]
    assert np.abs(pixels(other_seed) - pixels(singles[0])).mean() > 5
    other_prompt = tiny.generate([PROMPTS[1]], [10])[0]
    assert not np.array_equal(pixels(other_prompt), pixels(singles[0]))


def test_batches_give_the_same_images_as_single_calls(tiny, singles, cache):
    batched = tiny.generate(PROMPTS, [10, 11, 12])
    assert len(batched) == 3
    assert all(same_up_to_rounding(a, b) for a, b in zip(singles, batched, strict=True))
    tiny.batch_size = 2       # 3 items: a batch of 2, then one alone
    try:
        pairs = tiny.generate(PROMPTS, [10, 11, 12])
    finally:
        tiny.batch_size = 4
    assert all(same_up_to_rounding(a, b) for a, b in zip(singles, pairs, strict=True))
    assert np.array_equal(pixels(pairs[2]), pixels(singles[2])), "a batch of one is a single call"


def test_loaded_tiny_matches_the_pipeline_built_in_memory(tiny, cache):
    import torch

    from stages.backends.tiny_sdxl import build_tiny_sdxl

    def floats(pipe):       # before rounding to 8 bits, where differences of 1e-7 show
        return pipe(prompt=[PROMPTS[0]], generator=[torch.Generator("cpu").manual_seed(10)],
                    num_inference_steps=4, guidance_scale=5.0, width=64, height=64, output_type="np").images

    built = build_tiny_sdxl(cache)
    built.set_progress_bar_config(disable=True)
    assert np.array_equal(floats(tiny.pipeline()), floats(built)), "weights copied to aligned memory"


def test_negative_prompt_changes_the_image(tiny, singles):
    negative = tiny.generate([PROMPTS[0]], [10], negative_prompt="blurry")[0]
    assert not np.array_equal(pixels(negative), pixels(singles[0]))


def test_generate_checks_its_arguments(tiny):
    assert tiny.generate([], []) == []
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        tiny.generate(["a", "b"], [1])


def test_identity_names_the_model_and_the_settings_that_change_pixels(cache):
    base = DiffusersBackend("tiny", cache_dir=cache).identity()
    assert base["model"].startswith("tiny-sdxl")
    assert (base["width"], base["height"], base["steps"]) == (64, 64, 4)
    assert base["device"] == "cpu" and base["dtype"] == "float32"
    for change in ({"steps": 3}, {"guidance": 7.0}, {"scheduler": "DDIMScheduler"}, {"width": 128}):
        assert DiffusersBackend("tiny", cache_dir=cache, **change).identity() != base, change
    assert DiffusersBackend("tiny", cache_dir=cache, batch_size=1).identity() == base, "batching keeps pixels"
    sdxl = DiffusersBackend(cache_dir=cache, device="cpu").identity()
    assert sdxl["model"] == "stabilityai/stable-diffusion-xl-base-1.0" and sdxl["width"] == 1024


def test_scheduler_by_class_name(cache, singles):
    ancestral = DiffusersBackend("tiny", cache_dir=cache, scheduler="EulerAncestralDiscreteScheduler", **FAST)
    image = ancestral.generate([PROMPTS[0]], [10])[0]
    assert type(ancestral.pipeline().scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert not np.array_equal(pixels(image), pixels(singles[0]))
    assert same_up_to_rounding(image, ancestral.generate([PROMPTS[0], "x"], [10, 1])[0])
    wrong = DiffusersBackend("tiny", cache_dir=cache, scheduler="FlowMatchEulerDiscreteScheduler")
    with pytest.raises(ConfigError, match="generate.scheduler .* accepted: .*DPMSolverMultistepScheduler"):
        wrong.generate(["a"], [1])


def test_refiner_continues_exactly_where_the_base_model_stops(cache, singles):
    refined = DiffusersBackend("tiny", cache_dir=cache, refiner="tiny", refiner_split=0.5, **FAST)
    base, refiner = refined.pipeline(), refined._refiner
    assert refiner.text_encoder_2 is base.text_encoder_2 and refiner.vae is base.vae
    calls = {"base": 0, "refiner": 0}
    base.unet.register_forward_hook(lambda *_: calls.__setitem__("base", calls["base"] + 1))
    refiner.unet.register_forward_hook(lambda *_: calls.__setitem__("refiner", calls["refiner"] + 1))
    image = refined.generate([PROMPTS[0]], [10])[0]
    assert calls == {"base": 1, "refiner": 1}, "2 steps split in half"
    # the refiner here is the base model itself and Euler adds no noise: handing the latents
    # over half way must give the picture that the base model alone gives
    assert np.array_equal(pixels(image), pixels(singles[0]))
    assert same_up_to_rounding(refined.generate(PROMPTS[:2], [10, 11])[1], singles[1])
    assert refined.identity()["refiner_split"] == 0.5 and refined.identity()["refiner"] == "tiny"


# -- models that cannot be loaded ---------------------------------------------------------------

@pytest.mark.parametrize("make, expected", [
    (lambda tmp: str(tmp / "no" / "such" / "folder"), "folder not found"),
    (lambda tmp: str(tmp), "no model_index.json"),
    (lambda tmp: str(tmp / "model.safetensors"), "single file"),
])
def test_bad_local_models_fail_with_one_line(tmp_path, make, expected):
    (tmp_path / "model.safetensors").write_bytes(b"not really")
    backend = DiffusersBackend(make(tmp_path), cache_dir=tmp_path)
    with pytest.raises(FatalError) as info:
        backend.generate(["a"], [1])
    assert "generate.model" in str(info.value) and expected in str(info.value) and "\n" not in str(info.value)


def test_uncached_hub_model_fails_fast_when_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(FatalError) as info:
        DiffusersBackend("nobody-here/no-such-model", cache_dir=tmp_path).generate(["a"], [1])
    message = str(info.value)
    assert "offline" in message and "hf download nobody-here/no-such-model" in message and "tiny" in message
    assert time.monotonic() - started < HANG_GUARD_S


def test_uncached_hub_model_fails_fast_when_the_hub_is_unreachable(tmp_path, monkeypatch, refused_port):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{refused_port}")
    started = time.monotonic()
    with pytest.raises(FatalError, match="cannot be reached"):
        DiffusersBackend("nobody-here/no-such-model", cache_dir=tmp_path).generate(["a"], [1])
    assert time.monotonic() - started < HANG_GUARD_S


@pytest.mark.parametrize("kwargs, key", [({"width": 60}, "generate.width"),
                                         ({"height": 0}, "generate.height"), ({"steps": 0}, "generate.steps"),
                                         ({"device": "tpu"}, "generate.device"),
                                         ({"dtype": "int8"}, "generate.dtype")])
def test_bad_settings_are_config_errors(tmp_path, kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        DiffusersBackend("tiny", cache_dir=tmp_path, **kwargs)


def test_a_missing_accelerator_is_a_config_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="generate.device = cuda"):
        DiffusersBackend("tiny", cache_dir=tmp_path, device="cuda").identity()


# -- PNG metadata ----------------------------------------------------------------------------------

def chunk_types(path: Path) -> dict[str, str]:
    """Text chunk keyword -> chunk type, read from the raw PNG bytes."""
    data, found, at = path.read_bytes(), {}, 8
    while at < len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        kind, body = data[at + 4:at + 8].decode(), data[at + 8:at + 8 + length]
        crc = int.from_bytes(data[at + 8 + length:at + 12 + length], "big")
        assert zlib.crc32(data[at + 4:at + 8 + length]) == crc
        if kind in ("tEXt", "iTXt"):
            found[body.split(b"\0", 1)[0].decode("latin-1")] = kind
        at += 12 + length
    return found


def test_png_metadata_round_trip_with_a1111_parameters(tmp_path, singles):
    path = tmp_path / "images" / "00001-abcd" / "original-s10.png"
    meta = {"prompt": PROMPTS[1], "seed": 10, "guidance": 5.5, "negative_prompt": "blurry, dark",
            "backend": '{"model": "tiny-sdxl-1", "steps": 4, "scheduler": "default"}', "variant": "original"}
    save_png(path, singles[1], meta)
    read = read_png_metadata(path)
    assert {k: read[k] for k in meta} == {k: str(v) for k, v in meta.items()}
    assert read["parameters"] == (f"{PROMPTS[1]}\nNegative prompt: blurry, dark\n"
                                  "Steps: 4, CFG scale: 5.5, Seed: 10, Size: 32x32, Model: tiny-sdxl-1")
    types = chunk_types(path)
    assert types["seed"] == "tEXt" and types["prompt"] == "iTXt", "non-Latin-1 text goes to iTXt"
    from PIL import Image

    with Image.open(path) as image:
        assert np.array_equal(pixels(image), pixels(singles[1]))
    assert [p.name for p in path.parent.iterdir()] == ["original-s10.png"]


def test_png_keeps_a_given_parameters_chunk_and_rejects_bad_keys(tmp_path, singles):
    save_png(tmp_path / "a.png", singles[0], {"parameters": "custom", "prompt": "x"})
    assert read_png_metadata(tmp_path / "a.png")["parameters"] == "custom"
    with pytest.raises(ValueError, match="1-79 ASCII"):
        save_png(tmp_path / "b.png", singles[0], {"k" * 80: 1})


# -- the web UI API --------------------------------------------------------------------------------

def web_ui(server, **kw) -> A1111Backend:
    return A1111Backend(server.url, **{"checkpoint": CHECKPOINT, "width": 64, "height": 64, "backoff": 0.01,
                                       **kw})


def test_a1111_sends_one_request_per_image_and_decodes_pngs():
    with FakeA1111() as server:
        backend = A1111Backend(server.url + "/", checkpoint=CHECKPOINT, steps=20, guidance=6.5, width=96,
                               height=64, sampler="DPM++ 2M", scheduler="Karras", backoff=0.01)
        images = backend.generate(["a cat", "a dog"], [3, 4], negative_prompt="text")
        assert [image.size for image in images] == [(96, 64), (96, 64)]
        from PIL import Image

        expected = Image.open(__import__("io").BytesIO(photo_png(96, 64, 4))).convert("RGB")
        assert np.array_equal(pixels(images[1]), pixels(expected))
        assert [r["prompt"] for r in server.requests] == ["a cat", "a dog"]
        first = server.requests[0]
        assert {k: first[k] for k in ("negative_prompt", "seed", "steps", "cfg_scale", "width", "height",
                                      "sampler_name", "scheduler", "batch_size")} == {
            "negative_prompt": "text", "seed": 3, "steps": 20, "cfg_scale": 6.5, "width": 96,
            "height": 64, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "batch_size": 1}
        assert first["override_settings"] == {"sd_model_checkpoint": CHECKPOINT}
        assert first["override_settings_restore_afterwards"] is False
        assert "refiner_checkpoint" not in first
        backend.close()


def test_a1111_identity_names_the_configured_model_without_asking_the_web_ui():
    with FakeA1111() as server:
        backend = web_ui(server, sampler="Euler a")
        identity = backend.identity()
        assert identity["checkpoint"] == CHECKPOINT and identity["sampler"] == "Euler a"
        assert web_ui(server, checkpoint=CHECKPOINTS[1][0]).identity() != identity
        assert web_ui(server, scheduler="Karras").identity() != web_ui(server).identity()
        assert web_ui(server, refiner="refiner.safetensors").identity() != web_ui(server).identity()
        assert server.requests == [] and server.auth_headers == []


@pytest.mark.parametrize("model", ["tiny", "", "  "])
def test_a1111_needs_a_checkpoint_name(model):
    with pytest.raises(ConfigError, match="generate.model .* must name a web UI checkpoint"):
        A1111Backend("http://127.0.0.1:7860", checkpoint=model)


@pytest.mark.parametrize("name", [CHECKPOINTS[1][0], "SDXL/juggernaut_v9.safetensors", "juggernaut_v9",
                                  "c9e3e68f89"])
def test_a1111_switches_the_checkpoint_and_checks_info(name):
    with FakeA1111() as server:
        image = web_ui(server, checkpoint=name).generate(["a cat"], [5])[0]
        assert server.loaded == 1
        from PIL import Image

        expected = Image.open(__import__("io").BytesIO(photo_png(64, 64, 5, model=1))).convert("RGB")
        assert np.array_equal(pixels(image), pixels(expected))


def test_a1111_fails_the_item_when_the_web_ui_used_another_model():
    """A misspelled checkpoint: the web UI keeps its loaded model and says so in `info`."""
    with FakeA1111() as server:
        with pytest.raises(ItemError, match="made the image with 'sd_xl_base_1.0 31e35c80fc'.*juggernaut_v8"):
            web_ui(server, checkpoint="juggernaut_v8.safetensors").generate(["a cat"], [5])
        with pytest.raises(ItemError, match="not with generate.model"):
            web_ui(server, checkpoint="sd_xl_base_1.0.safetensors [0000000000]").generate(["a"], [5])


def test_a1111_checks_the_seed_and_refuses_a_random_one():
    with FakeA1111() as server:
        server.ignore_seed = True
        with pytest.raises(ItemError, match="used seed 6, not the requested 5"):
            web_ui(server).generate(["a"], [5])
        server.ignore_seed, server.drop_info = False, True
        with pytest.raises(ItemError, match="no readable `info`"):
            web_ui(server).generate(["a"], [5])
        sent = len(server.requests)
        with pytest.raises(ConfigError, match="seed -1 asks the web UI for a random seed"):
            web_ui(server).generate(["a", "b"], [1, -1])
        assert len(server.requests) == sent


def test_a1111_retries_a_gateway_error_then_succeeds():
    with FakeA1111() as server:
        server.fail(503, times=2)
        assert len(web_ui(server, retries=2).generate(["a"], [1])) == 1
        assert len(server.requests) == 3


def test_a1111_does_not_retry_an_error_that_would_repeat():
    with FakeA1111() as server:
        server.fail(500, '{"error": "OutOfMemoryError", "errors": "CUDA out of memory. Tried to '
                         'allocate 20.00 MiB"}' + "x" * 900, times=3)
        with pytest.raises(ItemError) as info:
            web_ui(server, retries=2).generate(["a"], [1])
        message = str(info.value)
        assert "HTTP 500" in message and "CUDA out of memory" in message and len(message) < 600
        assert len(server.requests) == 1


def test_a1111_reports_404_and_422_bodies_as_they_are():
    with FakeA1111() as server:
        with pytest.raises(FatalError) as info:
            web_ui(server, sampler="DPM++ 9M").generate(["a"], [1])
        assert "HTTP 404" in str(info.value) and "Sampler not found" in str(info.value)
        assert "--api" not in str(info.value)
        detail = ('{"detail": [{"loc": ["body", "scheduler"], "msg": "value is not a valid enumeration",'
                  ' "type": "type_error.enum"}]}')
        server.fail(422, detail)
        with pytest.raises(ItemError) as info:
            web_ui(server).generate(["a"], [1])
        assert str(info.value) == "/sdapi/v1/txt2img: HTTP 422: " + detail
        assert len(server.requests) == 2, "4xx is not retried"


def test_a1111_without_api_flag_or_unreachable_is_fatal(refused_port):
    with FakeA1111() as server:
        server.fail(404, '{"detail": "Not Found"}')
        with pytest.raises(FatalError, match="--api"):
            web_ui(server).generate(["a"], [1])
    url = f"http://127.0.0.1:{refused_port}"
    started = time.monotonic()
    with pytest.raises(FatalError) as info:
        A1111Backend(url, checkpoint=CHECKPOINT, retries=1, backoff=0.01).generate(["a"], [1])
    assert url in str(info.value) and "--api" in str(info.value)
    assert time.monotonic() - started < HANG_GUARD_S


def test_a1111_basic_auth_from_the_environment(monkeypatch):
    with FakeA1111(auth="me:s3cret-pw") as server:
        with pytest.raises(FatalError, match="generate.api_auth_env"):
            web_ui(server).generate(["a"], [1])
        monkeypatch.setenv("WEBUI_LOGIN", "me:s3cret-pw")
        backend = web_ui(server, auth_env="WEBUI_LOGIN")
        assert len(backend.generate(["a"], [1])) == 1
        assert "s3cret" not in json.dumps(backend.identity())
    monkeypatch.setenv("WEBUI_LOGIN", "no-colon")
    with pytest.raises(ConfigError, match="not USER:PASSWORD"):
        A1111Backend("http://127.0.0.1:7860", checkpoint=CHECKPOINT, auth_env="WEBUI_LOGIN")
    with pytest.raises(ConfigError, match="not set"):
        A1111Backend("http://127.0.0.1:7860", checkpoint=CHECKPOINT, auth_env="NO_SUCH_VARIABLE_HERE")


def test_a1111_timeout_is_the_configured_one():
    import socket as sock

    with sock.socket() as listener:        # accepts the connection, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ItemError, match="within generate.timeout = 0.3 s"):
            A1111Backend(url, checkpoint=CHECKPOINT, timeout=0.3, retries=0).generate(["a"], [1])


def test_a1111_url_must_be_http():
    with pytest.raises(ConfigError, match="generate.url"):
        A1111Backend("127.0.0.1:7860", checkpoint=CHECKPOINT)


def test_half_precision_without_fp16_files_says_it_casts(tiny, cache, caplog):
    """The tiny model has no fp16 weight files: float16 loads the full-precision files, casts
    them, and says so in the log (it once fell back silently on any error)."""
    import torch

    half = DiffusersBackend("tiny", cache_dir=cache, dtype="float16", **FAST)
    try:
        with caplog.at_level("WARNING", logger="stages"):
            pipe = half.pipeline()
        assert pipe.unet.dtype == torch.float16
        assert "no fp16 weight files" in caplog.text and "casting them to float16" in caplog.text
    finally:
        half.close()


def test_a_broken_fp16_file_is_an_error_not_a_silent_fp32_load(tiny, cache, tmp_path):
    """Only a missing fp16 variant falls back: a corrupt fp16 weight file fails the load with
    its own error (it once fell back to the full-precision files without a word)."""
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(cache / "tiny-sdxl", copy)
    (copy / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"\x00" * 64)
    broken = DiffusersBackend(str(copy), cache_dir=cache, dtype="float16", device="cpu", **FAST)
    with pytest.raises(Exception) as info:
        broken.pipeline()
    assert "variant" not in str(info.value).lower()


def test_a1111_messages_never_show_credentials_in_the_url(refused_port):
    """A login put in generate.url (user:password@host) reaches no error message: missing
    route, unknown sampler, refused login, unreachable, and a URL without a scheme."""
    secret = "s3cret-pw"

    def fatal(url: str, **kw) -> str:
        with pytest.raises(FatalError) as info:
            A1111Backend(url, checkpoint=CHECKPOINT, width=64, height=64, retries=0, **kw
                         ).generate(["a"], [1])
        return str(info.value)

    messages = []
    with FakeA1111() as server:
        url = server.url.replace("http://", f"http://me:{secret}@")
        server.fail(404, '{"detail": "Not Found"}')
        messages.append(fatal(url))
        messages.append(fatal(url, sampler="DPM++ 9M"))
    with FakeA1111(auth="me:another-password") as server:
        messages.append(fatal(server.url.replace("http://", f"http://me:{secret}@")))
    messages.append(fatal(f"http://me:{secret}@127.0.0.1:{refused_port}"))
    with pytest.raises(ConfigError) as info:
        A1111Backend(f"me:{secret}@127.0.0.1:7860", checkpoint=CHECKPOINT)
    messages.append(str(info.value))
    assert "not found" in messages[0] and "Sampler not found" in messages[1]
    assert "login" in messages[2] and "cannot connect" in messages[3]
    for message in messages:
        assert secret not in message and "me:" not in message, message
    assert "http://127.0.0.1:" in messages[3]
