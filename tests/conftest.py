import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
# spikingjelly 0.0.0.0.14 scripts its neuron helpers with the deprecated torch.jit.script.
warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
