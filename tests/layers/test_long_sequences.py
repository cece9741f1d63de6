import copy

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import base, functional, layer, neuron
from torch import nn

from sj_spatial import (
    SpatialDelayLinear,
    SpatialRecurrentContainer,
    checkpointed_bptt,
    chunked_forward,
    truncated_bptt,
)
from sj_spatial.functional import delayed_linear, delayed_recurrence
from sj_spatial.models import recurrent_shd_model
from sj_spatial.training import chunk_bounds

D64 = torch.float64
T = 30


def paper_model() -> nn.Module:
    """The paper's recurrent model, small, in float64, with neurons that spike."""
    model = recurrent_shd_model(12, 10, 3, max_delay=6, delay_scale=3.0).to(D64)
    with torch.no_grad():
        model[0].weight.mul_(3.0)
        model[1].weight.mul_(2.0)
    return model


def spikes(t=T, batch=2, features=12) -> torch.Tensor:
    return (torch.rand(t, batch, features) < 0.3).to(D64)


def spatial_net(step_mode: str) -> nn.Module:
    """SpatialDelayLinear -> recurrent LIF population, all in ``step_mode``."""
    lin = SpatialDelayLinear(6, 5, step_mode=step_mode, max_delay=4, delay_scale=2.0)
    rec = SpatialRecurrentContainer(
        neuron.LIFNode(tau=4.0), 5, step_mode=step_mode, max_delay=4, delay_scale=2.0
    )
    net = nn.Sequential(lin, rec).to(D64)
    with torch.no_grad():
        lin.weight.mul_(4.0)
    return net


def with_step_mode(net: nn.Module, step_mode: str) -> nn.Module:
    """A copy of ``spatial_net`` whose two spatial layers run in ``step_mode``."""
    other = copy.deepcopy(net)
    other[0].step_mode = other[1].step_mode = step_mode
    return other


def cross_entropy_of_mean(y):
    return lambda out: F.cross_entropy(out.mean(0), y)


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_grads_close(a: dict, b: dict, atol: float = 1e-10) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)


def full_bptt(model, x, loss_fn, step_mode="m"):
    functional.reset_net(model)
    out = model(x) if step_mode == "m" else torch.stack([model(x_t) for x_t in x])
    loss = loss_fn(out)
    loss.backward()
    return loss.detach(), out.detach()


# --- detaching the layers' memories -------------------------------------------------------


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_detach_net_cuts_memories_out_of_place_and_keeps_values(step_mode):
    net = spatial_net(step_mode)
    x = spikes(7, features=6).requires_grad_(True)
    out = net(x) if step_mode == "m" else torch.stack([net(x_t) for x_t in x[:1]])
    before = [net[0].input_history.clone(), net[1].output_history.clone()]
    assert net[0].input_history.requires_grad and net[1].output_history.requires_grad
    functional.detach_net(net)
    after = [net[0].input_history, net[1].output_history]
    assert not any(m.requires_grad for m in after)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    # the memories may be views of the caller's tensors: those keep their graph
    assert out.requires_grad and out.grad_fn is not None
    out.sum().backward()
    assert net[0].weight.grad.abs().sum() > 0


class ViewState(base.MemoryModule):
    """``v[t] = v[t-1] / 2 + x[t]``, ``tanh(v)``, keeping ``v`` as a view (as the fused CUDA
    loop leaves a LIF neuron's ``v``)."""

    def __init__(self):
        super().__init__()
        self.step_mode = "s"
        self.register_memory("v", 0.0)

    def single_step_forward(self, x):
        v = self.v / 2 + x
        self.v = v.reshape(v.shape)
        return torch.tanh(v)

    def multi_step_forward(self, x_seq):
        return torch.stack([self.single_step_forward(x) for x in x_seq])


