"""Device manager: one ``Device`` resolved once and passed down to every model.

Resolution order: explicit ``--device``, ``$SOUNDSIGHT_DEVICE``, else cuda → mps → cpu.
The device owns the dtype policy (fp32 on CPU; bf16 autocast on CUDA where supported, else
fp16), seeding, the CPU thread count, and batch splitting when CUDA runs out of memory.
No other module calls ``.cuda()``.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
from dataclasses import dataclass
from typing import Any, Callable

from soundsight.errors import UserError

_SPEC = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass
class Device:
    spec: str
    torch_device: Any  # torch.device
    autocast_dtype: Any | None  # torch.dtype or None (full precision)

    @property
    def type(self) -> str:
        return self.torch_device.type

    @property
    def is_cuda(self) -> bool:
        return self.type == "cuda"

    def __str__(self) -> str:
        return str(self.torch_device)

    def to(self, obj):
        """Move a module or tensor here (the only sanctioned way to place things on a GPU)."""
        return obj.to(self.torch_device)

    def autocast(self):
        """Mixed-precision context for inference/training; a no-op where fp32 is the policy."""
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.type, dtype=self.autocast_dtype)

    def generator(self, seed: int | None) -> Any:
        """A torch.Generator on this device, seeded for reproducible sampling."""
        import torch

        gen = torch.Generator(device=self.torch_device)
        gen.manual_seed(int(seed) if seed is not None else torch.seed())
        return gen

    def seed_everything(self, seed: int) -> None:
        import numpy as np
        import torch

        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def map_batches(
        self, fn: Callable[[Any], Any], batch: Any, *, min_chunk: int = 1, cat: Callable | None = None
    ) -> Any:
        """Run ``fn`` over a tensor batch, halving the chunk size each time CUDA runs out of memory.

        On CPU this is just ``fn(batch)``. ``cat`` joins chunk results (default torch.cat dim 0).
        """
        import torch

        if not self.is_cuda:
            return fn(batch)
        cat = cat or (lambda parts: torch.cat(parts, dim=0))
        n = len(batch)
        chunk = n
        while True:
            try:
                parts = [fn(batch[i : i + chunk]) for i in range(0, n, chunk)]
                return parts[0] if len(parts) == 1 else cat(parts)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if chunk <= min_chunk:
                    raise UserError(
                        f"out of GPU memory even with batches of {chunk}; try --device cpu"
                    ) from None
                chunk = max(min_chunk, chunk // 2)


def _cuda_autocast_dtype(torch):
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def resolve_device(spec: str | None = None, *, threads: int | None = None) -> Device:
    """Resolve ``auto|cpu|cuda[:i]|mps`` into a Device; a missing backend is a user error."""
    import torch

    spec = (spec or os.environ.get("SOUNDSIGHT_DEVICE") or "auto").strip().lower()
    if not _SPEC.match(spec):
        raise UserError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    if threads is None and os.environ.get("SOUNDSIGHT_THREADS"):
        threads = int(os.environ["SOUNDSIGHT_THREADS"])
    if threads:
        torch.set_num_threads(int(threads))

    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if spec == "auto":
        if torch.cuda.is_available():
            spec = "cuda"
        elif mps_ok:
            spec = "mps"
        else:
            spec = "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {spec} requested but CUDA is not available (this torch: {torch.__version__})")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device {spec} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        dev = torch.device("cuda", index)
        return Device(spec, dev, _cuda_autocast_dtype(torch))
    if spec == "mps":
        if not mps_ok:
            raise UserError("device mps requested but MPS is not available")
        return Device(spec, torch.device("mps"), None)
    return Device("cpu", torch.device("cpu"), None)


def describe() -> dict:
    """Facts for `soundsight doctor`."""
    import torch

    info = {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "cpu_threads": torch.get_num_threads(),
    }
    return info

