"""The CUDA sources and the Python that launches them agree.

Every macro a ``.cu`` file reads is one its module defines (and a missing one stops the
compiler, naming it); the kernels Python launches exist, instantiated with the tile
constants and launch bound its geometry assumes; no launch exceeds its kernel's bound.
Runs the C preprocessor (g++ -E) on the sources; no GPU and no kernel is needed.
"""

from __future__ import annotations

import fnmatch
import math
import re
import subprocess
from pathlib import Path

import pytest
import torch

from sj_spatial.backends import cuda, cuda_lif
from sj_spatial.backends.contract import LIFCell
from sj_spatial.backends.cupy_runtime import DEFAULT_SMEM

from tests.support.cuda_emu import compiler

MODULES = pytest.mark.parametrize("module", [cuda, cuda_lif], ids=["cuda", "cuda_lif"])
ROOT = Path(__file__).resolve().parents[2]
MAX_BLOCK = 1024  # threads per block of every CUDA GPU: the bound of a kernel without one
C_TYPES = {"f32": "float", "f64": "double"}

_MACRO = re.compile(r"\bSJS_[A-Z0-9_]+\b")
_DEFINED = re.compile(r"^\s*#\s*define\s+(SJS_[A-Z0-9_]+)", re.MULTILINE)
_KERNEL = re.compile(
    r'extern\s+"C"\s+\w+\s+void\s+'  # the kernel qualifier, then the bound
    r"(?:__launch_bounds__\s*\(\s*(\d+)\s*(?:,\s*\d+\s*)?\)\s*)?(\w+)\s*\("
)
_TEMPLATE_CALL = re.compile(r"(\w+)\s*<([^<>]*)>\s*\(")


def preprocess(source: str, defines) -> subprocess.CompletedProcess:
    """The C preprocessor run on a CUDA ``source`` with ``-D`` options ``defines``."""
    cxx = compiler()
    if cxx is None:
        pytest.skip("no C++ compiler to preprocess the CUDA sources")
    command = [cxx, "-E", "-P", "-x", "c++", *defines, "-"]
    return subprocess.run(command, input=source, capture_output=True, text=True, check=False)


def kernel_table(source: str, defines) -> dict[str, tuple[int, str, tuple[str, ...]]]:
    """``{kernel: (launch bound in threads, function it calls, that call's template
    arguments)}`` of ``source`` as compiled with ``defines``."""
    result = preprocess(source, defines)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    starts = [m.start() for m in _KERNEL.finditer(text)] + [len(text)]
    table = {}
    for begin, end in zip(starts, starts[1:], strict=False):
        bound, name = _KERNEL.match(text, begin).groups()
        body = text[text.index("{", begin) : end]
        callee, args = _TEMPLATE_CALL.search(body).groups()
        table[name] = (int(bound or MAX_BLOCK), callee, tuple(a.strip() for a in args.split(",")))
    return table


@MODULES
def test_every_macro_a_source_reads_is_one_python_defines(module):
    read = set(_MACRO.findall(module.SOURCE)) - set(_DEFINED.findall(module.SOURCE))
    assert read == set(module.MACROS)
    assert module.DEFINES == tuple(f"-D{name}={value}" for name, value in module.MACROS.items())


@pytest.mark.parametrize("missing", list(cuda.MACROS))
def test_a_missing_define_stops_the_compiler_naming_it(missing):
    defines = [f"-D{name}={value}" for name, value in cuda.MACROS.items() if name != missing]
    result = preprocess(cuda.SOURCE, defines)
    assert result.returncode != 0
    assert f"{missing} is not defined" in result.stderr


def test_the_matmul_kernels_are_instantiated_with_pythons_constants():
    table = kernel_table(cuda.SOURCE, cuda.DEFINES)
    assert set(table) == set(cuda.KERNELS)
    for name, (bound, callee, args) in table.items():
        assert bound == 32 * cuda._MAX_WARPS, name
        kind, tag, *sizes = name.split("_")[1:]
        r = sizes[0].removeprefix("r")
        if kind == "gather":
            want = ("sjs_gather", (C_TYPES[tag], r, str(cuda._GATHER_OUTPUTS_PER_WARP)))
        else:
            cb = sizes[1].removeprefix("cb")
            want = ("sjs_wgrad", (C_TYPES[tag], r, str(cuda._WGRAD_OUTPUTS_PER_WARP), cb))
        assert (callee, args) == want, name


def test_the_lif_kernels_are_instantiated_for_their_types():
    table = kernel_table(cuda_lif.SOURCE, cuda_lif.DEFINES)
    assert set(table) == set(cuda_lif.KERNELS)
    for name, (bound, callee, args) in table.items():
        direction, tag = name.split("_")[2:]
        assert (bound, callee, args) == (MAX_BLOCK, f"sjs_lif_{direction}", (C_TYPES[tag],))


