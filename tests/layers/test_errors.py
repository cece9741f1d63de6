"""Bad arguments and inputs raise ValueError/TypeError naming the argument and the value."""

import pytest
import torch
from torch import nn

from sj_spatial import NeuronPositions, SpatialDelayLinear, SpatialRecurrentContainer


def raises(exc, *words):
    class _Ctx:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *a):
            out = self.ctx.__exit__(*a)
            for word in words:
                assert word in str(self.info.value), (word, str(self.info.value))
            return out

    return _Ctx()


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(step_mode="x"), ValueError, ["step_mode", "'x'"]),
        (dict(backend="triton"), ValueError, ["backend", "'triton'"]),
        (dict(delay_mode="nearest"), ValueError, ["delay_mode", "'nearest'"]),
        (dict(max_delay=-1), ValueError, ["max_delay", "-1"]),
        (dict(max_delay=2.5), TypeError, ["max_delay", "2.5"]),
        (dict(delay_scale=-1.0), ValueError, ["delay_scale", "-1.0"]),
        (dict(dim=0), ValueError, ["dim", "0"]),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, words):
    with raises(exc, *words):
        SpatialDelayLinear(3, 2, **kwargs)
    with raises(exc, *words):
        SpatialRecurrentContainer(nn.Identity(), 3, **kwargs)


def test_bad_feature_counts():
    with raises(ValueError, "in_features", "0"):
        SpatialDelayLinear(0, 2)
    with raises(TypeError, "num_features", "'4'"):
        SpatialRecurrentContainer(nn.Identity(), "4")


def test_mismatched_shared_positions():
    with raises(ValueError, "pre_positions", "dim=2", "dim=3"):
        SpatialDelayLinear(3, 2, pre_positions=NeuronPositions(3, dim=3))
    with raises(ValueError, "post_positions", "2 neurons", "5"):
        SpatialDelayLinear(3, 2, post_positions=NeuronPositions(5))
    with raises(ValueError, "positions", "dim=3", "dim=2"):
        SpatialRecurrentContainer(nn.Identity(), 3, dim=3, positions=NeuronPositions(3))
    with raises(TypeError, "pre_positions", "Tensor"):
        SpatialDelayLinear(3, 2, pre_positions=torch.zeros(3, 2))


def test_cupy_backend_without_gpu_names_what_is_missing():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the cupy backend may be usable here")
    with raises(ValueError, "backend='cupy'", "unavailable"):
        SpatialDelayLinear(3, 2, backend="cupy")


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_bad_inputs(step_mode):
    fc = SpatialDelayLinear(3, 2, step_mode=step_mode)
    rec = SpatialRecurrentContainer(nn.Identity(), 3, step_mode=step_mode)
    name = "x" if step_mode == "s" else "x_seq"
    good = torch.rand(4, 3) if step_mode == "s" else torch.rand(5, 4, 3)
    for module in (fc, rec):
        with raises(ValueError, name, "3 features", "(4, 5)" if step_mode == "s" else "(5, 4, 5)"):
            module(torch.rand(*good.shape[:-1], 5))
        with raises(TypeError, name, "torch.int64"):
            module(torch.ones(good.shape, dtype=torch.long))
        with raises(TypeError, name, "list"):
            module([[0.0, 1.0, 2.0]])
        wrong_rank = torch.rand(3) if step_mode == "m" else torch.tensor(1.0)
        with raises(ValueError, name, step_mode, str(tuple(wrong_rank.shape))):
            module(wrong_rank)


