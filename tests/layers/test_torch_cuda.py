"""backend='torch' on a CUDA device computes what it computes on the CPU (needs a GPU)."""

import copy

import pytest
import torch
from torch import nn

from sj_spatial import SpatialDelayLinear, SpatialRecurrentContainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_linear_and_recurrent_on_cuda_equal_cpu(step_mode):
    fc = SpatialDelayLinear(7, 5, step_mode=step_mode, max_delay=4).double()
    rec = SpatialRecurrentContainer(nn.Tanh(), 5, step_mode=step_mode, max_delay=4).double()
    for p in (fc.pre_positions, fc.post_positions, rec.positions):
        with torch.no_grad():
            p.positions.uniform_(-2, 2)
    cpu = nn.Sequential(fc, rec)
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.rand(9, 3, 7, dtype=torch.float64)
    outs = []
    for model, xx in ((cpu, x), (gpu, x.cuda())):
        y = model(xx) if step_mode == "m" else torch.stack([model(x_t) for x_t in xx])
        y.square().sum().backward()
        outs.append((y.cpu(), [p.grad.cpu() for p in model.parameters()]))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-10)
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        assert torch.allclose(a, b, atol=1e-9)
