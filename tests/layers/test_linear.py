import copy

import pytest
import torch
from spikingjelly.activation_based import functional, layer

from sj_spatial import NeuronPositions, SpatialDelayLinear
from sj_spatial.delays import delays_from_positions
from sj_spatial.functional import delayed_linear

from tests.support.reference import spec_delays, spec_linear

D64 = torch.float64


def make(in_f=6, out_f=4, **kw):
    kw.setdefault("step_mode", "m")
    return SpatialDelayLinear(in_f, out_f, **kw).to(D64)


def spread(module, scale):
    """Spread positions so that delays span several steps (and some clamp)."""
    with torch.no_grad():
        for p in module.modules():
            if isinstance(p, NeuronPositions):
                p.positions.uniform_(-scale, scale)


@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
def test_multi_step_equals_slow_spec_reference(delay_mode):
    layer_ = make(7, 5, max_delay=4, delay_scale=1.3, delay_mode=delay_mode)
    spread(layer_, 2.0)
    x = torch.rand(12, 3, 7, dtype=D64)
    y = layer_(x)
    delays = spec_delays(
        layer_.post_positions.positions.detach(), layer_.pre_positions.positions.detach(), 1.3, 4
    )
    assert (delays == 4).any(), "some delays should be clamped"
    assert ((delays % 1) > 0.05).any(), "some delays should be fractional"
    want = spec_linear(x, layer_.weight.detach(), layer_.bias.detach(), delays, delay_mode)
    assert torch.allclose(y, want, atol=1e-12)


def test_extra_batch_dims_and_no_bias():
    layer_ = make(5, 3, bias=False, max_delay=3)
    spread(layer_, 1.5)
    x = torch.rand(6, 2, 4, 5, dtype=D64)
    y = layer_(x)
    assert y.shape == (6, 2, 4, 3)
    flat = spec_linear(x.reshape(6, 8, 5), layer_.weight.detach(), None, layer_.delays().detach())
    assert torch.allclose(y, flat.reshape(6, 2, 4, 3), atol=1e-12)


@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
def test_gradients_match_finite_differences(delay_mode):
    torch.manual_seed(3)
    T, N, n_in, n_out, max_delay = 7, 2, 4, 3, 3
    x = torch.rand(T, N, n_in, dtype=D64, requires_grad=True)
    w = torch.randn(n_out, n_in, dtype=D64, requires_grad=True)
    b = torch.randn(n_out, dtype=D64, requires_grad=True)
    pre = (torch.rand(n_in, 2, dtype=D64) * 2.4).requires_grad_()
    post = (torch.rand(n_out, 2, dtype=D64) * 2.4).requires_grad_()

    def f(x, w, b, pre, post):
        delays = delays_from_positions(post, pre, 1.0, max_delay)
        return delayed_linear(x, w, b, delays, max_delay, delay_mode=delay_mode)

    if delay_mode == "interpolate":
        assert torch.autograd.gradcheck(f, (x, w, b, pre, post))
    else:
        # Rounded delays are piecewise constant: positions get a straight-through gradient,
        # which is the interpolated synapse's derivative at the rounded delay.
        assert torch.autograd.gradcheck(lambda x, w, b: f(x, w, b, pre, post), (x, w, b))
        delays = delays_from_positions(post, pre, 1.0, max_delay).detach().round()
        d = delays.clone().requires_grad_()
        y = delayed_linear(x.detach(), w.detach(), None, d, max_delay)
        g = torch.randn_like(y)
        (want,) = torch.autograd.grad((y * g).sum(), d)
        out = f(x.detach(), w.detach(), None, pre, post)
        (got_pre,) = torch.autograd.grad((out * g).sum(), pre)
        dd = delays_from_positions(post, pre, 1.0, max_delay)
        (chain,) = torch.autograd.grad((dd * want).sum(), pre)
        assert torch.allclose(got_pre, chain, atol=1e-10)


