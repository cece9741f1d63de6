import math

import pytest
import torch
from spikingjelly.activation_based import functional, neuron

from sj_spatial import SpatialRecurrentContainer
from sj_spatial.models import ExponentialSynapse, LeakyIntegrator, recurrent_shd_model


def test_exponential_synapse_and_leaky_integrator_equations():
    x = torch.rand(7, 2, 3)
    syn, out = ExponentialSynapse(tau=4.0, step_mode="m"), LeakyIntegrator(tau=4.0)
    d = math.exp(-1 / 4.0)
    i_ref, v_ref, i_want, v_want = torch.zeros(2, 3), torch.zeros(2, 3), [], []
    for x_t in x:
        i_ref = d * i_ref + x_t
        v_ref = d * v_ref + (1 - d) * x_t
        i_want.append(i_ref)
        v_want.append(v_ref)
    assert torch.allclose(syn(x), torch.stack(i_want))
    assert torch.allclose(out(x), torch.stack(v_want))
    functional.reset_net(syn)
    syn.step_mode = "s"
    assert torch.allclose(torch.stack([syn(x_t) for x_t in x]), torch.stack(i_want))


def test_recurrent_shd_model_layout_and_time_constants():
    model = recurrent_shd_model(in_features=30, hidden=12, classes=4, dt=1e-3, max_delay=7)
    rec = model[1]
    assert isinstance(rec, SpatialRecurrentContainer) and rec.max_delay == 7
    syn, lif = rec.sub_module
    assert isinstance(lif, neuron.LIFNode) and lif.tau == pytest.approx(20.0)
    assert syn.tau == pytest.approx(5.0) and model[3].tau == pytest.approx(20.0)
    y = model(torch.rand(9, 5, 30))
    assert y.shape == (9, 5, 4)
    bare = recurrent_shd_model(in_features=30, hidden=12, classes=4, dt=10e-3, tau_syn=0)
    assert isinstance(bare[1].sub_module, neuron.LIFNode) and bare[1].sub_module.tau == 2.0


def test_bad_time_constants_are_rejected():
    with pytest.raises(ValueError, match="dt"):
        recurrent_shd_model(dt=0)
    with pytest.raises(ValueError, match="tau"):
        LeakyIntegrator(tau=-1.0)
    with pytest.raises(ValueError, match=r"tau_mem / dt must be > 1 .* 0.4"):
        recurrent_shd_model(dt=0.05)


def test_detach_net_keeps_the_graph_of_a_leaky_output_the_caller_holds():
    readout = LeakyIntegrator(tau=4.0, step_mode="s")
    x = torch.ones(2, 3, requires_grad=True)
    y = readout(x)
    functional.detach_net(readout)
    assert y.requires_grad and not readout.state.requires_grad
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 1 - readout.decay))