def test_detach_net_cuts_view_memories_of_the_recurrent_sub_module():
    rec = SpatialRecurrentContainer(ViewState(), 3, step_mode="m", max_delay=2).to(D64)
    x = torch.randn(9, 2, 3, dtype=D64)
    want = rec(x)
    functional.reset_net(rec)
    got = chunked_forward(rec, x, 2)
    assert rec.sub_module.v._is_view() is False and not rec.sub_module.v.requires_grad
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("step_mode", ["s", "m"])
@pytest.mark.parametrize("chunk", [1, 3, 4, T])
def test_chunked_outputs_equal_one_pass(step_mode, chunk):
    net = spatial_net("m")
    x = spikes(T, features=6)
    want = net(x)
    assert want.sum() > 0
    functional.reset_net(net)
    got = chunked_forward(with_step_mode(net, step_mode), x, chunk, step_mode=step_mode)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 25])
def test_chunked_outputs_of_the_paper_model_equal_one_pass(chunk):
    model = paper_model()
    x = spikes()
    want = model(x)
    functional.reset_net(model)
    torch.testing.assert_close(chunked_forward(model, x, chunk), want, rtol=0, atol=1e-12)


# --- truncated_bptt -----------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [T, T + 5, 1000])
def test_chunk_covering_the_sequence_is_plain_bptt(chunk):
    model = paper_model()
    ref = copy.deepcopy(model)
    x, y = spikes(), torch.tensor([0, 2])
    loss, out = truncated_bptt(model, x, cross_entropy_of_mean(y), chunk)
    want_loss, want_out = full_bptt(ref, x, cross_entropy_of_mean(y))
    torch.testing.assert_close(loss, want_loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(out, want_out, rtol=0, atol=1e-12)
    assert_grads_close(grads(model), grads(ref), atol=1e-12)
    assert grads(model)["1.positions.positions"].abs().sum() > 0


def handmade_truncated_bptt(model, x, loss_fn, chunk):
    """The paper model's truncated gradient written out: the functional recurrence per
    chunk, with every memory detached by hand at the chunk boundaries."""
    lin_in, rec, lin_out, readout = model
    synapse, lif = rec.sub_module
    functional.reset_net(model)
    history, outputs = None, []
    for start in range(0, x.shape[0], chunk):
        s, history, _ = delayed_recurrence(
            lin_in(x[start : start + chunk]),
            rec.sub_module,
            rec.effective_weight(),
            rec.bias,
            rec.delays(),
            rec.max_delay,
            history=history,
        )
        outputs.append(readout(lin_out(s)))
        history = history.detach()
        synapse.state, lif.v = synapse.state.detach(), lif.v.detach()
        readout.state = readout.state.detach()
    loss = loss_fn(torch.cat(outputs))
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("chunk", [1, 4, 10, 13])
def test_short_chunks_give_the_truncated_gradient(chunk):
    model = paper_model()
    ref, full = copy.deepcopy(model), copy.deepcopy(model)
    x, y = spikes(), torch.tensor([1, 2])
    loss, _ = truncated_bptt(model, x, cross_entropy_of_mean(y), chunk)
    want_loss = handmade_truncated_bptt(ref, x, cross_entropy_of_mean(y), chunk)
    full_loss, _ = full_bptt(full, x, cross_entropy_of_mean(y))
    # the forward pass is not truncated: the loss is the full sequence's loss
    torch.testing.assert_close(loss, want_loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(loss, full_loss, rtol=0, atol=1e-12)
    assert_grads_close(grads(model), grads(ref))
    # ... but the gradient is: it differs from full BPTT
    diff = grads(model)["1.weight"] - grads(full)["1.weight"]
    assert diff.abs().max() > 1e-6


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_gradients_stop_at_the_chunk_boundary(step_mode):
    net = with_step_mode(spatial_net("m"), step_mode)
    x = spikes(12, features=6).requires_grad_(True)

    def last_chunk_loss(out):
        return out[8:].sum()

    truncated_bptt(net, x, last_chunk_loss, 4, step_mode=step_mode)
    assert torch.equal(x.grad[:8], torch.zeros_like(x.grad[:8]))
    assert x.grad[8:].abs().sum() > 0
    x.grad = None
    full_bptt(net, x, last_chunk_loss, step_mode)
    assert x.grad[:8].abs().sum() > 0


@pytest.mark.parametrize("chunk", [1, 5])
def test_truncated_gradient_of_a_delay_line_equals_the_formula_with_detached_past(chunk):
    lin = SpatialDelayLinear(4, 3, step_mode="m", max_delay=3, delay_scale=2.0).to(D64)
    ref = copy.deepcopy(lin)
    x = torch.randn(11, 2, 4, dtype=D64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    target = torch.randn(11, 2, 3, dtype=D64)

    def loss_fn(out):
        return ((out - target) ** 2).sum()

    truncated_bptt(lin, x, loss_fn, chunk)
    pieces = []
    for start, stop in chunk_bounds(11, chunk):
        past_and_chunk = torch.cat((x_ref[:start].detach(), x_ref[start:stop]))
        pieces.append(
            delayed_linear(
                past_and_chunk, ref.weight, ref.bias, ref.delays(), 3, t_out=stop - start
            )
        )
    loss_fn(torch.cat(pieces)).backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-12)
    assert_grads_close(grads(lin), grads(ref), atol=1e-12)


def test_single_step_and_multi_step_models_get_the_same_truncated_gradient():
    net_m = spatial_net("m")
    net_s = with_step_mode(net_m, "s")
    x, target = spikes(14, features=6), torch.rand(14, 2, 5, dtype=D64)

    def loss_fn(out):
        return ((out.mean(0) - target.mean(0)) ** 2).sum()

    loss_m, out_m = truncated_bptt(net_m, x, loss_fn, 5, step_mode="m")
    loss_s, out_s = truncated_bptt(net_s, x, loss_fn, 5, step_mode="s")
    torch.testing.assert_close(out_s, out_m, rtol=0, atol=1e-12)
    torch.testing.assert_close(loss_s, loss_m, rtol=0, atol=1e-12)
    assert_grads_close(grads(net_s), grads(net_m))


def test_memoryless_model_gets_the_exact_gradient_from_short_chunks():
    model = layer.Linear(5, 3, step_mode="m").to(D64)
    ref = copy.deepcopy(model)
    x, y = torch.randn(10, 4, 5, dtype=D64), torch.tensor([0, 1, 2, 0])
    truncated_bptt(model, x, cross_entropy_of_mean(y), 3)
    full_bptt(ref, x, cross_entropy_of_mean(y))
    assert_grads_close(grads(model), grads(ref), atol=1e-12)


def test_both_passes_see_the_same_random_numbers():
    model = nn.Sequential(layer.Linear(5, 3, step_mode="m"), nn.Dropout(0.5)).to(D64)
    ref = copy.deepcopy(model)
    x, y = torch.randn(10, 4, 5, dtype=D64), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(7)
    loss, out = truncated_bptt(model, x, cross_entropy_of_mean(y), 4)
    torch.manual_seed(7)
    want_out = chunked_forward(ref, x, 4)
    want_loss = cross_entropy_of_mean(y)(want_out)
    want_loss.backward()
    assert (out == 0).any()
    torch.testing.assert_close(out, want_out.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(loss, want_loss.detach(), rtol=0, atol=1e-12)
    assert_grads_close(grads(model), grads(ref), atol=1e-12)


def test_gradients_accumulate_and_memories_end_detached():
    model = paper_model()
    x, y = spikes(), torch.tensor([0, 1])
    truncated_bptt(model, x, cross_entropy_of_mean(y), 8)
    once = grads(model)
    truncated_bptt(model, x, cross_entropy_of_mean(y), 8)
    twice = grads(model)
    assert_grads_close({k: 2 * v for k, v in once.items()}, twice)
    assert not model[1].output_history.requires_grad
    assert not model[1].sub_module[1].v.requires_grad


# --- checkpointed_bptt --------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 4, 7, 13, T])
def test_checkpointed_bptt_gives_the_full_bptt_gradient(chunk):
    model = paper_model()
    ref = copy.deepcopy(model)
    x, y = spikes().requires_grad_(True), torch.tensor([0, 2])
    x_ref = x.detach().clone().requires_grad_(True)
    loss, out = checkpointed_bptt(model, x, cross_entropy_of_mean(y), chunk)
    want_loss, want_out = full_bptt(ref, x_ref, cross_entropy_of_mean(y))
    torch.testing.assert_close(loss, want_loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(out, want_out, rtol=0, atol=1e-12)
    assert_grads_close(grads(model), grads(ref), atol=1e-12)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-12)
    assert x.grad[0].abs().sum() > 0
    # the memories end as after the whole sequence, without a graph
    for got, want in (
        (model[1].output_history, ref[1].output_history),
        (model[3].state, ref[3].state),
    ):
        torch.testing.assert_close(got, want.detach(), rtol=0, atol=1e-12)
        assert not got.requires_grad


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_checkpointed_bptt_in_both_step_modes(step_mode):
    net = with_step_mode(spatial_net("m"), step_mode)
    ref = copy.deepcopy(net)
    x = spikes(14, features=6).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)

    def loss_fn(out):
        return (out.mean(0) ** 2).sum() + out[-1].sum()

    checkpointed_bptt(net, x, loss_fn, 4, step_mode=step_mode)
    full_bptt(ref, x_ref, loss_fn, step_mode)
    assert_grads_close(grads(net), grads(ref), atol=1e-12)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-12)


def test_checkpointed_bptt_replays_the_random_numbers():
    model = nn.Sequential(layer.Linear(5, 3, step_mode="m"), nn.Dropout(0.5)).to(D64)
    ref = copy.deepcopy(model)
    x, y = torch.randn(10, 4, 5, dtype=D64), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(7)
    loss, out = checkpointed_bptt(model, x, cross_entropy_of_mean(y), 4)
    after = torch.get_rng_state()
    torch.manual_seed(7)
    want_out = chunked_forward(ref, x, 4)
    assert torch.equal(after, torch.get_rng_state())
    cross_entropy_of_mean(y)(want_out).backward()
    assert (out == 0).any()
    torch.testing.assert_close(out, want_out.detach(), rtol=0, atol=1e-12)
    assert_grads_close(grads(model), grads(ref), atol=1e-12)


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [0, -3])
def test_chunk_must_be_positive(chunk):
    with pytest.raises(ValueError, match=rf"chunk must be >= 1, got {chunk}"):
        truncated_bptt(paper_model(), spikes(), lambda out: out.sum(), chunk)
    with pytest.raises(ValueError, match=rf"chunk must be >= 1, got {chunk}"):
        checkpointed_bptt(paper_model(), spikes(), lambda out: out.sum(), chunk)
    with pytest.raises(ValueError, match="chunk"):
        chunked_forward(paper_model(), spikes(), chunk)


