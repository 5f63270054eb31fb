"""`generate.model = tiny`: a small SDXL with random weights, for tests and the offline demo.

It has SDXL's real architecture (two CLIP text encoders with the real CLIP tokenizer, a
UNet with text-time conditioning, a KL autoencoder, an Euler scheduler) at a size that
renders 64x64 in a second on a CPU. Its images are noise, but every code path that a real
SDXL takes runs: saving, `from_pretrained`, batching, seeds, schedulers, a refiner. The
weights come from a fixed seed, so every machine builds the same model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .clip_tokens import load_clip_tokenizer
from .hub import quiet_loading

TINY_VERSION = "tiny-sdxl-1"
FOLDER = "tiny-sdxl"
MARKER = "tagcap_tiny.json"
SEED = 20240607


def tiny_sdxl_folder(cache_dir: Path) -> Path:
    """The saved tiny pipeline under `cache_dir`, built on first use (safe against races)."""
    folder = Path(cache_dir) / FOLDER
    if _is_current(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.", dir=folder.parent))
    try:
        with quiet_loading():
            build_tiny_sdxl(cache_dir).save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"version": TINY_VERSION, "seed": SEED}) + "\n")
        if folder.exists() and not _is_current(folder):
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not _is_current(folder):     # someone else finished first: theirs is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _is_current(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("version") == TINY_VERSION
    except (OSError, ValueError):
        return False


def build_tiny_sdxl(cache_dir: Path):
    """A `StableDiffusionXLPipeline` with small random components (about 5 M parameters)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = load_clip_tokenizer(cache_dir)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32, hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=6 * 8 + 32,
            cross_attention_dim=64, norm_num_groups=8)
        vae = AutoencoderKL(
            block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=8, sample_size=64)
        text_encoder = CLIPTextModel(text_config)
        text_encoder_2 = CLIPTextModelWithProjection(text_config)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    for module in (unet, vae, text_encoder, text_encoder_2):
        module.eval()                   # as from_pretrained leaves them
    return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
                                     scheduler=scheduler)