def test_batch_change_without_reset_is_reported():
    fc = SpatialDelayLinear(3, 2, step_mode="s")
    fc(torch.rand(4, 3))
    with raises(ValueError, "x", "(5,)", "(4,)", "reset_net"):
        fc(torch.rand(5, 3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_positions_are_rejected(bad):
    fc = SpatialDelayLinear(3, 2, step_mode="m")
    rec = SpatialRecurrentContainer(nn.Identity(), 3, step_mode="m")
    for positions in (fc.pre_positions, fc.post_positions, rec.positions):
        with torch.no_grad():
            keep = positions.positions[0, 0].item()
            positions.positions[0, 0] = bad
        module = rec if positions is rec.positions else fc
        with raises(ValueError, "positions must be finite", "NaN/Inf"):
            module(torch.rand(2, 1, 3))
        with torch.no_grad():
            positions.positions[0, 0] = keep


@pytest.mark.parametrize("kernel", ["numba", "dense"])
@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_positions_that_become_non_finite_later_are_caught_at_the_next_call(kernel, step_mode):
    # A diverged optimiser step makes positions NaN in the middle of a run; the next call
    # names them (before: garbage taps in the numba kernel, silent NaN in the dense one).
    fc = SpatialDelayLinear(3, 2, step_mode=step_mode)
    rec = SpatialRecurrentContainer(nn.Identity(), 3, step_mode=step_mode)
    fc.cpu_kernel = rec.cpu_kernel = kernel
    x = torch.rand(4, 3) if step_mode == "s" else torch.rand(2, 4, 3)
    for module, positions, name in (
        (fc, fc.pre_positions, "pre_positions"),
        (fc, fc.post_positions, "post_positions"),
        (rec, rec.positions, "positions"),
    ):
        module(x)  # the memory now holds a sequence: not the first call
        with torch.no_grad():
            positions.positions[1, 0] = float("nan")
        with raises(ValueError, f"{name} must be finite", "1 of", "NeuronPositions"):
            module(x)
        with torch.no_grad():
            positions.positions[1, 0] = 0.5
        module(x)


@pytest.mark.parametrize(
    "attribute, value, exc, words",
    [
        ("delay_mode", "bogus", ValueError, ["delay_mode", "'bogus'"]),
        ("max_delay", -3, ValueError, ["max_delay", "-3"]),
        ("max_delay", 2.5, TypeError, ["max_delay", "2.5"]),
        ("delay_scale", float("nan"), ValueError, ["delay_scale", "nan"]),
        ("delay_scale", "1", TypeError, ["delay_scale", "'1'"]),
        ("backend", "triton", ValueError, ["backend", "'triton'"]),
        ("step_mode", "x", ValueError, ["x"]),
    ],
)
def test_options_assigned_after_construction_are_checked(attribute, value, exc, words):
    for module in (SpatialDelayLinear(3, 2), SpatialRecurrentContainer(nn.Identity(), 3)):
        before = getattr(module, attribute)
        with raises(exc, *words):
            setattr(module, attribute, value)
        assert getattr(module, attribute) == before  # a rejected value changes nothing


def test_valid_options_assigned_after_construction_take_effect():
    fc = SpatialDelayLinear(3, 2, step_mode="m", max_delay=10, delay_scale=4.0)
    fc.max_delay = 1
    fc.delay_scale = 0.0
    fc.delay_mode = "round"
    assert (fc.max_delay, fc.delay_scale, fc.delay_mode) == (1, 0.0, "round")
    assert torch.equal(fc.delays(), torch.full((2, 3), 0.0))
    fc.delay_scale = 100.0
    assert torch.equal(fc.delays(), torch.full((2, 3), 1.0))  # clamped at the new max_delay
    with pytest.raises(AttributeError):
        fc.dim = 3  # the positions fix the dimension


def test_modules_pickled_with_plain_option_attributes_still_load():
    import pickle

    fc = SpatialDelayLinear(3, 2, max_delay=7, delay_scale=2.0)
    state = fc.__dict__.copy()
    options = state.pop("_options")
    for name in ("dim", "max_delay", "delay_scale", "delay_mode"):  # the layout of sj-spatial 0.1
        state[name] = getattr(options, name)
    state["_backend"] = options.backend
    old = SpatialDelayLinear.__new__(SpatialDelayLinear)
    old.__setstate__(state)
    assert (old.dim, old.max_delay, old.delay_scale, old.delay_mode) == (2, 7, 2.0, "interpolate")
    copy = pickle.loads(pickle.dumps(old))
    assert torch.equal(copy.delays(), fc.delays())
