"""Helpers the benchmarks share: realistic test frames and robust timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt


def ct_like_frame(rows: int, cols: int, seed: int, dtype: Any = np.int16) -> npt.NDArray[Any]:
    """A smooth body-like slice with noise: compresses like real CT, unlike a ramp or white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    body = ((yy - rows / 2) ** 2 / (rows * 0.42) ** 2 + (xx - cols / 2) ** 2 / (cols * 0.45) ** 2) < 1
    tissue = 40 + 30 * np.sin(xx / 23 + seed) * np.cos(yy / 31)
    image = np.where(body, tissue, -1000) + rng.normal(0, 12, (rows, cols))
    info = np.iinfo(dtype)
    return np.clip(image, info.min, info.max).astype(dtype)


def best_of(rounds: int, run: Callable[[], object]) -> float:
    """Median wall time of ``rounds`` runs, in seconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