def test_single_steps_equal_one_multi_step_call_with_gradients():
    multi = make(5, 4, max_delay=3)
    spread(multi, 1.5)
    single = copy.deepcopy(multi)
    single.step_mode = "s"
    x = torch.rand(9, 2, 5, dtype=D64)
    y_m = multi(x)
    y_s = torch.stack([single(x_t) for x_t in x])
    assert torch.allclose(y_m, y_s, atol=1e-12)
    g = torch.randn_like(y_m)
    (y_m * g).sum().backward()
    (y_s * g).sum().backward()
    for (name, p_m), p_s in zip(multi.named_parameters(), single.parameters(), strict=True):
        assert torch.allclose(p_m.grad, p_s.grad, atol=1e-10), name


def test_consecutive_multi_step_calls_continue_the_sequence_until_reset():
    layer_ = make(4, 3, max_delay=5)
    spread(layer_, 2.0)
    x = torch.rand(10, 2, 4, dtype=D64)
    whole = layer_(x)
    functional.reset_net(layer_)
    parts = torch.cat([layer_(x[:3]), layer_(x[3:4]), layer_(x[4:])])
    assert torch.allclose(whole, parts, atol=1e-12)
    functional.reset_net(layer_)
    assert layer_.input_history is None
    fresh = spec_linear(
        x[4:], layer_.weight.detach(), layer_.bias.detach(), layer_.delays().detach()
    )
    assert torch.allclose(layer_(x[4:]), fresh, atol=1e-12)


def test_reset_net_clears_memory_so_a_new_sequence_starts_from_zero():
    layer_ = make(4, 3, max_delay=5, step_mode="s")
    spread(layer_, 2.0)
    x = torch.rand(6, 2, 4, dtype=D64)
    first = torch.stack([layer_(x_t) for x_t in x])
    assert layer_.input_history is not None
    functional.reset_net(layer_)
    assert layer_.input_history is None
    again = torch.stack([layer_(x_t) for x_t in x])
    assert torch.allclose(first, again, atol=1e-12)


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_all_delays_zero_equals_layer_linear(step_mode):
    spatial = SpatialDelayLinear(6, 4, step_mode=step_mode, delay_scale=0.0)
    plain = layer.Linear(6, 4, step_mode=step_mode)
    plain.load_state_dict({"weight": spatial.weight, "bias": spatial.bias})
    x = torch.rand(5, 3, 6)
    if step_mode == "m":
        got = spatial(x)
        want = plain(x)
    else:
        got = torch.stack([spatial(x_t) for x_t in x])
        want = torch.stack([plain(x_t) for x_t in x])
    assert torch.allclose(got, want, atol=1e-6)


def test_shared_positions_receive_the_sum_of_both_layers_gradients():
    hidden = NeuronPositions(4).to(D64)
    fc1 = SpatialDelayLinear(3, 4, step_mode="m", post_positions=hidden, max_delay=4).to(D64)
    fc2 = SpatialDelayLinear(4, 2, step_mode="m", pre_positions=hidden, max_delay=4).to(D64)
    assert fc1.post_positions is fc2.pre_positions
    spread(torch.nn.ModuleList([fc1, fc2]), 1.5)
    x = torch.rand(8, 2, 3, dtype=D64)
    loss1 = fc1(x).square().sum()
    loss2 = fc2(torch.rand(8, 2, 4, dtype=D64)).square().sum()
    (g1,) = torch.autograd.grad(loss1, hidden.positions, retain_graph=True)
    (g2,) = torch.autograd.grad(loss2, hidden.positions, retain_graph=True)
    (loss1 + loss2).backward()
    assert torch.allclose(hidden.positions.grad, g1 + g2, atol=1e-12)
    assert g1.abs().sum() > 0 and g2.abs().sum() > 0
    model = torch.nn.Sequential(fc1, fc2)
    assert sum(p.numel() for p in model.parameters()) == (12 + 4 + 8 + 2) + (3 + 4 + 2) * 2


