"""How a backbone runs on this machine: device, precision, memory layout, engine, batch size, threads.

:func:`choose_plan` picks the fastest path the hardware supports; :func:`make_runner` builds it, falling back
to PyTorch eager when an optional engine is missing or fails. The rules (measured, see the README's
Performance section):

- CUDA when present: fp16 (closer to fp32 than bf16), channels-last, batches of 64, pinned host memory and
  non-blocking copies.
- CPUs with native bf16 (AMX or AVX512-BF16): bf16 + channels-last; OpenVINO when installed
  (``pip install "xvision[fast]"``), else ``torch.compile`` for large jobs, else eager autocast. Where bf16
  fails the accuracy guard (EfficientNet-Lite0 does), extraction switches to fp32 (:func:`fp32_fallback`).
- Other CPUs (AVX2): fp32; OpenVINO when installed (about 2x PyTorch eager on VGG16), else PyTorch eager
  channels-last (``benchmarks/layout.py``, torch 2.14, 2-core AVX2 EPYC, idle: 1.23x NCHW for VGG16, 1.27x for
  EfficientNet-Lite0 at 224 px, 1.61x at 1024 px; an earlier torch measured no gain).
- compute threads: one when the machine is already busy (OpenMP spin-waits badly under contention, see
  :mod:`xvision._threads`), else PyTorch's setting;
- ``precision="fp32"`` forces the reference path: PyTorch eager, fp32, NCHW, full-resolution decoding,
  i.e. exactly :meth:`Backbone.extract`.

Every non-reference path is checked against the reference by the extraction's accuracy guard.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from xvision._threads import machine_is_busy
from xvision.errors import BackboneError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ENGINES = ("auto", "eager", "compile", "openvino")
DEVICES = ("auto", "cpu", "cuda")

# An engine that compiles first pays only on jobs long enough to amortise it. Converting a model to OpenVINO
# takes 4-20 s on a small CPU and then runs 1.4x (VGG16) to 3x (EfficientNet-Lite0) faster than eager on AVX2;
# torch.compile takes a minute or more. So the job's eager duration is estimated (one timed forward pass) and
# compared with these; without an estimate, the image counts are used.
OPENVINO_MIN_EAGER_SECONDS = 15.0
COMPILE_MIN_EAGER_SECONDS = 300.0
OPENVINO_MIN_IMAGES = 48
COMPILE_MIN_IMAGES = 512
CPU_BATCH = 4  # measured on AVX2: batches of 4 beat 16 (cache) for EfficientNet-Lite0 and tie for VGG16
CUDA_BATCH = 64


@dataclass(frozen=True)
class Hardware:
    """What the machine offers for inference."""

    cpu_capability: str
    cpu_bf16: bool  # AMX or AVX512-BF16: bf16 matmuls at full speed
    cpu_count: int
    cuda: bool
    cuda_name: str | None
    cuda_bf16: bool
    openvino: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _native_cpu_bf16() -> bool:
    try:
        if torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported():
            return True
    except AttributeError:  # older torch: read the flags ourselves
        pass
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())


@functools.lru_cache(maxsize=1)
def detect_hardware() -> Hardware:
    """Probe the CPU, CUDA and the optional engines once per process."""
    cuda = torch.cuda.is_available()
    return Hardware(
        cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
        cpu_bf16=_native_cpu_bf16(),
        cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        cuda=cuda,
        cuda_name=torch.cuda.get_device_name(0) if cuda else None,
        cuda_bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        openvino=importlib.util.find_spec("openvino") is not None,
    )


@dataclass(frozen=True)
class ExecutionPlan:
    """How one extraction runs; recorded in the feature store's ``meta.json``."""

    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    engine: str = "eager"
    batch_size: int = CPU_BATCH
    workers: int = 0
    threads: int = 1
    reduced_decode: bool = False

    @property
    def is_reference(self) -> bool:
        """True for the fp32 eager NCHW full-decode path, whose features are :meth:`Backbone.extract`'s."""
        return (
            self.device == "cpu"
            and self.precision == "fp32"
            and self.engine == "eager"
            and not self.channels_last
            and not self.reduced_decode
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        layout = "channels-last" if self.channels_last else "NCHW"
        decode = "reduced" if self.reduced_decode else "full"
        return (
            f"{self.engine} {self.precision} {layout} on {self.device}, batch {self.batch_size}, "
            f"{self.workers} decode worker{'s' * (self.workers != 1)}, "
            f"{self.threads} thread{'s' * (self.threads != 1)}, {decode} decoding"
        )


def fp32_fallback(plan: ExecutionPlan) -> ExecutionPlan:
    """``plan`` in fp32, for when its reduced precision fails the accuracy guard: the same device, layout,
    decoding and workers; ``torch.compile`` (chosen only for bf16) becomes eager, OpenVINO stays (in fp32)."""
    engine = "eager" if plan.engine == "compile" else plan.engine
    return replace(plan, precision="fp32", engine=engine, channels_last=engine != "openvino")


def default_workers(n_images: int, cpu_count: int | None = None) -> int:
    """Decode in parallel processes only when there is enough work to pay for starting them."""
    if n_images < 64:
        return 0
    # Half the cores at most: a worker that runs beside a full set of compute threads steals a core from a
    # parallel region, and one worker decodes a 1024 px PNG in about 15 ms, ahead of most backbones.
    return max(1, min(4, (cpu_count or os.cpu_count() or 1) // 2))


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise BackboneError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")


def choose_plan(
    n_images: int,
    *,
    precision: str = "auto",
    engine: str = "auto",
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    threads: int | None = None,
    hardware: Hardware | None = None,
    eager_seconds_per_image: float | None = None,
    decode_seconds_per_image: float | None = None,
    busy: bool | None = None,
) -> ExecutionPlan:
    """The fastest plan this hardware supports for ``n_images`` images, honouring explicit choices.

    ``eager_seconds_per_image`` (see :func:`estimate_seconds_per_image`, measured with the threads PyTorch
    would use) lets the choice of a compiled engine depend on whether the job is long enough to pay for
    compiling it; with ``decode_seconds_per_image`` as well, CPU cores are split between decode workers and
    compute threads so that neither waits and they do not oversubscribe the cores (see :func:`split_cores`).
    ``busy``: whether other processes keep the machine busy (one compute thread); ``None`` measures it.
    """
    _check_choice("precision", precision, PRECISIONS)
    _check_choice("engine", engine, ENGINES)
    _check_choice("device", device, DEVICES)
    hw = hardware or detect_hardware()
    if device == "cuda" and not hw.cuda:
        raise BackboneError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if precision == "fp32":
        dev = "cuda" if device == "cuda" else "cpu"
        if engine not in ("auto", "eager"):
            log.warning("--precision fp32 forces the reference path: ignoring engine %r", engine)
        return ExecutionPlan(
            device=dev,
            precision="fp32",
            engine="eager",
            batch_size=batch_size or (CUDA_BATCH if dev == "cuda" else CPU_BATCH),
            workers=default_workers(n_images, hw.cpu_count) if workers is None else workers,
            threads=threads or torch.get_num_threads(),  # the reference keeps the caller's setting
        )
    explicit_threads = threads is not None
    if threads is None:
        threads = 1 if (machine_is_busy() if busy is None else busy) else torch.get_num_threads()
    dev = "cuda" if device == "cuda" or (device == "auto" and hw.cuda) else "cpu"
    if dev == "cuda":
        # fp16, not bf16: its 10-bit mantissa keeps features within the guard's cosine 0.999 of fp32 (bf16's
        # 7 bits gave EfficientNet-Lite0 0.997 on an H200), and inference needs no loss scaling; activations
        # of these networks stay far below fp16's range (65,504). `--precision bf16` remains available.
        prec = precision if precision != "auto" else "fp16"
        return ExecutionPlan(
            device="cuda",
            precision=prec,
            channels_last=True,
            engine="eager",
            batch_size=batch_size or CUDA_BATCH,
            # the GPU outruns PNG decoding: every core but the feeding one decodes
            workers=max(1, min(16, hw.cpu_count - 1)) if workers is None else workers,
            threads=threads,
            reduced_decode=True,
        )
    prec = precision if precision != "auto" else ("bf16" if hw.cpu_bf16 else "fp32")
    if prec != "fp32" and not hw.cpu_bf16:
        log.warning("this CPU has no native bf16/fp16 (no AMX or AVX512-BF16): %s will be slow", prec)
    if engine == "auto":
        if eager_seconds_per_image is None:
            pays_openvino, pays_compile = n_images >= OPENVINO_MIN_IMAGES, n_images >= COMPILE_MIN_IMAGES
        else:
            eager_seconds = n_images * eager_seconds_per_image
            pays_openvino = eager_seconds >= OPENVINO_MIN_EAGER_SECONDS
            pays_compile = eager_seconds >= COMPILE_MIN_EAGER_SECONDS
        if hw.openvino and pays_openvino and prec in ("fp32", "bf16"):
            engine = "openvino"
        elif hw.cpu_bf16 and prec == "bf16" and pays_compile:
            engine = "compile"
        else:
            engine = "eager"
    if workers is None and not explicit_threads and eager_seconds_per_image and decode_seconds_per_image:
        speedup = ENGINE_SPEEDUP.get(engine, 1.0)
        compute = eager_seconds_per_image * threads / speedup  # core-seconds per image
        workers, threads = split_cores(threads, compute, decode_seconds_per_image, n_images, hw.cpu_count)
    return ExecutionPlan(
        device="cpu",
        precision=prec,
        channels_last=engine != "openvino" or prec != "fp32",  # OpenVINO picks its own layout
        engine=engine,
        batch_size=batch_size or CPU_BATCH,
        workers=default_workers(n_images, hw.cpu_count) if workers is None else workers,
        threads=threads,
        reduced_decode=True,
    )


ENGINE_SPEEDUP = {"openvino": 2.0, "compile": 1.5}
"""Rough compute speed-ups over eager used to plan the core split (measured 1.4-3x for OpenVINO on AVX2)."""

DECODE_SHARE_SPLIT = 0.15


def split_cores(threads: int, compute: float, decode: float, n_images: int, cores: int) -> tuple[int, int]:
    """Decode workers and compute threads for a CPU job.

    ``compute`` and ``decode`` are core-seconds per image. When decoding is a small share of the work (VGG16:
    15 ms against 500 ms), the compute keeps every thread and a worker decodes alongside. When it is a large
    share (EfficientNet-Lite0: 15 ms against 40 ms), the cores are split in proportion, because decode
    processes running beside a full set of OpenMP threads oversubscribe the cores and stall every parallel
    region.
    """
    if n_images < 64:
        return 0, threads
    share = decode / (decode + compute)
    if share < DECODE_SHARE_SPLIT:
        return default_workers(n_images, cores), threads
    workers = max(1, min(cores - 1, round(cores * share))) if cores > 1 else 1
    return workers, max(1, min(threads, cores - workers))


def estimate_seconds_per_image(model: nn.Module, input_shape: tuple[int, int, int], threads: int) -> float:
    """Time one eager fp32 forward pass of a single image (the second of two, so it is warm)."""
    import time

    x = torch.zeros(1, *input_shape)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            model(x)
            start = time.perf_counter()
            model(x)
            return time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)


class Runner(Protocol):
    """Maps a preprocessed batch (N, C, H, W) float32 to features (N, D) float32."""

    plan: ExecutionPlan

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class ReferenceRunner:
    """The reference path: exactly :meth:`Backbone.extract` (eager fp32 NCHW)."""

    def __init__(self, extract: Callable[[torch.Tensor], np.ndarray], plan: ExecutionPlan) -> None:
        self.extract = extract
        self.plan = plan

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.extract(torch.from_numpy(batch))


_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TorchRunner:
    """PyTorch on CPU or CUDA with optional autocast, channels-last, pinned memory and torch.compile."""

    def __init__(self, model: nn.Module, plan: ExecutionPlan) -> None:
        self.plan = plan
        self.device = torch.device(plan.device)
        # A private copy: the backbone's own module stays fp32 NCHW on the CPU for the reference path.
        model = copy.deepcopy(model).to(self.device)
        if plan.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: Callable[[torch.Tensor], torch.Tensor] = model
        if plan.engine == "compile":
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True  # fold weights into constants: no per-call reorders
            self.model = torch.compile(model)
        self._dtype = _AUTOCAST.get(plan.precision)
        self._pinned: torch.Tensor | None = None

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(batch)
        if self.device.type == "cuda":
            # Stage through a reused page-locked buffer so the host-to-device copy is asynchronous.
            if self._pinned is None or self._pinned.shape[0] < tensor.shape[0]:
                self._pinned = torch.empty(tensor.shape, dtype=tensor.dtype).pin_memory()
            staged = self._pinned[: tensor.shape[0]]
            staged.copy_(tensor)
            tensor = staged.to(self.device, non_blocking=True)
        if self.plan.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = self._to_device(batch)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self._dtype or torch.float32, enabled=self._dtype is not None),
        ):
            out = self.model(x)
        return out.float().cpu().numpy()


