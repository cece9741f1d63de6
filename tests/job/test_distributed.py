"""Data-parallel training: spatial layers under DistributedDataParallel (2 CPU ranks,
gloo) train exactly like one process on the same global batches, and `sj-spatial train`
under torchrun writes one set of files whose reported accuracy is the checkpoint's."""

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from sj_spatial import (
    NeuronPositions,
    SpatialDelayLinear,
    SpatialRecurrentContainer,
    WiringCost,
    cli,
    prune_by_distance,
)
from sj_spatial.data import collate, make_synthetic_shd, shd_splits
from sj_spatial.distributed import (
    ShardedBatchSampler,
    World,
    shard_range,
    world_from_env,
    wrap,
)
from sj_spatial.train_job import recipe
from sj_spatial.train_job.config import TrainConfig

IN, HIDDEN, CLASSES, T = 10, 8, 3, 8
GLOBAL_BATCHES = (4, 4, 3)  # the last one splits unevenly over 2 ranks
RANKS = 2
TIMEOUT_S = 120


# ---------------------------------------------------------------- helpers without ranks


def test_world_comes_from_the_torchrun_variables():
    assert world_from_env({}) is None
    assert world_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == World(2, 4, 0)
    assert World().is_main and not World(1, 2, 1).is_main
    with pytest.raises(ValueError, match="without RANK, LOCAL_RANK"):
        world_from_env({"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="RANK must be an integer, got 'x'"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "x", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="RANK=2"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})


def test_shards_are_contiguous_disjoint_and_cover_everything():
    for n in range(12):
        parts = [shard_range(n, r, 3) for r in range(3)]
        assert [i for p in parts for i in p] == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_sharded_batches_on_one_rank_are_the_dataloader_batches():
    data = list(range(37))
    expected = DataLoader(data, 16, shuffle=True, generator=torch.Generator().manual_seed(5))
    shuffle = torch.Generator().manual_seed(5)
    sampler = ShardedBatchSampler(RandomSampler(data, generator=shuffle), 16)
    got = DataLoader(data, batch_sampler=sampler, generator=shuffle)
    assert [b.tolist() for b in got] == [b.tolist() for b in expected]
    assert sampler.shares() == [1.0, 1.0, 1.0]


def test_ranks_split_each_global_batch_and_weigh_their_loss_by_their_share():
    data = list(range(37))
    whole = ShardedBatchSampler(RandomSampler(data, generator=torch.Generator().manual_seed(2)), 6)
    parts = [
        ShardedBatchSampler(
            RandomSampler(data, generator=torch.Generator().manual_seed(2)), 6, r, 3
        )
        for r in range(3)
    ]
    # 37 = 6 * 6 + 1: the last global batch (1 sample) cannot feed 3 ranks and is skipped.
    assert [sum(b, []) for b in zip(*parts, strict=True)] == list(whole)[:-1]
    assert len(parts[0]) == 6 and all(p.shares() == [1.0] * 6 for p in parts)
    uneven = [ShardedBatchSampler(range(11), 4, r, 2) for r in range(2)]
    assert [list(u) for u in uneven] == [[[0, 1], [4, 5], [8, 9]], [[2, 3], [6, 7], [10]]]
    assert uneven[0].shares() == [1.0, 1.0, 2 * 2 / 3] and uneven[1].shares()[-1] == 2 * 1 / 3


def test_batch_size_must_split_evenly_over_the_world(tmp_path, monkeypatch):
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=r"--batch-size .*world size 2.* got 15"):
        cli.main(["train", "--batch-size", "15", "--logdir", str(tmp_path)])
    assert not torch.distributed.is_initialized()


# ---------------------------------------------------------------- two gloo ranks


def _model() -> tuple[nn.Module, torch.optim.Optimizer, WiringCost]:
    torch.manual_seed(0)
    hidden = NeuronPositions(HIDDEN, 2)  # shared by both spatial layers
    lif = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True)
    options = {"step_mode": "m", "max_delay": 4, "delay_scale": 2.0}
    model = nn.Sequential(
        SpatialDelayLinear(IN, HIDDEN, post_positions=hidden, **options),
        SpatialRecurrentContainer(lif, HIDDEN, positions=hidden, **options),
        layer.Linear(HIDDEN, CLASSES, step_mode="m"),
    )
    prune_by_distance(model[1], 0.25)  # a weight_mask buffer
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, optimizer, WiringCost(model, strength=1e-3)


def _global_batches():
    g = torch.Generator().manual_seed(1)
    for m in GLOBAL_BATCHES:
        x = (torch.rand(T, m, IN, generator=g) < 0.4).float()
        yield x, torch.randint(CLASSES, (m,), generator=g)


def _train(model, optimizer, cost, rank: int = 0, size: int = 1) -> None:
    for x, y in _global_batches():
        part = shard_range(len(y), rank, size)
        share = len(part) * size / len(y)
        x, y = x[:, part.start : part.stop], y[part.start : part.stop]
        recipe.train_step(model, x, y, [optimizer], cost, clip=1.0, share=share)
        functional.reset_net(model)


def _rank_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=RANKS,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        model, optimizer, cost = _model()
        ddp = wrap(model, torch.device("cpu"))
        assert isinstance(ddp, nn.parallel.DistributedDataParallel)
        _train(ddp, optimizer, cost, rank, RANKS)
        torch.save(model.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _spawn(fn, args) -> None:
    context = mp.start_processes(fn, args, nprocs=RANKS, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"ranks still running after {TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


@pytest.mark.slow  # starts ranks in subprocesses
def test_ddp_trains_spatial_layers_like_one_process_on_the_global_batches(tmp_path):
    _spawn(_rank_worker, (str(tmp_path / "init"), str(tmp_path)))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(RANKS)]
    model, optimizer, cost = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, optimizer, cost)
    single = model.state_dict()
    assert ranks[0].keys() == single.keys() and "1.weight_mask" in single
    for name, value in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        diff = (ranks[0][name].double() - value.double()).abs().max().item()
        assert diff <= 1e-5, (name, diff)
    moved = [n for n in single if not torch.equal(single[n], before[n])]
    assert {"0.weight", "0.post_positions.positions", "1.weight", "2.weight"} <= set(moved)
    assert torch.equal(single["1.weight_mask"], before["1.weight_mask"])


