"""Every backend follows sj_spatial.backends.contract: names, argument order, empty shapes."""

from __future__ import annotations

import inspect

import pytest
import torch

from sj_spatial.backends import contract, cpu, cpu_lif, cuda, cuda_lif, dense

from tests.support.cuda_emu import EmuRunner, compile_kernels, compiler

MATMUL = ["x", "weight", "taps", "frac", "window", "t_out"]


def parameters(fn, skip: int = 0) -> list[str]:
    return list(inspect.signature(fn).parameters)[skip:]


#: Each backend's options after the contract's arguments, keyword-only (numba: its path
#: and thread pool, cpu_schedule).
OPTIONS = {"dense": [], "numba": ["path", "parallel"], "cupy": []}


@pytest.mark.parametrize("module", [dense, cpu, cuda], ids=["dense", "numba", "cupy"])
def test_delayed_matmul_has_the_contract_signature(module, request):
    options = OPTIONS[request.node.callspec.id]
    assert parameters(module.delayed_matmul) == MATMUL + options
    kinds = [p.kind for p in inspect.signature(module.delayed_matmul).parameters.values()]
    assert kinds[len(MATMUL) :] == [inspect.Parameter.KEYWORD_ONLY] * len(options)
    assert parameters(contract.DelayedMatmul.__call__, skip=1) == MATMUL


def test_autograd_functions_take_arguments_in_the_contract_order():
    assert parameters(cpu._DelayedMatmul.forward, skip=1) == [*MATMUL, "path", "parallel"]
    assert parameters(cuda.DelayedMatmul.forward, skip=1) == [*MATMUL, "runner"]
    fused = parameters(contract.FusedLIF.__call__, skip=1)
    assert fused == MATMUL[:5] + ["bias", "cell"]
    assert parameters(cuda_lif.lif_recurrence) == [*fused, "runner"]
    assert parameters(cuda_lif.LIFRecurrence.forward, skip=1) == [*fused, "runner"]
    assert parameters(cpu_lif.lif_recurrence) == fused
    assert parameters(cpu_lif.LIFRecurrence.forward, skip=1) == fused


def test_tap_coefficients_are_near_then_far():
    weight, frac = torch.tensor([[2.0, -4.0]]), torch.tensor([[0.25, 0.5]])
    near, far = contract.tap_coefficients(weight, frac, torch.float64)
    assert near.dtype == far.dtype == torch.float64
    assert near.tolist() == [[1.5, -2.0]] and far.tolist() == [[0.5, -2.0]]
    assert contract.lag_window(25) == 27


def _emulated_cuda():
    if compiler() is None:
        pytest.skip("no C++ compiler for the CUDA emulator")
    runner = EmuRunner(compile_kernels(cuda.SOURCE, cuda.KERNELS, defines=cuda.DEFINES))
    return lambda *args: cuda.DelayedMatmul.apply(*args, runner)


@pytest.mark.parametrize("kernel", ["dense", "numba", "cupy-emulated"])
@pytest.mark.parametrize("t_in, n, n_in, n_out, t_out", [(5, 3, 4, 2, 0), (5, 0, 4, 2, 5)])
def test_empty_shapes_give_zeros_in_the_graph(kernel, t_in, n, n_in, n_out, t_out):
    matmul = {"dense": dense.delayed_matmul, "numba": cpu.delayed_matmul}.get(kernel)
    matmul = matmul or _emulated_cuda()
    x = torch.rand(t_in, n, n_in, requires_grad=True)
    weight = torch.rand(n_out, n_in, requires_grad=True)
    frac = torch.rand(n_out, n_in, requires_grad=True)
    taps = torch.zeros(n_out, n_in, dtype=torch.long)
    y = matmul(x, weight, taps, frac, 4, t_out)
    assert y.shape == (t_out, n, n_out) and y.grad_fn is not None
    y.sum().backward()
    for leaf in (x, weight, frac):
        assert torch.equal(leaf.grad, torch.zeros_like(leaf))
