"""Execution plans per hardware, runners and their fallbacks."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from xvision.backbones import create_backbone
from xvision.backbones.runtime import (
    ExecutionPlan,
    Hardware,
    ReferenceRunner,
    TorchRunner,
    choose_plan,
    detect_hardware,
    make_runner,
)
from xvision.errors import BackboneError
from xvision.features.guard import cosine_rows

AVX2 = Hardware("AVX2", cpu_bf16=False, cpu_count=2, cuda=False, cuda_name=None, cuda_bf16=False, openvino=False)
AMX = Hardware("AVX512", cpu_bf16=True, cpu_count=2, cuda=False, cuda_name=None, cuda_bf16=False, openvino=False)
GPU = Hardware("AVX2", cpu_bf16=False, cpu_count=16, cuda=True, cuda_name="H100", cuda_bf16=True, openvino=False)


@pytest.fixture(scope="module")
def tiny():
    return create_backbone("timm:mobilenetv3_small_050", weights="random")


def test_avx2_cpu_runs_fp32_channels_last_with_reduced_decoding() -> None:
    plan = choose_plan(1000, hardware=AVX2, threads=2)
    assert (plan.device, plan.precision, plan.engine, plan.channels_last) == ("cpu", "fp32", "eager", True)
    assert plan.reduced_decode and plan.workers >= 1 and not plan.is_reference


def test_native_bf16_cpu_gets_bf16_channels_last_and_compile_for_big_jobs() -> None:
    small = choose_plan(100, hardware=AMX, threads=2)
    assert (small.precision, small.channels_last, small.engine) == ("bf16", True, "eager")
    assert choose_plan(5000, hardware=AMX, threads=2).engine == "compile"


def test_openvino_is_chosen_when_installed_and_the_job_is_big_enough() -> None:
    with_ov = Hardware(**{**AVX2.to_dict(), "openvino": True})
    assert choose_plan(1000, hardware=with_ov, threads=2).engine == "openvino"
    assert choose_plan(10, hardware=with_ov, threads=2).engine == "eager"


def test_cuda_gets_half_precision_big_batches_and_channels_last() -> None:
    plan = choose_plan(1000, hardware=GPU, threads=2)
    assert (plan.device, plan.precision, plan.channels_last, plan.batch_size) == ("cuda", "fp16", True, 64)
    assert choose_plan(1000, hardware=GPU, threads=2, precision="bf16").precision == "bf16"


def test_precision_fp32_forces_the_reference_path_everywhere() -> None:
    for hardware in (AVX2, AMX, Hardware(**{**AVX2.to_dict(), "openvino": True})):
        plan = choose_plan(10_000, precision="fp32", engine="openvino", hardware=hardware, threads=2)
        assert plan.is_reference and plan.engine == "eager"


def test_unknown_choices_and_missing_cuda_are_clear_errors() -> None:
    with pytest.raises(BackboneError, match="choose one of"):
        choose_plan(1, precision="int4", hardware=AVX2)
    with pytest.raises(BackboneError, match="no CUDA"):
        choose_plan(1, device="cuda", hardware=AVX2)


def test_detect_hardware_describes_this_machine() -> None:
    hw = detect_hardware()
    assert hw.cpu_count >= 1 and hw.cuda == torch.cuda.is_available()


def test_reference_plan_uses_backbone_extract(tiny) -> None:
    runner = make_runner(tiny.model, tiny.extract, ExecutionPlan())
    assert isinstance(runner, ReferenceRunner)
    batch = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    assert np.array_equal(runner(batch), tiny.extract(torch.from_numpy(batch)))


def test_channels_last_and_bf16_runners_agree_with_the_reference(tiny) -> None:
    batch = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    reference = tiny.extract(torch.from_numpy(batch))
    before = [p.clone() for p in tiny.model.parameters()]
    cl = TorchRunner(tiny.model, ExecutionPlan(channels_last=True))
    assert cosine_rows(cl(batch), reference).min() > 0.99999
    bf16 = TorchRunner(tiny.model, ExecutionPlan(precision="bf16", channels_last=True))
    assert cosine_rows(bf16(batch), reference).min() > 0.99
    # the backbone's own module is untouched: still NCHW fp32, same weights
    assert all(torch.equal(a, b) for a, b in zip(before, tiny.model.parameters(), strict=True))
    assert next(tiny.model.parameters()).is_contiguous()


def test_missing_openvino_falls_back_to_eager(tiny, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    runner = make_runner(tiny.model, tiny.extract, ExecutionPlan(engine="openvino", reduced_decode=True))
    assert runner.plan.engine == "eager"
    batch = np.zeros((1, 3, 224, 224), np.float32)
    assert runner(batch).shape == (1, tiny.feature_dim)


def test_openvino_engine_agrees_with_the_reference(tiny) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'xvision[fast]'")
    runner = make_runner(tiny.model, tiny.extract, ExecutionPlan(engine="openvino", threads=1))
    batch = np.random.default_rng(0).normal(size=(3, 3, 224, 224)).astype(np.float32)
    fast = runner(batch)
    assert runner.plan.engine == "openvino"
    assert cosine_rows(fast, tiny.extract(torch.from_numpy(batch))).min() > 0.9999
    assert runner(batch[:1]).shape == (1, tiny.feature_dim)  # dynamic batch size


@pytest.mark.gpu
def test_cuda_runner_agrees_with_the_reference(tiny) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    plan = choose_plan(1000)
    assert plan.device == "cuda" and plan.precision == "fp16"
    runner = make_runner(tiny.model, tiny.extract, plan)
    batch = np.random.default_rng(0).normal(size=(8, 3, 224, 224)).astype(np.float32)
    fast = runner(batch)
    assert fast.dtype == np.float32 and cosine_rows(fast, tiny.extract(torch.from_numpy(batch))).min() > 0.999
    assert runner(batch[:3]).shape == (3, tiny.feature_dim)  # a smaller last batch reuses the pinned buffer


def test_compiled_engines_are_chosen_only_when_the_job_pays_for_compiling() -> None:
    with_ov = Hardware(**{**AVX2.to_dict(), "openvino": True})
    # a slow network (1 s per image eagerly): 100 images pay for the conversion
    assert choose_plan(100, hardware=with_ov, threads=1, eager_seconds_per_image=1.0).engine == "openvino"
    # a fast one (50 ms per image): 148 images do not, 5,000 do
    assert choose_plan(148, hardware=with_ov, threads=1, eager_seconds_per_image=0.05).engine == "eager"
    assert choose_plan(5000, hardware=with_ov, threads=1, eager_seconds_per_image=0.05).engine == "openvino"
    assert choose_plan(2000, hardware=AMX, threads=1, eager_seconds_per_image=0.05).engine == "eager"
    assert choose_plan(2000, hardware=AMX, threads=1, eager_seconds_per_image=0.5).engine == "compile"


def test_cores_are_split_between_decoding_and_compute_when_decoding_matters() -> None:
    from xvision.backbones.runtime import split_cores

    # VGG16-like: 15 ms decode against 500 ms of compute: compute keeps both threads, a worker decodes beside
    workers, threads = split_cores(2, compute=0.5, decode=0.015, n_images=1000, cores=2)
    assert threads == 2 and workers >= 1
    # EfficientNet-Lite0-like: 15 ms decode against 40 ms: one core each, no oversubscription
    assert split_cores(2, compute=0.04, decode=0.015, n_images=1000, cores=2) == (1, 1)
    workers, threads = split_cores(16, compute=0.04, decode=0.015, n_images=1000, cores=16)
    assert workers + threads <= 16 and 3 <= workers <= 6
    assert split_cores(2, compute=0.04, decode=0.015, n_images=10, cores=2) == (0, 2)  # tiny job: no workers
    plan = choose_plan(1000, hardware=AVX2, eager_seconds_per_image=0.02, decode_seconds_per_image=0.015, busy=False)
    assert plan.workers + plan.threads <= max(2, torch.get_num_threads())