# ---------------------------------------------------------------- torchrun end to end


@pytest.fixture(scope="module")
def tiny_shd(tmp_path_factory):
    root = tmp_path_factory.mktemp("shd")
    make_synthetic_shd(root, num_train=40, num_test=21, seed=1)
    return root


OPTIONS = ["--hidden", "12", "--dt", "0.01", "--duration", "0.3", "--max-delay", "4"]
OPTIONS += ["--batch-size", "16", "--lr", "0.01", "--wiring-cost", "0.001", "--quiet"]


def _torchrun(args: list[str], env: dict) -> str:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={RANKS}", "-m", "sj_spatial.cli", "train", *args]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"torchrun still running after {TIMEOUT_S} s:\n{out[-3000:]}")
    assert process.returncode == 0, out[-3000:]
    return out


def _evaluate(checkpoint: Path, data_root: Path) -> tuple[float, float]:
    """(loss, accuracy) of a checkpoint on the whole test set, in one process."""
    args = cli.make_parser().parse_args(["train", *OPTIONS])
    model = recipe.build_model(TrainConfig.from_options(args))
    model.load_state_dict(cli.load_checkpoint(checkpoint)["model"])
    _, test_set = shd_splits(data_root, args.dt, args.duration)
    batches = ((x, y, 1.0) for x, y in DataLoader(test_set, 7, collate_fn=collate))
    loss, correct, count = recipe.run_epoch(model, batches, torch.device("cpu"))
    return loss / count, correct / count


@pytest.mark.slow  # starts ranks in subprocesses
def test_torchrun_job_writes_one_set_of_files_and_reports_the_checkpoints_accuracy(
    tiny_shd, tmp_path, monkeypatch, capsys
):
    cache = tmp_path / "cache"
    env = {**os.environ, "SJ_SPATIAL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    logdir = tmp_path / "ddp"
    common = ["--data-root", str(tiny_shd), *OPTIONS]
    out = _torchrun([*common, "--epochs", "1", "--logdir", str(logdir)], env)
    assert out.count("epoch 1:") == 1 and out.count("test accuracy (last / best)") == 1
    # --data-root augments by default: 40 recordings and 40 blends, the same on every rank.
    assert "augmented (shift + blend); train 80, test 21 samples; device cpu; 2 ranks" in out
    events = sorted(p.name for p in logdir.rglob("events.out.tfevents*"))
    assert len({name.rsplit(".", 2)[-2] for name in events}) == 1, events  # one writing pid
    names = {p.name for p in logdir.iterdir() if p.is_file()}
    expected = {"checkpoint.pt", "summary.json", "summary.md", "positions.png"}
    assert expected <= names and not any(n.endswith(".tmp") for n in names), names
    summary = json.loads((logdir / "summary.json").read_text())
    state = cli.load_checkpoint(logdir / "checkpoint.pt")
    loss, accuracy = _evaluate(logdir / "checkpoint.pt", tiny_shd)
    assert summary["test_accuracy"] == state["history"]["test_acc"][0] == accuracy
    assert state["history"]["test_loss"][0] == pytest.approx(loss, abs=1e-6)

    # The same job in one process takes the same steps on the same global batches.
    monkeypatch.setenv("SJ_SPATIAL_CACHE", str(cache))
    single = tmp_path / "single"
    cli.main(["train", *common, "--epochs", "1", "--logdir", str(single)])
    one = cli.load_checkpoint(single / "checkpoint.pt")
    for name, value in one["model"].items():
        assert torch.allclose(state["model"][name], value, rtol=0, atol=1e-5), name
    assert one["history"]["train_acc"] == state["history"]["train_acc"]
    assert one["history"]["train_loss"][0] == pytest.approx(
        state["history"]["train_loss"][0], abs=1e-6
    )

    # A checkpoint of 2 ranks resumes in 1 process.
    capsys.readouterr()
    cli.main(["train", *common, "--epochs", "2", "--resume", "--logdir", str(logdir)])
    assert "resuming from" in capsys.readouterr().out
    assert cli.load_checkpoint(logdir / "checkpoint.pt")["epoch"] == 1


@pytest.mark.slow  # starts ranks in subprocesses
@pytest.mark.parametrize("chunks", [["--tbptt", "7"], ["--recompute", "7"]])
def test_torchrun_job_in_time_chunks_matches_one_process(tiny_shd, tmp_path, monkeypatch, chunks):
    """Several backward passes per step (one per chunk, and the wiring cost's own) still
    average the gradients over the ranks like one process on the global batch."""
    cache = tmp_path / "cache"
    env = {**os.environ, "SJ_SPATIAL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    common = ["--data-root", str(tiny_shd), *OPTIONS, *chunks, "--epochs", "1"]
    _torchrun([*common, "--logdir", str(tmp_path / "ddp")], env)
    monkeypatch.setenv("SJ_SPATIAL_CACHE", str(cache))
    cli.main(["train", *common, "--logdir", str(tmp_path / "single")])
    ranks = cli.load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["model"]
    one = cli.load_checkpoint(tmp_path / "single" / "checkpoint.pt")["model"]
    for name, value in one.items():
        assert torch.allclose(ranks[name], value, rtol=0, atol=1e-5), name
