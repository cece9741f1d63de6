"""The cupy backend's CUDA kernels, run on the CPU through an emulator and through nvcc/NVRTC.

The emulator executes the exact kernel source of :mod:`sj_spatial.backends.cuda` with the
launch geometry and arguments that module computes for the GPU, so forward and gradients
are checked against the dense torch backend without a GPU.
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import shutil
import subprocess

import pytest
import torch

from sj_spatial.backends import cuda, cuda_lif, dense

from tests.support.cuda_emu import EmuRunner, compile_kernels, compiler

# CuPy compiles each kernel module's source on its own.
MODULES = pytest.mark.parametrize("module", [cuda, cuda_lif], ids=["cuda", "cuda_lif"])


@pytest.fixture(scope="module")
def emu():
    if compiler() is None:
        pytest.skip("no C++ compiler for the CUDA emulator")
    return compile_kernels(cuda.SOURCE, cuda.KERNELS, defines=cuda.DEFINES)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def make_case(t_in, n, c, o, max_delay, *, taps="random", frac="random", seed=0, sparse=False):
    g = torch.Generator().manual_seed(seed)
    num_taps = max_delay + 2
    x = torch.randn(t_in, n, c, generator=g)
    if sparse:
        x = (torch.rand(t_in, n, c, generator=g) < 0.05).float()
    weight = torch.randn(o, c, generator=g)
    if taps == "random":
        k = torch.randint(0, max_delay + 1, (o, c), generator=g)
    else:
        k = torch.full((o, c), 0 if taps == "zero" else max_delay, dtype=torch.long)
    f = torch.rand(o, c, generator=g) if frac == "random" else torch.zeros(o, c)
    return x, weight, k, f, num_taps


def check(runner, x, weight, k, f, num_taps, t_out, dtype=torch.float32, tol=1e-5):
    """Forward and the three gradients of the kernels against the dense backend."""
    xs = [x.to(dtype).clone().requires_grad_() for _ in range(2)]
    ws = [weight.to(dtype).clone().requires_grad_() for _ in range(2)]
    fs = [f.to(dtype).clone().requires_grad_() for _ in range(2)]
    y = cuda.DelayedMatmul.apply(xs[0], ws[0], k, fs[0], num_taps, t_out, runner)
    ref = dense.delayed_matmul(xs[1].double(), ws[1].double(), k, fs[1].double(), num_taps, t_out)
    assert y.shape == ref.shape == (t_out, x.shape[1], weight.shape[0])
    assert y.dtype == dtype
    assert rel_err(y, ref) <= tol
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y.backward(grad.to(dtype))
    ref.backward(grad)
    for mine, theirs, name in zip((xs[0], ws[0], fs[0]), (xs[1], ws[1], fs[1]), "xwf", strict=True):
        assert mine is not theirs and mine.grad.dtype == dtype, name
        assert rel_err(mine.grad, theirs.grad) <= tol, name


CASES = {
    "basic": {"t_in": 12, "t_out": 12, "n": 3, "c": 5, "o": 7, "max_delay": 4},
    "t_out<T_in": {"t_in": 47, "t_out": 21, "n": 2, "c": 6, "o": 5, "max_delay": 3},
    "t_out=1": {"t_in": 6, "t_out": 1, "n": 4, "c": 5, "o": 6, "max_delay": 4},
    "N=1": {"t_in": 30, "t_out": 30, "n": 1, "c": 4, "o": 3, "max_delay": 5},
    "N=11": {"t_in": 35, "t_out": 35, "n": 11, "c": 9, "o": 10, "max_delay": 6},
    "T_in<num_taps": {"t_in": 3, "t_out": 3, "n": 2, "c": 4, "o": 4, "max_delay": 6},
    "max_delay=0": {"t_in": 20, "t_out": 20, "n": 5, "c": 7, "o": 3, "max_delay": 0},
    "odd_sizes": {"t_in": 41, "t_out": 37, "n": 9, "c": 13, "o": 19, "max_delay": 9},
    "long_delay": {"t_in": 50, "t_out": 50, "n": 3, "c": 3, "o": 4, "max_delay": 40},
}


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_grads_match_dense(emu, name):
    p = dict(CASES[name])
    t_out = p.pop("t_out")
    x, w, k, f, num_taps = make_case(p.pop("t_in"), **p)
    check(EmuRunner(emu), x, w, k, f, num_taps, t_out)


@pytest.mark.parametrize("taps", ["zero", "max"])
def test_extreme_taps_and_zero_fraction(emu, taps):
    x, w, k, f, num_taps = make_case(26, 3, 6, 5, 7, taps=taps, frac="zero")
    check(EmuRunner(emu), x, w, k, f, num_taps, 26)


@pytest.mark.parametrize(
    "runner_kw",
    [{"sms": 1}, {"sms": 64, "warps": 2}, {"sms": 2, "warps": 8}, {"sms": 8, "warps": 1}],
    ids=["few_sms", "split_stream", "eight_warps", "one_warp"],
)
@pytest.mark.slow  # compilers and the emulator
def test_launch_geometries(emu, runner_kw):
    x, w, k, f, num_taps = make_case(70, 10, 50, 21, 5, seed=3, sparse=True)
    check(EmuRunner(emu, **runner_kw), x, w, k, f, num_taps, 66)


def test_no_data_races_when_threads_drift_apart(emu):
    """Random sleeps after barriers: a missing ``__syncthreads`` would corrupt results."""
    # 40 inputs: several shared-memory refills per block; one grid slice: each block
    # streams several time tiles through its ring.
    x, w, k, f, num_taps = make_case(75, 9, 40, 17, 12, seed=10)
    emu.jitter_us = 300
    try:
        check(EmuRunner(emu, sms=1, warps=4), x, w, k, f, num_taps, 70)
    finally:
        emu.jitter_us = 0


def test_float64_is_exact(emu):
    x, w, k, f, num_taps = make_case(40, 9, 7, 9, 8, seed=4)
    runner = EmuRunner(emu)
    check(runner, x, w, k, f, num_taps, 33, dtype=torch.float64, tol=1e-12)
    assert all("_f64_" in name for name in runner.names)


def test_pruned_weights_and_noncontiguous_input(emu):
    x, w, k, f, num_taps = make_case(30, 6, 8, 5, 4, seed=5)
    w[:, ::2] = 0.0
    x = x.permute(1, 0, 2).contiguous().permute(1, 0, 2)  # same values, other strides
    assert not x.is_contiguous()
    check(EmuRunner(emu), x, w, k, f, num_taps, 30)


def test_small_shared_memory_uses_single_input_ring(emu):
    x, w, k, f, num_taps = make_case(36, 4, 10, 6, 30, seed=6)
    runner = EmuRunner(emu, smem_limit=20 * 1024)
    check(runner, x, w, k, f, num_taps, 36)
    assert any(name.endswith("_cb1") for name in runner.names)


def test_too_long_delay_is_a_clear_error(emu):
    x, w, k, f, num_taps = make_case(10, 2, 3, 3, 2000, seed=7)
    with pytest.raises(ValueError, match="max_delay=2000"):
        cuda.forward_output(x, w, k, f, num_taps, 10, EmuRunner(emu, smem_limit=48 * 1024))


def test_weight_frac_grads_matches_autograd(emu):
    x, w, k, f, num_taps = make_case(25, 5, 6, 7, 5, seed=8)
    grad_y = torch.randn(20, 5, 7)
    gw, gf = cuda.weight_frac_grads(x, grad_y, w, k, f, num_taps, 20, runner=EmuRunner(emu))
    wr, fr = w.double().requires_grad_(), f.double().requires_grad_()
    dense.delayed_matmul(x.double(), wr, k, fr, num_taps, 20).backward(grad_y.double())
    assert rel_err(gw, wr.grad) <= 1e-5 and rel_err(gf, fr.grad) <= 1e-5


def test_half_precision_input_is_computed_in_float32(emu):
    x, w, k, f, num_taps = make_case(18, 4, 5, 6, 3, seed=9)
    xh = x.to(torch.bfloat16)
    y = cuda.forward_output(xh, w, k, f, num_taps, 18, EmuRunner(emu))
    ref = dense.delayed_matmul(xh.double(), w.double(), k, f.double(), num_taps, 18)
    assert y.dtype == torch.bfloat16
    assert rel_err(y, ref) <= 1e-2


def _kernel_entries(ptx: str) -> set[str]:
    return set(re.findall(r"\.entry\s+(\w+)", ptx))


@pytest.mark.slow  # compilers and the emulator
@MODULES
def test_kernels_compile_with_nvcc(tmp_path, module):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed")
    src = tmp_path / "kernels.cu"
    src.write_text(module.SOURCE)
    out = tmp_path / "kernels.ptx"
    result = subprocess.run(
        [nvcc, "--ptx", "-arch=sm_90", "-std=c++17", *module.DEFINES, str(src), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _kernel_entries(out.read_text()) == set(module.KERNELS)


def _libnvrtc() -> str | None:
    roots = [os.path.dirname(os.path.dirname(torch.__file__))]
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib", "libnvrtc.so*"))):
            if "builtins" not in path and ".alt." not in path:
                return path
    return None


@pytest.mark.slow  # compilers and the emulator
@MODULES
def test_kernels_compile_with_nvrtc(module):
    """NVRTC is the compiler CuPy uses for RawModule; compile exactly as it would."""
    path = _libnvrtc()
    if path is None:
        pytest.skip("libnvrtc not found")
    lib = ctypes.CDLL(path)
    prog = ctypes.c_void_p()
    assert (
        lib.nvrtcCreateProgram(ctypes.byref(prog), module.SOURCE.encode(), b"k.cu", 0, None, None)
        == 0
    )
    opts = [b"--gpu-architecture=compute_90", b"--std=c++17", *map(str.encode, module.DEFINES)]
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    assert rc == 0, log.value.decode()
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetPTX(prog, ptx)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    assert _kernel_entries(ptx.value.decode()) == set(module.KERNELS)
