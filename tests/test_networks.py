"""ogan_plugin.networks: eval_mode, device_dtype, parse_device."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from ogan_plugin.networks import device_dtype, eval_mode, parse_device


def test_eval_mode_restores_each_submodules_own_flag_also_on_an_error():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.BatchNorm1d(2))
    net[2].eval()  # a submodule the user froze on purpose
    before = [m.training for m in net.modules()]
    with eval_mode(net, lambda x: x):  # plain callables are ignored
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == before
    with pytest.raises(RuntimeError, match="boom"), eval_mode(net):
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == before


def test_device_dtype_reads_the_first_floating_point_parameter():
    class Counted(nn.Module):
        def __init__(self):
            super().__init__()
            self.count = nn.Parameter(torch.zeros(1, dtype=torch.long), requires_grad=False)
            self.lin = nn.Linear(2, 2).double()

    assert device_dtype(Counted()) == (torch.device("cpu"), torch.float64)
    assert device_dtype(lambda z: z, nn.Linear(2, 2).half()) == (torch.device("cpu"), torch.float16)
    assert device_dtype(lambda z: z) == (torch.device("cpu"), torch.float32)
    assert device_dtype(nn.ReLU(), default=(torch.device("cpu"), torch.float64))[1] == torch.float64


def test_parse_device():
    assert parse_device("cpu") == torch.device("cpu")
    assert parse_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match=r"^--device 'tpu:9' is not a device: "):
        parse_device("tpu:9", "--device")
    with pytest.raises(ValueError, match=r"^device must be 'cpu' or 'cuda' \(or 'auto'\), got 'meta'$"):
        parse_device("meta", "device", ("cpu", "cuda"))
    assert parse_device("meta") == torch.device("meta")  # any type when none is named


def test_parse_device_names_a_missing_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parse_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^--device 'cuda:1' was asked for but torch sees no CUDA device$"):
        parse_device("cuda:1", "--device")
