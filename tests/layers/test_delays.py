import torch

from sj_spatial.delays import EPS, delay_taps, delays_from_positions, distances

from tests.support.reference import spec_delays


def test_delays_follow_the_spec_formula_with_clamp():
    post, pre = (
        torch.randn(5, 3, dtype=torch.float64) * 3,
        torch.randn(7, 3, dtype=torch.float64) * 3,
    )
    got = delays_from_positions(post, pre, delay_scale=2.5, max_delay=6)
    want = spec_delays(post, pre, 2.5, 6)
    assert torch.allclose(got, want, atol=1e-12)
    assert (got == 6).any() and (got < 6).any()


def test_coincident_positions_give_eps_distance_and_finite_gradient():
    p = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    d = distances(p, p)
    assert torch.allclose(d, torch.full((2, 2), EPS, dtype=torch.float64))
    d.sum().backward()
    assert torch.isfinite(p.grad).all()


def test_clamped_delays_have_no_gradient():
    post = torch.tensor([[0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    pre = torch.tensor([[10.0, 0.0], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    delays_from_positions(post, pre, 1.0, 3).sum().backward()
    # pre[0] is clamped (distance 10 > 3); pre[1] is not.
    assert pre.grad[0].abs().sum() == 0
    assert pre.grad[1, 0] > 0


def test_interpolate_taps_split_floor_and_fraction():
    d = torch.tensor([[0.0, 1.25, 2.999, 4.0]], dtype=torch.float64, requires_grad=True)
    k, f = delay_taps(d, "interpolate")
    assert k.tolist() == [[0, 1, 2, 4]]
    assert torch.allclose(f, torch.tensor([[0.0, 0.25, 0.999, 0.0]], dtype=torch.float64))
    f.sum().backward()
    assert torch.equal(d.grad, torch.ones_like(d))


def test_round_taps_are_integer_with_straight_through_gradient():
    d = torch.tensor([[0.4, 1.6, 2.5]], dtype=torch.float64, requires_grad=True)
    k, f = delay_taps(d, "round")
    assert k.tolist() == [[0, 2, 2]]
    assert torch.equal(f.detach(), torch.zeros_like(d))
    f.sum().backward()
    assert torch.equal(d.grad, torch.ones_like(d))
