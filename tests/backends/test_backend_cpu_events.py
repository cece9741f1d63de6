"""The event-driven CPU kernels compute what the gather and the dense reference compute,
and the numba backend picks them for sparse inputs only."""

from functools import partial
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("numba")

from sj_spatial import SpatialDelayLinear
from sj_spatial.backends import cpu, cpu_schedule, dense

from tests.support.matmul_cases import (
    SHAPES,
    TAPS,
    assert_close,
    assert_equals_dense,
    make_inputs,
    run,
)


@pytest.fixture(params=["serial", "parallel"])
def events_only(request):
    """The numba kernel with every call on the event kernels, on the calling thread or on
    the thread pool (explicit arguments: ``path='events'``, ``parallel``)."""
    parallel = request.param == "parallel"
    return SimpleNamespace(
        delayed_matmul=partial(cpu.delayed_matmul, path="events", parallel=parallel)
    )


def picks_events(x, weight, taps, window, t_out) -> bool:
    """Whether the automatic rule runs this call on the event kernels."""
    dtype = cpu.compute_dtype(x, weight)
    return cpu_schedule.events_to_run(x, weight, taps, window, t_out, dtype) is not None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("taps_mode", TAPS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_gradients_equal_dense(shape, taps_mode, dtype, events_only):
    """Shapes include outputs shorter than the input (events before the first output step),
    taps past the last step, integer delays, pruned synapses and non-binary inputs."""
    args = make_inputs(shape, taps_mode, dtype)
    assert_equals_dense(events_only, dense, args, dtype)
    x, weight, taps, _, window, t_out = args
    events = cpu_schedule.events_to_run(x, weight, taps, window, t_out, dtype, "events")
    assert events is not None  # path='events' always scatters


@pytest.mark.parametrize(
    "needs", [(True, False, False), (False, True, False), (False, False, True), (False, True, True)]
)
def test_any_subset_of_gradients(needs, events_only):
    args = make_inputs((11, 3, 6, 5, 4, 11), "random", torch.float64)
    assert_equals_dense(events_only, dense, args, torch.float64, needs)


def test_all_zero_input_gives_zero_output_and_gradients(events_only):
    x, weight, taps, frac, window, t_out = make_inputs(
        (10, 2, 6, 5, 3, 10), "random", torch.float64
    )
    grad_y = torch.randn(t_out, 2, 5, dtype=torch.float64)
    y, (grad_x, grad_w, grad_f) = run(
        events_only, torch.zeros_like(x), weight, taps, frac, window, t_out, grad_y
    )
    _, (grad_x_ref, _, _) = run(
        dense, torch.zeros_like(x), weight, taps, frac, window, t_out, grad_y
    )
    assert not y.any() and not grad_w.any() and not grad_f.any()
    assert_close(grad_x, grad_x_ref, torch.float64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_spikes_scatter_in_the_weight_dtype(dtype, events_only):
    """Under autocast the input may be float16/bfloat16 (numpy has no bfloat16): the
    events hold it in the weight's float32, and the output is rounded back, exactly as
    for the same spikes in float32."""
    x, *args = make_inputs((10, 2, 6, 5, 3, 10), "random", torch.float32)
    spikes = (x > 0).float()
    y = events_only.delayed_matmul(spikes.to(dtype), *args)
    assert y.dtype == dtype
    assert torch.equal(y, events_only.delayed_matmul(spikes, *args).to(dtype))


def test_the_event_kernels_are_deterministic_whatever_the_thread_count():
    """Each output and each gradient sums its terms in one fixed order, whichever block
    of outputs a task takes: any thread count gives the same bits."""
    events = SimpleNamespace(
        delayed_matmul=partial(cpu.delayed_matmul, path="events", parallel=True)
    )
    inputs = make_inputs((30, 5, 19, 70, 7, 30), "random", torch.float32)
    grad_y = torch.randn(30, 5, 70)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            y, grads = run(events, *inputs, grad_y)
            results.append((y, *grads))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


def test_sparse_inputs_take_the_event_kernels_and_dense_ones_the_gather():
    """The choice at the sizes of a first SHD layer: 2 % spikes scatter, 50 % gather, and a
    call too small for the thread pool never counts its events."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(128, 700, generator=gen) * 0.1
    delays = torch.rand(128, 700, generator=gen) * 20
    taps = delays.floor().long()
    choices = []
    for density in (0.02, 0.5):
        x = (torch.rand(50, 8, 700, generator=gen) < density).float()
        choices.append(picks_events(x, weight, taps, 22, 50))
    x = (torch.rand(5, 1, 700, generator=gen) < 0.02).float()
    choices.append(picks_events(x, weight, taps, 22, 1))  # one step: a recurrent layer's call
    assert choices == [True, False, False]


def test_taps_past_the_sequence_count_against_the_events():
    """The gather skips synapses that reach past the last step; the events cannot, so at
    the same density long delays tip the choice to the gather."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(128, 700, generator=gen)
    x = (torch.rand(50, 8, 700, generator=gen) < 0.02).float()
    choices = []
    for max_delay in (20, 45):
        taps = torch.full((128, 700), max_delay, dtype=torch.int64)
        choices.append(picks_events(x, weight, taps, max_delay + 2, 50))
    assert choices == [True, False]


@pytest.mark.parametrize("path", ["auto", "events", "gather"])
def test_spatial_delay_linear_on_spikes_equals_the_dense_kernel(path):
    """The layer as a user runs it on SHD-like spikes, on each path (the automatic choice
    scatters here): outputs and parameter gradients match the dense reference kernel."""
    torch.manual_seed(0)
    layer = SpatialDelayLinear(700, 64, max_delay=20, step_mode="m").double()
    layer.cpu_path = path
    ref = SpatialDelayLinear(700, 64, max_delay=20, step_mode="m").double()
    ref.cpu_kernel = "dense"
    ref.load_state_dict(layer.state_dict())
    x = (torch.rand(60, 8, 700) < 0.03).double()
    weight, delays = layer.effective_weight(), layer.delays()
    taps = delays.detach().floor().long()
    assert picks_events(x, weight, taps, layer.max_delay + 2, 60)
    y, y_ref = layer(x), ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    for p, p_ref in zip(layer.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-9, atol=1e-10)