def make_runner(model: nn.Module, extract: Callable[[torch.Tensor], np.ndarray], plan: ExecutionPlan) -> Runner:
    """Build the runner for ``plan``; an optional engine that cannot be built or fails on its first batch
    falls back to PyTorch eager (with a warning), and the runner's ``plan`` then says so.

    Args:
        model: the backbone's feature module (fp32, CPU); it is copied, never changed.
        extract: the reference feature function (``Backbone.extract``).
        plan: from :func:`choose_plan`.
    """
    if plan.engine == "eager" and plan.device == "cpu" and plan.precision == "fp32" and not plan.channels_last:
        return ReferenceRunner(extract, plan)
    if plan.engine == "openvino":
        try:
            from xvision.backbones._openvino import OpenVinoRunner

            return _FirstCallFallback(OpenVinoRunner(model, plan), model)
        except Exception as error:  # noqa: BLE001 - any failure of an optional engine means: fall back
            log.warning("OpenVINO engine unavailable (%s: %s); using PyTorch eager", type(error).__name__, error)
            return TorchRunner(model, replace(plan, engine="eager"))
    if plan.engine == "compile":
        return _FirstCallFallback(TorchRunner(model, plan), model)
    return TorchRunner(model, plan)


class _FirstCallFallback:
    """Compiled engines build on their first batch; if that fails, run PyTorch eager instead of failing."""

    def __init__(self, primary: Runner, model: nn.Module) -> None:
        self._runner = primary
        self._model = model
        self.plan = primary.plan
        self._checked = False

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self._checked:
            return self._runner(batch)
        try:
            out = self._runner(batch)
        except Exception as error:  # noqa: BLE001 - e.g. inductor without a C++ toolchain
            log.warning("%s engine failed (%s: %s); using PyTorch eager", self.plan.engine, type(error).__name__, error)
            self.plan = replace(self.plan, engine="eager")
            self._runner = TorchRunner(self._model, self.plan)
            out = self._runner(batch)
        self._checked = True
        return out
