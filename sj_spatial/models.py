"""Ready-made spatial SNNs for SHD: the paper's recurrent model and its building blocks."""

from __future__ import annotations

from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn

from ._checks import check_float, check_int
from .cells import ExponentialSynapse, LeakyIntegrator
from .layers import DEFAULT_MAX_DELAY, SpatialRecurrentContainer

__all__ = ["ExponentialSynapse", "LeakyIntegrator", "recurrent_shd_model"]


def recurrent_shd_model(
    in_features: int = 700,
    hidden: int = 128,
    classes: int = 20,
    *,
    dt: float = 1e-3,
    tau_mem: float = 20e-3,
    tau_syn: float = 5e-3,
    tau_out: float = 20e-3,
    dim: int = 2,
    max_delay: int = DEFAULT_MAX_DELAY,
    delay_scale: float = 1.0,
    backend: str = "torch",
) -> nn.Sequential:
    """The paper's SHD model: ``in -> hidden`` recurrent LIF with spatial delays ``-> classes``
    leaky-integrator readouts, multi-step, input ``[T, N, in]`` -> readout ``[T, N, classes]``.

    Time constants are in seconds and ``dt`` is the time step; only the hidden->hidden
    synapses carry position-derived delays (``delay_scale`` steps per distance unit). With
    ``tau_syn > 0`` every synaptic input, feedforward and recurrent, passes an exponential
    synapse before the LIF neuron; ``tau_syn = 0`` feeds the currents straight into the
    neurons. With ``backend='cupy'`` either cell runs the fused CUDA time loop.
    """
    check_float("dt", dt, minimum=0.0, strict=True)
    check_int("hidden", hidden, minimum=1)
    tau_steps = check_float("tau_mem", tau_mem, minimum=0.0, strict=True) / dt
    if tau_steps <= 1:
        raise ValueError(
            f"tau_mem / dt must be > 1 time step (LIFNode's tau), got {tau_mem} / {dt} = "
            f"{tau_steps:.3g}; use a smaller dt"
        )
    lif = neuron.LIFNode(
        tau=tau_steps,
        decay_input=False,
        surrogate_function=surrogate.ATan(),
        detach_reset=True,
    )
    tau_syn = check_float("tau_syn", tau_syn)
    cell = nn.Sequential(ExponentialSynapse(tau_syn / dt), lif) if tau_syn > 0 else lif
    return nn.Sequential(
        layer.Linear(in_features, hidden, step_mode="m"),
        SpatialRecurrentContainer(
            cell,
            hidden,
            bias=False,
            step_mode="m",
            dim=dim,
            max_delay=max_delay,
            delay_scale=delay_scale,
            backend=backend,
        ),
        layer.Linear(hidden, classes, step_mode="m"),
        LeakyIntegrator(tau_out / dt, step_mode="m"),
    )
