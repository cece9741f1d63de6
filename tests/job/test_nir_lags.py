"""The lag-binned form of delayed synapses (the NIR convention) and the delay budget.

Nothing here needs nir: these are the functions the exporter builds its graphs from.
"""

import pytest
import torch
from spikingjelly.activation_based import neuron
from torch import nn

from sj_spatial import NeuronPositions, SpatialDelayLinear, SpatialRecurrentContainer
from sj_spatial.baselines import FreeDelayLinear
from sj_spatial.nir_exchange import DelayBudget, DelayBudgetError, bin_by_lag, deployed_lags
from sj_spatial.nir_exchange.lags import apply_budget, check_budget_options

from tests.support.reference import spec_linear

D64 = torch.float64


def _lagged(bins, x):
    """``y[t] = sum_L W_L x[t - L]`` of the bins, directly."""
    y = torch.zeros(*x.shape[:-1], bins.weights.shape[1], dtype=x.dtype)
    for lag, weight in zip(bins.lags, bins.weights, strict=True):
        y[lag:] += x[: x.shape[0] - lag] @ weight.T
    return y


@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
def test_the_bins_compute_the_spec_formula(delay_mode):
    weight = torch.randn(5, 7, dtype=D64)
    delays = torch.rand(5, 7, dtype=D64) * 6
    delays[0, :3] = torch.tensor([0.0, 2.0, 6.0])  # whole delays: no second tap
    x = torch.randn(12, 2, 7, dtype=D64)
    bins = bin_by_lag(weight, delays, delay_mode)
    want = spec_linear(x, weight, None, delays, delay_mode)
    # float64 sums of the same terms in another order
    torch.testing.assert_close(_lagged(bins, x), want, rtol=0, atol=1e-12)
    assert list(bins.lags) == sorted(set(bins.lags)) and max(bins.lags) <= 7


def test_each_synapse_appears_with_near_at_k_and_far_at_k_plus_1():
    # Exactly representable weights and fractions: the bins hold the coefficients exactly.
    weight = torch.tensor([[1.0, 0.5, -2.0], [0.25, 4.0, -1.0]])
    delays = torch.tensor([[0.0, 1.5, 2.25], [3.0, 0.5, 1.0]])
    bins = bin_by_lag(weight, delays, "interpolate")
    assert bins.lags == (0, 1, 2, 3)
    want = torch.zeros(4, 2, 3)
    want[0, 0, 0], want[0, 1, 1], want[1, 1, 1] = 1.0, 2.0, 2.0
    want[1, 0, 1], want[2, 0, 1] = 0.25, 0.25
    want[1, 1, 2] = -1.0
    want[2, 0, 2], want[3, 0, 2] = -1.5, -0.5
    want[3, 1, 0] = 0.25
    assert torch.equal(bins.weights, want)
    rounded = bin_by_lag(weight, delays, "round")  # half to even: 0.5 -> 0, 1.5 -> 2
    assert rounded.lags == (0, 1, 2, 3)
    assert torch.equal(rounded.weights.sum(0), weight)


def test_a_fully_pruned_matrix_is_one_zero_bin_at_lag_0():
    bins = bin_by_lag(torch.zeros(2, 3), torch.full((2, 3), 4.5), "interpolate")
    assert bins.lags == (0,) and not bins.weights.any()


def test_deployed_lags_are_the_longest_tap_with_a_nonzero_coefficient():
    delays = torch.tensor([[0.0, 0.5, 1.0, 1.5, 2.25, 3.0]])
    weight = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])  # the last synapse is pruned
    assert deployed_lags(weight, delays, "interpolate").tolist() == [[0, 1, 1, 2, 3, -1]]
    assert deployed_lags(weight, delays, "round").tolist() == [[0, 0, 1, 2, 2, -1]]


def _net(delay_mode="interpolate", max_delay=25, delay_scale=6.0):
    torch.manual_seed(3)
    hidden = NeuronPositions(8)
    return nn.Sequential(
        SpatialDelayLinear(
            5, 8, step_mode="m", post_positions=hidden, max_delay=max_delay,
            delay_scale=delay_scale, delay_mode=delay_mode,
        ),
        SpatialRecurrentContainer(
            neuron.LIFNode(), 8, step_mode="m", positions=hidden, max_delay=max_delay,
            delay_scale=delay_scale, delay_mode=delay_mode,
        ),
    )  # fmt: skip


def test_a_budget_that_is_too_small_names_the_count_and_the_largest_delay():
    net = _net()
    lags = {n: deployed_lags(m.effective_weight(), m.delays(), "interpolate") for n, m in
            (("0", net[0]), ("1", net[1]))}  # fmt: skip
    counts = {name: int((lag > 4).sum()) for name, lag in lags.items()}
    largest = max(float(m.delays().detach().max()) for m in net)
    with pytest.raises(DelayBudgetError) as exc:
        apply_budget(net, DelayBudget(4))
    message = str(exc.value)
    total = 5 * 8 + 8 * 8
    assert message.startswith(f"max_delay_steps=4: {sum(counts.values())} of {total} synapses")
    assert f"largest {largest:.2f} steps" in message and "clamp=True" in message
    assert exc.value.layers == {k: v for k, v in counts.items() if v}
    assert isinstance(exc.value, ValueError)
    assert apply_budget(net, DelayBudget(4, clamp=True)) == exc.value.layers


@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
def test_a_model_trained_with_max_delay_at_the_bound_always_fits(delay_mode):
    net = _net(delay_mode, max_delay=4, delay_scale=6.0)  # many delays at the clamp
    assert float(net[0].delays().detach().max()) == 4.0
    assert apply_budget(net, DelayBudget(4)) == {}


def test_pruned_synapses_need_no_delay():
    layer = FreeDelayLinear(3, 2, max_delay=9)
    with torch.no_grad():
        layer.delay.fill_(8.5)
        layer.weight.zero_()
    assert apply_budget(layer, DelayBudget(2)) == {}


@pytest.mark.parametrize(
    "options, error, match",
    [
        ((-1, False), ValueError, "max_delay_steps must be >= 0, got -1"),
        ((2.5, False), TypeError, "max_delay_steps must be an int, got float 2.5"),
        ((None, True), ValueError, "clamp=True needs max_delay_steps"),
        ((3, "yes"), TypeError, "clamp must be a bool"),
    ],
)
def test_budget_options_are_checked(options, error, match):
    with pytest.raises(error, match=match):
        check_budget_options(*options)
