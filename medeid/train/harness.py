"""What every medeid training job shares: the TorchTrainer set-up, checkpoints and resume.

Runs live under `<storage_uri>/<name>`. Ray Train V2 finds the run's checkpoints there again when
`fit()` is called with the same name, so re-submitting an interrupted job resumes it; a worker
that dies mid-run is replaced and restarts from the latest checkpoint (`max_failures`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from typing import Callable, Iterator

import numpy as np
import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, prepare_model

from medeid import storage

STATE_FILE = "state.pt"
SHUFFLE_BUFFER = 1024  # rows per worker mixed before batching


def run_training(loop, config: dict, *, name: str, storage_uri: str, datasets: dict,
                 num_workers: int = 2, cpus_per_worker: float = 0.5, use_gpu: bool = False,
                 max_failures: int = 1, settings: storage.S3Settings | None = None) -> ray.train.Result:
    """Fit `loop` with DDP on `num_workers` workers; only the 'train' dataset is split among them.

    Workers ask for half a CPU by default: Ray Data's read and decode tasks need CPU too, and
    workers holding every CPU leave the input pipeline backpressured forever.
    """
    # Ray Train does not read AWS_ENDPOINT_URL for storage_path: hand it the filesystem.
    fs, path = storage.filesystem(storage_uri, settings)
    trainer = TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=path, storage_filesystem=fs,
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=max_failures)),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    return trainer.fit()


INJECTED_FAILURE_DELAY_S = 3.0  # the test hook's wait for its checkpoint to be registered


def is_rank_zero() -> bool:
    return ray.train.get_context().get_world_rank() == 0


def report(metrics: dict, state: dict | None = None) -> None:
    """Report metrics from every worker; rank 0 attaches a checkpoint of `state` when given."""
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if state is not None and is_rank_zero():
            torch.save(state, os.path.join(directory, STATE_FILE))
            checkpoint = Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)


def resume_state() -> dict | None:
    """The state of the latest checkpoint of this run, if it is being resumed."""
    checkpoint = ray.train.get_checkpoint()
    return None if checkpoint is None else read_state(checkpoint)


@contextlib.contextmanager
def checkpoint_folder(checkpoint: Checkpoint) -> Iterator[str]:
    """A private local copy of a checkpoint, removed afterwards. Not `as_directory`: that shares one
    folder per node, and a second worker's download can rewrite a file the first is reading
    (ray-project/ray#48726; a resumed run here once read a truncated state.pt)."""
    with tempfile.TemporaryDirectory() as directory:
        checkpoint.to_directory(directory)
        yield directory


def read_state(checkpoint: Checkpoint) -> dict:
    with checkpoint_folder(checkpoint) as directory:
        return torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP, for state dicts that load without DDP."""
    return model.module if hasattr(model, "module") else model


def train_epochs(model: torch.nn.Module, make_optimizer: Callable, config: dict,
                 train_step: Callable, evaluate: Callable, dtypes: dict, tag: str, ddp_kwargs: dict | None = None) -> None:
    """The loop every medeid trainer runs inside `train_loop_per_worker`.

    Resumes from the run's latest checkpoint, wraps `model` in DDP, follows a one-cycle learning
    rate over `epochs * steps_per_epoch` steps, and after each epoch reports metrics with a
    checkpoint (at most every `checkpoint_every_s` seconds where the config sets it); rank 0 runs
    `evaluate(model, test_shard, epoch) -> dict` every `eval_every` epochs and at the end.
    `train_step(model, batch) -> loss` sees `dtypes`' columns as tensors. `ddp_kwargs` go to
    DistributedDataParallel.
    """
    epochs = config["epochs"]
    state = resume_state()
    if state:
        model.load_state_dict(state["model"])
    model = prepare_model(model, parallel_strategy_kwargs=ddp_kwargs)
    optimizer = make_optimizer(model.parameters())
    total_steps = max(1, epochs * config["steps_per_epoch"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config["lr"], total_steps=total_steps, pct_start=0.15)
    start_epoch, step = 0, 0
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step = state["epoch"] + 1, state["step"]

    train, test = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("test")
    every_s, last_saved = config.get("checkpoint_every_s", 0.0), time.monotonic()
    for epoch in range(start_epoch, epochs):
        started, losses = time.monotonic(), []
        model.train()
        # Archives are stored patient by patient: without shuffling a batch holds a handful of people.
        for batch in train.iter_torch_batches(batch_size=config["batch_size"], dtypes=dtypes, drop_last=True,
                                              local_shuffle_buffer_size=SHUFFLE_BUFFER):
            loss = train_step(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler.last_epoch < total_steps - 1:  # past the planned steps, keep the last rate
                scheduler.step()
            step += 1
            losses.append(loss.item())
        metrics = {"epoch": epoch, "step": step, "start_epoch": start_epoch,
                   "loss": float(np.mean(losses)) if losses else float("nan"), "epoch_s": time.monotonic() - started}
        if is_rank_zero():
            if epoch == epochs - 1 or (epoch + 1) % config["eval_every"] == 0:
                unwrapped = unwrap(model).eval()
                with torch.no_grad():
                    metrics.update(evaluate(unwrapped, test, epoch))
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
            print(f"[{tag}] epoch {epoch + 1}/{epochs} {shown}", flush=True)
        # A checkpoint every epoch, or (with `checkpoint_every_s`) at most that often and after the last
        # epoch: a run of many tiny epochs (train-on-MeMa: 2 steps an epoch, 0.4 s) spent 1.6 s of every
        # 2 s writing them.
        due = (every_s <= 0 or epoch == epochs - 1 or time.monotonic() - last_saved >= every_s
               or config.get("fail_after_epoch") == epoch)
        report(metrics, {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "epoch": epoch, "step": step} if due else None)
        if due:
            last_saved = time.monotonic()
        # Test hook: fail once, after the first checkpoint of a fresh run, to exercise recovery. The
        # controller registers a reported checkpoint when it next polls the workers; a failure raised
        # at once can reach it first (seen once in ~10 CI runs: the retry then found no checkpoint).
        if config.get("fail_after_epoch") == epoch and state is None:
            time.sleep(INJECTED_FAILURE_DELAY_S)
            raise RuntimeError(f"injected failure after epoch {epoch}")
