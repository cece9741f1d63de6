import copy

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from sj_spatial import NeuronPositions, SpatialRecurrentContainer
from sj_spatial.delays import delays_from_positions
from sj_spatial.functional import delayed_recurrence

from tests.support.reference import spec_recurrence

D64 = torch.float64


def make(sub=None, n=4, **kw):
    kw.setdefault("step_mode", "m")
    kw.setdefault("max_delay", 4)
    rec = SpatialRecurrentContainer(sub if sub is not None else nn.Tanh(), n, **kw).to(D64)
    with torch.no_grad():
        rec.positions.positions.uniform_(-2.0, 2.0)
    return rec


@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
def test_multi_step_equals_slow_spec_reference(delay_mode):
    rec = make(nn.Tanh(), 5, delay_mode=delay_mode, delay_scale=1.7)
    x = torch.randn(11, 3, 5, dtype=D64)
    got = rec(x)
    delays = rec.delays().detach()
    assert (delays == 4).any() and ((delays % 1) > 0.05).any()
    want = spec_recurrence(
        x, torch.tanh, rec.weight.detach(), rec.bias.detach(), delays, delay_mode
    )
    assert torch.allclose(got, want, atol=1e-12)


def test_lif_population_equals_spec_reference():
    lif = neuron.LIFNode(tau=2.0)
    rec = make(lif, 6, max_delay=3)
    with torch.no_grad():
        rec.weight.mul_(4)
    x = torch.rand(15, 2, 6, dtype=D64) * 2
    got = rec(x)
    assert 0 < got.mean() < 1, "the population should spike sometimes"
    ref_lif = neuron.LIFNode(tau=2.0)
    want = spec_recurrence(
        x, ref_lif, rec.weight.detach(), rec.bias.detach(), rec.delays().detach()
    )
    assert torch.equal(got, want)


def test_gradients_match_finite_differences():
    torch.manual_seed(1)
    T, N, n, max_delay = 6, 2, 3, 3
    x = torch.randn(T, N, n, dtype=D64, requires_grad=True)
    w = torch.randn(n, n, dtype=D64, requires_grad=True)
    b = torch.randn(n, dtype=D64, requires_grad=True)
    pos = (torch.rand(n, 2, dtype=D64) * 2.5).requires_grad_()

    def f(x, w, b, pos):
        delays = delays_from_positions(pos, pos, 1.0, max_delay)
        return delayed_recurrence(x, torch.tanh, w, b, delays, max_delay)[0]

    assert torch.autograd.gradcheck(f, (x, w, b, pos))


def test_single_steps_equal_one_multi_step_call_and_reset_net_clears():
    multi = make(nn.Tanh(), 4)
    single = copy.deepcopy(multi)
    single.step_mode = "s"
    x = torch.randn(9, 2, 4, dtype=D64)
    y_m = multi(x)
    y_s = torch.stack([single(x_t) for x_t in x])
    assert torch.allclose(y_m, y_s, atol=1e-12)
    g = torch.randn_like(y_m)
    (y_m * g).sum().backward()
    (y_s * g).sum().backward()
    for (name, p_m), p_s in zip(multi.named_parameters(), single.parameters(), strict=True):
        assert torch.allclose(p_m.grad, p_s.grad, atol=1e-10), name
    assert single.output_history is not None
    functional.reset_net(single)
    assert single.output_history is None
    assert torch.allclose(torch.stack([single(x_t) for x_t in x]), y_m, atol=1e-12)


def test_reset_net_resets_the_sub_module_too():
    rec = make(neuron.LIFNode(), 4)
    x = torch.rand(5, 2, 4, dtype=D64) * 3
    first = rec(x)
    assert isinstance(rec.sub_module.v, torch.Tensor)
    functional.reset_net(rec)
    assert rec.output_history is None and rec.sub_module.v == 0.0
    assert torch.equal(rec(x), first)


def test_all_delays_zero_equals_plain_loop_and_linear_recurrent_container():
    # The plain loop's matmul (BLAS) and the delay kernel sum in different orders; in
    # float64 their difference (~1e-16) can flip a spike only if a membrane potential lies
    # that close to the threshold, so the spike trains are compared exactly.
    n = 5
    rec = make(neuron.LIFNode(), n, delay_scale=0.0)
    with torch.no_grad():
        rec.weight.mul_(3)
    x = torch.rand(12, 3, n, dtype=D64) * 2
    got = rec(x)
    assert got.sum() > 0

    lif = neuron.LIFNode()
    s, plain = torch.zeros(3, n, dtype=D64), []
    for x_t in x:
        s = lif(x_t + s @ rec.weight.T + rec.bias)
        plain.append(s)
    assert torch.equal(got, torch.stack(plain))

    sj = layer.LinearRecurrentContainer(neuron.LIFNode(), n, n, step_mode="m").to(D64)
    with torch.no_grad():
        sj.rc.weight.copy_(torch.cat([torch.eye(n), rec.weight], dim=1))
        sj.rc.bias.copy_(rec.bias)
    assert torch.allclose(got, sj(x))


