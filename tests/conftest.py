import sys
import warnings
from pathlib import Path

import pytest
import torch

# spikingjelly 0.0.0.0.14 scripts its neuron helpers with the deprecated torch.jit.script.
warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def exact_float32():
    """Float32 on CUDA without TF32, which torch's convolutions and matmuls use by default,
    so that float32 references compare at float32 precision."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


@pytest.fixture(scope="session")
def benchmark_script():
    """``benchmark_script(name)`` imports ``benchmarks/<name>.py`` (which imports its
    neighbours, as when it runs as a script)."""
    import importlib

    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")

    def load(name: str):
        sys.path.insert(0, folder)
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(folder)

    return load
