"""Live TensorBoard monitoring of spatial layers: a thin adapter from a model to
:mod:`sj_spatial.topology`.

:class:`TopologyLogger` works in any training loop; :class:`TopologyLoggerCallback` wraps
it as a Lightning ``Callback`` when ``lightning`` (or ``pytorch_lightning``) is installed.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from . import topology
from ._checks import check_count
from ._introspect import is_recurrent, layer_positions, named_spatial_layers

#: Bins of the delay, distance and weight histograms.
BINS = 30


def is_rank_zero() -> bool:
    """True unless torch.distributed is initialised and this process is not rank 0."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


class TopologyLogger:
    """Write the topology of every spatial layer of ``model`` to TensorBoard.

    ``writer_or_logdir``: a ``torch.utils.tensorboard.SummaryWriter`` (or anything with its
    methods) or a log directory (a writer is created on the first write and closed by
    :meth:`close`). :meth:`log` ``(step)`` writes when ``step % every == 0``, for each
    layer named by its module path:

    - scalars ``topology/<name>/<metric>`` (:func:`sj_spatial.topology.analyze`, with
      ``nulls`` and ``seed``);
    - histograms ``delays/<name>`` (time steps), ``distances/<name>`` (distance units),
      ``weights/<name>`` and ``delays_weighted/<name>`` (delays counted by ``|w|``);
    - image ``positions/<name>``: neurons coloured by community, the ``top_edges``
      strongest synapses drawn;
    - a projector embedding ``<name>`` of the positions with community labels (when
      ``embeddings``).

    Under torch.distributed only rank 0 writes.
    """

    def __init__(
        self,
        writer_or_logdir,
        model: nn.Module,
        every: int = 1,
        *,
        nulls: int = 10,
        seed: int = 0,
        top_edges: int = 200,
        embeddings: bool = True,
    ):
        if isinstance(writer_or_logdir, (str, os.PathLike)):
            self._logdir, self._writer = os.fspath(writer_or_logdir), None
        elif hasattr(writer_or_logdir, "add_scalar"):
            self._logdir, self._writer = None, writer_or_logdir
        else:
            raise TypeError(
                "writer_or_logdir must be a SummaryWriter or a log directory path, got "
                f"{type(writer_or_logdir).__name__}"
            )
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.layers = [(name or type(m).__name__, m) for name, m in named_spatial_layers(model)]
        if not self.layers:
            raise ValueError(
                "model must contain at least one SpatialDelayLinear or "
                "SpatialRecurrentContainer, got none"
            )
        self.every = check_count("every", every, 1)
        self.nulls = check_count("nulls", nulls, 1)
        self.top_edges = check_count("top_edges", top_edges, 0)
        self.seed = seed
        self.embeddings = embeddings

    @property
    def writer(self):
        """The SummaryWriter, created on first use when a log directory was given."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self._logdir)
        return self._writer

    def log(self, step: int) -> dict[str, dict[str, float]]:
        """Analyse and write every layer at ``step``; returns ``{layer name: metrics}``.

        Returns ``{}`` (and writes nothing) when ``step % every != 0`` or on a rank other
        than 0.
        """
        if step % self.every != 0 or not is_rank_zero():
            return {}
        results = {}
        with torch.no_grad():
            for name, layer in self.layers:
                results[name] = self._log_layer(name, layer, step)
        self.writer.flush()
        return results

    def _log_layer(self, name: str, layer: nn.Module, step: int) -> dict[str, float]:
        w = layer.effective_weight().detach().cpu().double().numpy()
        post, pre = (p.detach().cpu().double().numpy() for p in layer_positions(layer))
        dist = topology.distances(post, pre)
        delays = layer.delays().detach().cpu().double().numpy()
        labels, metrics = None, {}
        if is_recurrent(layer):
            labels = topology.communities(w, seed=self.seed)
            metrics = topology.graph_metrics(w, self.seed, self.nulls, labels=labels)
        metrics.update(topology.spatial_metrics(w, dist, layer.max_delay, layer.delay_scale))
        writer = self.writer
        for metric, value in metrics.items():
            writer.add_scalar(f"topology/{name}/{metric}", value, step)
        writer.add_histogram(f"delays/{name}", delays, step, bins=BINS)
        writer.add_histogram(f"distances/{name}", dist, step, bins=BINS)
        writer.add_histogram(f"weights/{name}", w, step, bins=BINS)
        _add_weighted_histogram(writer, f"delays_weighted/{name}", delays, np.abs(w), step)
        image = position_figure(w, post, pre, labels, self.top_edges, title=name)
        writer.add_image(f"positions/{name}", image, step, dataformats="HWC")
        if self.embeddings:
            _add_embedding(writer, name, post, pre, labels, step)
        return metrics

    def close(self) -> None:
        """Close the writer this logger created (a given writer is only flushed)."""
        if self._writer is None:
            return
        if self._logdir is None:
            self._writer.flush()
        else:
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _add_weighted_histogram(writer, tag: str, values, weights, step: int) -> None:
    """A histogram of ``values`` in which each entry counts ``weights`` (e.g. ``|w|``)."""
    values, weights = values.ravel(), weights.ravel()
    counts, edges = np.histogram(values, bins=BINS, weights=weights)
    total = float(weights.sum())
    writer.add_histogram_raw(
        tag,
        min=float(values.min()),
        max=float(values.max()),
        num=total,
        sum=float((values * weights).sum()),
        sum_squares=float((values**2 * weights).sum()),
        bucket_limits=edges[1:].tolist(),
        bucket_counts=counts.tolist(),
        global_step=step,
    )


def _add_embedding(writer, name: str, post, pre, labels, step: int) -> None:
    if labels is not None:
        meta = [[str(int(c)), str(i)] for i, c in enumerate(labels)]
        writer.add_embedding(
            post,
            metadata=meta,
            metadata_header=["community", "neuron"],
            global_step=step,
            tag=name,
        )
        return
    mat = np.concatenate((post, pre))
    meta = [["post", str(i)] for i in range(len(post))] + [["pre", str(i)] for i in range(len(pre))]
    writer.add_embedding(
        mat, metadata=meta, metadata_header=["population", "neuron"], global_step=step, tag=name
    )


def position_figure(
    weight, post, pre, labels=None, top_edges: int = 200, title: str = "", size: float = 4.0
) -> np.ndarray:
    """RGB image ``[H, W, 3]`` (uint8) of neuron positions and the strongest synapses.

    ``weight`` ``[out, in]``, ``post`` ``[out, D]``, ``pre`` ``[in, D]`` (the first two
    coordinates are drawn). With community ``labels`` ``[out]`` (recurrent layers) the
    neurons are coloured by community; otherwise pre neurons are grey crosses and post
    neurons dots. Lines: the ``top_edges`` largest ``|w|``, darker for stronger.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    weight = np.abs(np.asarray(weight))
    post, pre = _plane(post), _plane(pre)
    fig = Figure(figsize=(size, size), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    count = min(top_edges, int((weight > 0).sum()))
    if count:
        flat = np.argsort(weight, axis=None)[::-1][:count]
        j, i = np.unravel_index(flat, weight.shape)
        strength = weight[j, i] / weight[j[0], i[0]]
        segments = np.stack((pre[i], post[j]), axis=1)
        colors = np.zeros((count, 4))
        colors[:, 3] = 0.1 + 0.6 * strength
        ax.add_collection(LineCollection(segments, colors=colors, linewidths=0.6, zorder=1))
    if labels is None:
        ax.scatter(pre[:, 0], pre[:, 1], s=10, c="0.6", marker="x", label="pre", zorder=2)
        ax.scatter(post[:, 0], post[:, 1], s=14, c="tab:blue", label="post", zorder=3)
        ax.legend(loc="upper right", fontsize=7)
    else:
        ax.scatter(
            post[:, 0],
            post[:, 1],
            s=16,
            c=labels % 10,
            cmap="tab10",
            vmin=0,
            vmax=9,
            edgecolors="k",
            linewidths=0.3,
            zorder=3,
        )
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _plane(positions) -> np.ndarray:
    """First two coordinates of ``[N, D]`` positions (a zero y for D = 1)."""
    p = np.asarray(positions, dtype=np.float64)
    return p[:, :2] if p.shape[1] >= 2 else np.concatenate((p, np.zeros_like(p)), axis=1)


def __getattr__(name: str):
    # The Lightning adapter is built on first access, so that importing this module does
    # not import lightning (seconds) for users of the plain TopologyLogger.
    if name == "TopologyLoggerCallback":
        globals()[name] = cls = _callback_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _callback_class() -> type:
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError:
            return _MissingLightning

    class TopologyLoggerCallback(pl.Callback):
        """Lightning ``Callback``: a :class:`TopologyLogger` at the end of every ``every``-th
        training epoch, at ``trainer.global_step``, on global rank 0 only.

        ``writer_or_logdir=None`` uses the trainer's TensorBoard logger (its
        ``experiment``); other arguments go to :class:`TopologyLogger`.
        """

        def __init__(self, writer_or_logdir=None, every: int = 1, **kwargs):
            super().__init__()
            self.writer_or_logdir, self.kwargs = writer_or_logdir, kwargs
            self.every = check_count("every", every, 1)
            self.logger: TopologyLogger | None = None

        def setup(self, trainer, pl_module, stage=None) -> None:
            if self.logger is not None or not trainer.is_global_zero:
                return
            target = self.writer_or_logdir
            if target is None:
                target = getattr(trainer.logger, "experiment", None)
                if not hasattr(target, "add_scalar"):
                    raise ValueError(
                        "writer_or_logdir must be given when the trainer has no TensorBoard "
                        f"logger, got trainer.logger={type(trainer.logger).__name__}"
                    )
            self.logger = TopologyLogger(target, pl_module, every=1, **self.kwargs)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if self.logger is not None and (trainer.current_epoch + 1) % self.every == 0:
                self.logger.log(trainer.global_step)

        def teardown(self, trainer, pl_module, stage=None) -> None:
            if self.logger is not None:
                self.logger.close()
            self.logger = None

    TopologyLoggerCallback.__qualname__ = "TopologyLoggerCallback"
    return TopologyLoggerCallback


class _MissingLightning:
    """Lightning adapter of :class:`TopologyLogger` (needs ``pip install lightning``)."""

    def __init__(self, *args, **kwargs):
        raise ImportError(
            "TopologyLoggerCallback needs lightning (or pytorch_lightning), which is not "
            "installed: pip install lightning"
        )