def test_state_dict_holds_weight_bias_positions_and_sub_module_not_memory():
    rec = make(neuron.LIFNode(), 3)
    rec(torch.rand(4, 2, 3, dtype=D64))
    assert set(rec.state_dict()) == {"weight", "bias", "positions.positions"}
    other = make(neuron.LIFNode(), 3)
    other.load_state_dict(rec.state_dict())
    assert torch.equal(other.delays(), rec.delays())


def test_sub_module_in_multi_step_mode_is_rejected():
    with pytest.raises(ValueError, match="sub_module.*step_mode='m'"):
        SpatialRecurrentContainer(neuron.LIFNode(step_mode="m"), 4)


def test_shared_positions_between_feedforward_and_recurrent():
    from sj_spatial import SpatialDelayLinear

    pos = NeuronPositions(4)
    fc = SpatialDelayLinear(3, 4, step_mode="m", post_positions=pos)
    rec = SpatialRecurrentContainer(nn.Tanh(), 4, step_mode="m", positions=pos)
    rec(fc(torch.rand(5, 2, 3))).sum().backward()
    assert rec.positions is fc.post_positions
    assert pos.positions.grad is not None and pos.positions.grad.abs().sum() > 0
    assert "max_delay=25" in repr(rec) and "num_features=4" in repr(rec)


def test_an_empty_sequence_gives_an_empty_output_and_keeps_the_memory():
    rec = make(neuron.LIFNode(tau=2.0), 4, delay_scale=1.3)
    x = torch.rand(9, 2, 4, dtype=D64) * 2
    whole = rec(x)
    functional.reset_net(rec)
    assert rec(x[:0]).shape == (0, 2, 4)  # first call
    parts = [rec(x[:4]), rec(x[4:4]), rec(x[4:])]
    assert parts[1].shape == (0, 2, 4)
    assert torch.equal(torch.cat(parts), whole)


def _rsnn():
    """The order of spikingjelly's rsnn examples: build in single-step mode, then set 'm'.

    No BLAS layer in front, so that batches of different sizes run the same arithmetic."""
    net = nn.Sequential(
        nn.Identity(),
        SpatialRecurrentContainer(neuron.LIFNode(tau=2.0), 4, max_delay=3, delay_scale=2.0),
    )
    with torch.no_grad():
        net[1].positions.positions.uniform_(-1.0, 1.0)
    return net


def test_set_step_mode_leaves_the_sub_module_alone_like_linear_recurrent_container():
    net = _rsnn()
    x = torch.rand(6, 4, 4) * 3
    want = torch.stack([net(x_t) for x_t in x])  # single steps
    functional.reset_net(net)
    functional.set_step_mode(net, "m")
    assert net[1].step_mode == "m" and net[1].sub_module.step_mode == "s"
    sj = layer.LinearRecurrentContainer(neuron.LIFNode(), 4, 4)
    functional.set_step_mode(sj, "m")
    assert sj.sub_module.step_mode == net[1].sub_module.step_mode  # the same rule as SJ's
    got = net(x)
    assert torch.equal(got, want)
    # One sample's output does not depend on the others in its batch.
    functional.reset_net(net)
    assert torch.equal(net(x[:, 1:2]), want[:, 1:2])
    functional.reset_net(net)
    functional.set_step_mode(net, "s")
    assert torch.equal(torch.stack([net(x_t) for x_t in x]), want)


def test_a_sub_module_switched_to_multi_step_later_is_named_at_forward():
    net = _rsnn()
    cell = nn.Sequential(nn.Identity(), neuron.LIFNode())
    rec = SpatialRecurrentContainer(cell, 4, step_mode="m")
    for module, inner, where in (
        (net[1], net[1].sub_module, "sub_module"),
        (rec, cell[1], "sub_module.1"),
    ):
        inner.step_mode = "m"
        with pytest.raises(
            ValueError, match=rf"{where} \(LIFNode\).*step_mode='m'.*{where}\.step_mode = 's'"
        ):
            module(torch.rand(3, 2, 4) if module.step_mode == "m" else torch.rand(2, 4))