@pytest.mark.parametrize("chunk", [2.5, True, "10"])
def test_chunk_must_be_an_int(chunk):
    with pytest.raises(TypeError, match="chunk must be an int"):
        truncated_bptt(paper_model(), spikes(), lambda out: out.sum(), chunk)
    with pytest.raises(TypeError, match="chunk must be an int"):
        checkpointed_bptt(paper_model(), spikes(), lambda out: out.sum(), chunk)


def test_bad_arguments_are_named():
    model, x = paper_model(), spikes()
    with pytest.raises(ValueError, match="step_mode"):
        truncated_bptt(model, x, lambda out: out.sum(), 4, step_mode="x")
    with pytest.raises(ValueError, match=r"x_seq .* T >= 1, got shape \(0, 2, 12\)"):
        truncated_bptt(model, x[:0], lambda out: out.sum(), 4)
    with pytest.raises(TypeError, match="x_seq must be a torch.Tensor"):
        chunked_forward(model, x.tolist(), 4)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        truncated_bptt(model, x, "cross_entropy", 4)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        checkpointed_bptt(model, x, "cross_entropy", 4)
    with pytest.raises(ValueError, match="step_mode"):
        checkpointed_bptt(model, x, lambda out: out.sum(), 4, step_mode="multi")
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar tensor, got \(2, 3\)"):
        truncated_bptt(model, x, lambda out: out.mean(0), 4)