class Recorder:
    """A kernel runner that keeps the launches instead of running them."""

    def __init__(self, sms: int = 132, smem_limit: int = 227 * 1024, warps: int | None = None):
        self.sms, self.smem_limit, self.warps = sms, smem_limit, warps
        self.launches = []

    def __call__(self, launch) -> None:
        self.launches.append(launch)


def matmul_launches(runner, t_in, t_out, n, c, o, max_delay, dtype) -> list:
    """The launches of one forward and backward pass of the cupy delayed matmul."""
    x = torch.zeros(t_in, n, c, dtype=dtype, requires_grad=True)
    weight = torch.zeros(o, c, dtype=dtype, requires_grad=True)
    frac = torch.zeros(o, c, dtype=dtype, requires_grad=True)
    taps = torch.randint(0, max_delay + 1, (o, c))
    y = cuda.DelayedMatmul.apply(x, weight, taps, frac, max_delay + 2, t_out, runner)
    y.backward(torch.ones_like(y))
    return runner.launches


def lif_launches(n, batch, dtype) -> list:
    """The launches of one forward and backward pass of the fused LIF recurrence."""
    cell = LIFCell(2.0, 1.0, 0.0, 0.0, True, False, "Sigmoid", 4.0, 0.0)
    x = torch.zeros(6, batch, n, dtype=dtype, requires_grad=True)
    weight = torch.zeros(n, n, dtype=dtype, requires_grad=True)
    frac = torch.zeros(n, n, dtype=dtype, requires_grad=True)
    taps = torch.randint(0, 3, (n, n))
    runner = Recorder()
    s, _ = cuda_lif.lif_recurrence(x, weight, taps, frac, 5, None, cell, runner)
    s.backward(torch.ones_like(s))
    return runner.launches


MATMUL_SHAPES = [  # t_in, t_out, n, c, o, max_delay
    (5, 3, 2, 3, 4, 1),
    (8, 8, 1, 2, 2, 0),
    (40, 33, 11, 70, 300, 9),
    (220, 20, 3, 5, 40, 200),
    (210, 6, 2, 3, 4, 200),
]
RUNNERS = [  # a large GPU, a single SM, no shared-memory opt-in, warps fixed by the runner
    {},
    {"sms": 1},
    {"sms": 8, "smem_limit": DEFAULT_SMEM},
    {"warps": 1},
    {"sms": 2, "warps": cuda._MAX_WARPS},
]


def check_fits(launches, tables) -> None:
    """Each launch names a kernel of its source and stays within its bound."""
    assert launches
    for launch in launches:
        module = {cuda.SOURCE: cuda, cuda_lif.SOURCE: cuda_lif}[launch.source]
        assert launch.defines == module.DEFINES, launch.name
        if module not in tables:
            tables[module] = kernel_table(module.SOURCE, module.DEFINES)
        bound = tables[module][launch.name][0]
        assert launch.block[0] % 32 == 0 and math.prod(launch.block) <= bound, launch.name


def test_every_matmul_launch_fits_its_kernel():
    tables, launched = {}, set()
    for runner_kw in RUNNERS:
        for shape in MATMUL_SHAPES:
            for dtype in (torch.float32, torch.float64, torch.bfloat16):
                runner = Recorder(**runner_kw)
                launches = matmul_launches(runner, *shape, dtype)
                check_fits(launches, tables)
                assert all(launch.shared_mem <= runner.smem_limit for launch in launches)
                launched.update(launch.name for launch in launches)
    assert launched == set(cuda.KERNELS)  # the sweep reaches every kernel


@pytest.mark.parametrize("n", [1, 33, cuda_lif.MAX_NEURONS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_lif_launch_fits_its_kernel(n, dtype):
    launches = lif_launches(n, 2, dtype)
    assert {launch.source for launch in launches} == {cuda_lif.SOURCE, cuda.SOURCE}
    check_fits(launches, {})


def test_more_warps_than_the_launch_bound_is_a_clear_error():
    with pytest.raises(ValueError, match=r"runner.warps must be None or in \[1, 8\].*got 16"):
        matmul_launches(Recorder(warps=16), 10, 10, 2, 3, 4, 2, torch.float32)


def test_the_sources_ship_as_package_data():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["sj_spatial"]
    package = ROOT / "sj_spatial"
    sources = [p.relative_to(package).as_posix() for p in package.rglob("*.cu")]
    assert sorted(sources) == [
        "backends/kernels/delayed_matmul.cu",
        "backends/kernels/lif_recurrence.cu",
    ]
    for source in sources:
        assert any(fnmatch.fnmatch(source, pattern) for pattern in patterns), source
