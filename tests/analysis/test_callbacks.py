"""TopologyLogger: what it writes reads back with TensorBoard's own readers and server."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, neuron
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from sj_spatial import NeuronPositions, SpatialDelayLinear, SpatialRecurrentContainer, topology
from sj_spatial.callbacks import TopologyLogger, TopologyLoggerCallback, position_figure


def small_model(n=12, inputs=6) -> nn.Sequential:
    hidden = NeuronPositions(n)
    return nn.Sequential(
        SpatialDelayLinear(inputs, n, step_mode="m", post_positions=hidden, max_delay=3),
        SpatialRecurrentContainer(
            neuron.LIFNode(), n, step_mode="m", positions=hidden, max_delay=3
        ),
    )


def read_events(logdir) -> EventAccumulator:
    guidance = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}
    acc = EventAccumulator(str(logdir), size_guidance=guidance)
    acc.Reload()
    return acc


def test_logger_writes_scalars_histograms_images_and_projector(tmp_path):
    model = small_model()
    with TopologyLogger(tmp_path, model, every=2, nulls=2) as logger:
        results = {step: logger.log(step) for step in range(5)}
    assert results[1] == results[3] == {}  # every=2
    # The scalars are analyze()'s, for each layer under its module path.
    assert results[4]["1"] == topology.analyze(model[1], nulls=2)
    assert results[4]["0"] == topology.analyze(model[0])

    acc = read_events(tmp_path)
    tags = acc.Tags()
    expected_scalars = {f"topology/1/{m}" for m in results[4]["1"]}
    expected_scalars |= {f"topology/0/{m}" for m in results[4]["0"]}
    assert set(tags["scalars"]) == expected_scalars
    events = acc.Scalars("topology/1/modularity")
    assert [e.step for e in events] == [0, 2, 4]
    assert events[-1].value == pytest.approx(results[4]["1"]["modularity"], rel=1e-6)

    for kind in ("delays", "distances", "weights", "delays_weighted"):
        assert {f"{kind}/0", f"{kind}/1"} <= set(tags["histograms"])
    rec = model[1]
    weighted = acc.Histograms("delays_weighted/1")[-1].histogram_value
    assert weighted.num == pytest.approx(rec.weight.detach().abs().sum().item(), rel=1e-5)
    plain = acc.Histograms("delays/1")[-1].histogram_value
    assert plain.num == 12 * 12
    assert plain.max == pytest.approx(rec.delays().max().item(), rel=1e-5)

    assert set(tags["images"]) == {"positions/0", "positions/1"}
    image = acc.Images("positions/1")[-1]
    assert (image.width, image.height) == (400, 400)
    assert image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"

    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 6  # 2 layers x steps 0, 2, 4
    meta = (tmp_path / "00004" / "1" / "metadata.tsv").read_text().splitlines()
    assert meta[0] == "community\tneuron"
    labels = topology.communities(rec.weight, seed=0)
    assert [line.split("\t")[0] for line in meta[1:]] == [str(c) for c in labels]
    tensors = np.loadtxt(tmp_path / "00004" / "1" / "tensors.tsv", delimiter="\t")
    assert np.allclose(tensors, rec.positions.positions.detach().numpy(), atol=1e-6)
    feedforward = (tmp_path / "00004" / "0" / "metadata.tsv").read_text().splitlines()
    assert feedforward[0] == "population\tneuron" and len(feedforward) == 1 + 12 + 6


def test_a_given_writer_stays_open_after_close(tmp_path):
    writer = SummaryWriter(tmp_path)
    logger = TopologyLogger(writer, small_model(), nulls=1, embeddings=False)
    logger.log(0)
    logger.close()
    writer.add_scalar("after/close", 1.0, 0)  # still usable: the caller owns it
    writer.close()
    tags = read_events(tmp_path).Tags()
    assert "after/close" in tags["scalars"] and "topology/1/modularity" in tags["scalars"]
    assert not (tmp_path / "projector_config.pbtxt").exists()


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    logger = TopologyLogger(tmp_path / "rank1", small_model(), nulls=1)
    assert logger.log(0) == {}
    logger.close()
    assert not (tmp_path / "rank1").exists()
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
    logger = TopologyLogger(tmp_path / "rank0", small_model(), nulls=1)
    assert set(logger.log(0)) == {"0", "1"}
    logger.close()
    assert list((tmp_path / "rank0").glob("events.out.tfevents.*"))


def test_position_figure_colours_neurons_by_community():
    rng = np.random.default_rng(0)
    post = np.concatenate((rng.normal(-3, 0.3, (10, 2)), rng.normal(3, 0.3, (10, 2))))
    labels = np.repeat([0, 1], 10)
    image = position_figure(rng.normal(size=(20, 20)), post, post, labels, top_edges=0)
    assert image.shape == (400, 400, 3) and image.dtype == np.uint8
    pixels = image.reshape(-1, 3).astype(int)
    for rgb in ((31, 119, 180), (255, 127, 14)):  # tab10 colours of communities 0 and 1
        assert (np.abs(pixels - rgb).sum(1) < 30).sum() > 20


def test_logger_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="writer_or_logdir must be a SummaryWriter or a log"):
        TopologyLogger(42, small_model())
    with pytest.raises(ValueError, match="model must contain at least one SpatialDelayLinear"):
        TopologyLogger(tmp_path, nn.Linear(2, 2))
    with pytest.raises(ValueError, match="every must be an int >= 1, got 0"):
        TopologyLogger(tmp_path, small_model(), every=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_server_lists_the_scalar_tags(tmp_path):
    model = small_model()
    with TopologyLogger(tmp_path, model, nulls=1, embeddings=False) as logger:
        logger.log(0)
        logger.log(1)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path),
         "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/tags"
    tags, deadline = {}, time.monotonic() + 60
    try:
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    tags = json.load(response)
                if tags.get("."):
                    break
            except OSError:
                pass
            time.sleep(0.3)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert "topology/1/modularity" in tags.get("."), tags
    assert "topology/0/wiring_efficiency" in tags["."]


def test_lightning_callback_logs_at_epoch_ends(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = small_model()

        def training_step(self, batch, batch_idx):
            functional.reset_net(self.net)
            return self.net(batch[0].transpose(0, 1)).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.rand(4, 10, 6))
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    trainer = pl.Trainer(
        max_epochs=3, accelerator="cpu", devices=1, logger=pl.loggers.TensorBoardLogger(tmp_path),
        callbacks=[TopologyLoggerCallback(every=1, nulls=1, embeddings=False)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(Module(), loader)
    acc = read_events(trainer.logger.log_dir)
    steps = [e.step for e in acc.Scalars("topology/net.1/modularity")]
    assert steps == [2, 4, 6]  # global step at the end of each epoch of 2 batches
    assert "positions/net.0" in acc.Tags()["images"]
    with pytest.raises(ValueError, match="every must be an int >= 1, got 0"):
        TopologyLoggerCallback(every=0)


def test_lightning_callback_without_lightning_says_what_to_install():
    if any(importlib.util.find_spec(m) for m in ("lightning", "pytorch_lightning")):
        pytest.skip("lightning is installed: the adapter itself is tested")
    with pytest.raises(ImportError, match="pip install lightning"):
        TopologyLoggerCallback()
