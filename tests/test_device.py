import pytest
import torch

from soundsight.device import Device, resolve_device
from soundsight.errors import UserError


def test_auto_resolves_to_cpu_here(monkeypatch):
    monkeypatch.delenv("SOUNDSIGHT_DEVICE", raising=False)
    dev = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert dev.type == expected
    if dev.type == "cpu":
        assert dev.autocast_dtype is None  # fp32 policy on CPU


def test_env_var_is_used(monkeypatch):
    monkeypatch.setenv("SOUNDSIGHT_DEVICE", "cpu")
    assert resolve_device().type == "cpu"


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu0", ""])
def test_bad_specs(spec, monkeypatch):
    monkeypatch.delenv("SOUNDSIGHT_DEVICE", raising=False)
    if spec == "":  # an empty spec is not an error: it means "not given" (the env var, else auto)
        assert resolve_device(spec).type == resolve_device("auto").type
        monkeypatch.setenv("SOUNDSIGHT_DEVICE", "cpu")
        assert resolve_device(spec).type == "cpu"
        return
    with pytest.raises(UserError, match="unknown device"):
        resolve_device(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_missing_is_user_error():
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda:0")


def test_threads_are_applied():
    before = torch.get_num_threads()
    try:
        resolve_device("cpu", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_seeded_generator_is_reproducible():
    dev = resolve_device("cpu")
    a = torch.randn(5, generator=dev.generator(7))
    b = torch.randn(5, generator=dev.generator(7))
    c = torch.randn(5, generator=dev.generator(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_map_batches_halves_on_oom():
    # A CUDA-typed Device is enough: map_batches only reacts to OutOfMemoryError.
    dev = Device("cuda", torch.device("cuda"), torch.bfloat16)
    seen = []

    def fn(chunk):
        seen.append(len(chunk))
        if len(chunk) > 3:
            raise torch.cuda.OutOfMemoryError("fake")
        return chunk * 2

    out = dev.map_batches(fn, torch.arange(10))
    assert torch.equal(out, torch.arange(10) * 2)
    assert seen[:3] == [10, 5, 2]  # 10 fails, 5 fails, then chunks of 2
    with pytest.raises(UserError, match="out of GPU memory"):
        dev.map_batches(lambda c: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("x")), torch.arange(4))


def test_cpu_map_batches_and_autocast_are_plain():
    dev = resolve_device("cpu")
    assert torch.equal(dev.map_batches(lambda x: x + 1, torch.zeros(3)), torch.ones(3))
    with dev.autocast():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