def test_coincident_positions_give_finite_gradients():
    pos = NeuronPositions(3).to(D64)
    with torch.no_grad():
        pos.positions.zero_()
    fc = SpatialDelayLinear(3, 3, step_mode="m", pre_positions=pos, post_positions=pos).to(D64)
    fc(torch.rand(5, 2, 3, dtype=D64)).sum().backward()
    assert torch.isfinite(pos.positions.grad).all()


def test_state_dict_round_trip_keeps_positions_and_not_the_memory():
    src = make(4, 3, max_delay=3)
    spread(src, 2.0)
    src(torch.rand(5, 2, 4, dtype=D64))  # fills the memory
    state = src.state_dict()
    assert {"weight", "bias", "pre_positions.positions", "post_positions.positions"} == set(state)
    dst = make(4, 3, max_delay=3)
    dst.load_state_dict(state)
    x = torch.rand(6, 2, 4, dtype=D64)
    functional.reset_net(src)
    assert torch.equal(src(x), dst(x))
    assert torch.equal(src.delays(), dst.delays())


def test_delays_and_extra_repr():
    fc = SpatialDelayLinear(3, 2, dim=3, max_delay=7, delay_scale=2.0, step_mode="m")
    d = fc.delays()
    assert d.shape == (2, 3) and (d >= 0).all() and (d <= 7).all()
    text = repr(fc)
    for part in ["step_mode=m", "backend=torch", "max_delay=7", "dim=3", "delay_mode=interpolate"]:
        assert part in text
    assert fc.supported_backends == ("torch", "cupy")


@pytest.mark.parametrize("kernel", ["numba", "dense"])
@pytest.mark.parametrize("shape", [(0, 3, 6), (5, 0, 6), (0, 0, 6), (4, 2, 0, 6)])
def test_empty_sequences_and_batches_give_empty_outputs_like_layer_linear(kernel, shape):
    spatial = SpatialDelayLinear(6, 4, step_mode="m", max_delay=3)
    spatial.cpu_kernel = kernel
    plain = layer.Linear(6, 4, step_mode="m")
    x = torch.rand(shape, requires_grad=True)
    y = spatial(x)
    assert y.shape == plain(x).shape == (*shape[:-1], 4)
    y.sum().backward()  # an empty output belongs to the graph, as nn.Linear's does
    assert x.grad.shape == x.shape
    assert torch.equal(spatial.weight.grad, torch.zeros_like(spatial.weight))


def test_an_empty_chunk_leaves_the_sequence_memory_as_it_was():
    fc = make(delay_scale=1.5)
    spread(fc, 2.0)
    x = torch.rand(7, 2, 6, dtype=D64)
    whole = fc(x)
    functional.reset_net(fc)
    parts = [fc(x[:3]), fc(x[3:3]), fc(x[3:])]
    assert parts[1].shape == (0, 2, 4)
    assert torch.equal(torch.cat(parts), whole)


def test_meta_tensors_give_shapes_like_layer_linear_in_both_step_modes():
    """Models built on the 'meta' device (to trace or size them) run, without values."""
    from spikingjelly.activation_based import neuron

    from sj_spatial import SpatialRecurrentContainer

    with torch.device("meta"):
        sj = layer.Linear(5, 3, step_mode="m")
        spatial = SpatialDelayLinear(5, 3, step_mode="m", max_delay=4)
        single = SpatialDelayLinear(5, 3, step_mode="s", max_delay=4)
        recurrent = SpatialRecurrentContainer(neuron.LIFNode(), 3, step_mode="m", max_delay=4)
    x = torch.empty(7, 2, 5, device="meta")
    y = spatial(x)
    assert y.is_meta and y.shape == sj(x).shape == (7, 2, 3)
    assert single(x[0]).shape == (2, 3)
    out = recurrent(y)
    assert out.is_meta and out.shape == (7, 2, 3)
    out.sum().backward()
    assert spatial.weight.grad.is_meta and spatial.pre_positions.positions.grad.shape == (5, 2)
