#!/usr/bin/env python3
"""Throughput of the tiny SDXL through `DiffusersBackend`: images/s at batch 1 and batch 4.

    python benchmarks/bench_images.py [--prompts 16] [--cache DIR]

Both batch sizes are measured in one run, on the same loaded pipeline, after one warm-up
call per batch shape (the first call of a shape pays for kernel selection). Prints
`name: value` lines; the ratio is the point, absolute numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def bench_tiny_images(cache_dir: Path, n_prompts: int = 16) -> dict:
    """Build and load time, and images/s of the tiny pipeline (64x64, 4 steps, CPU) at batch 1 and 4."""
    from stages.backends.images import DiffusersBackend
    from stages.backends.tiny_sdxl import tiny_sdxl_folder

    started = time.perf_counter()
    tiny_sdxl_folder(Path(cache_dir))          # built once per cache (0 s when already there)
    results = {"tiny_sdxl_build_s": round(time.perf_counter() - started, 2)}
    backend = DiffusersBackend("tiny", cache_dir=Path(cache_dir), device="cpu", batch_size=4)
    started = time.perf_counter()
    backend.pipeline()
    results["tiny_sdxl_load_s"] = round(time.perf_counter() - started, 2)
    prompts = [f"a photo of object number {i}" for i in range(n_prompts)]
    for batch in (1, 4):
        backend.batch_size = batch
        backend.generate(prompts[:batch], list(range(batch)))           # warm-up for this shape
        started = time.perf_counter()
        images = backend.generate(prompts, list(range(n_prompts)))
        elapsed = time.perf_counter() - started
        assert len(images) == n_prompts
        results[f"tiny_sdxl_images_per_s_b{batch}"] = round(n_prompts / elapsed, 2)
    results["tiny_sdxl_batch4_speedup"] = round(results["tiny_sdxl_images_per_s_b4"]
                                                / results["tiny_sdxl_images_per_s_b1"], 2)
    backend.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16, help="images per batch size (default 16)")
    parser.add_argument("--cache", type=Path, help="where the tiny model is kept (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = bench_tiny_images(args.cache or Path(tmp), args.prompts)
    for name, value in results.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
