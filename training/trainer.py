"""The training loop: deterministic, checkpointed every epoch, resumable, and budgeted.

Determinism. Initial weights come from ``seed`` alone; each epoch's shuffling and noise come
from a generator seeded by ``(seed, epoch)``. So an epoch's randomness does not depend on
what ran before it in this process, and a run resumed from the checkpoint of epoch ``k``
replays epochs ``k+1..n`` exactly as an uninterrupted run would: on CPU the final weights are
bit-identical (same torch build and thread count).

Checkpoints. After every epoch the model, optimizer (and loss scaler) state, the epoch, the
seconds spent and the loss history are written atomically to ``<checkpoint_dir>/checkpoint.pt``.
The checkpoint records a key of the training data and the settings that shape the weights;
resuming with different data or settings is refused rather than silently mixing two runs.
Changing ``epochs`` is allowed (train a finished run further); budgets, threads and device
are not part of the key.

Budgets. Before each epoch :func:`training.budget.next_epoch_verdict` decides whether the
wall-time budget or the cost ceiling forbids it; training then stops cleanly with the model of
the last completed epoch, ``stopped_reason`` and a message saying how to continue.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ebmops.core.errors import ConfigError, TrainingStopped
from training.atomic import atomic_write, remove_stale_temps
from training.budget import cost_of, next_epoch_verdict, price_for
from training.device import amp_mode, resolve_device
from training.model import EnergyMLP, build_model, fit_standardisation
from training.objective import objective_for
from training.schedule import with_min_train_events

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
# Settings that change the weights an epoch produces; a checkpoint is resumed only when they match.
WEIGHT_SHAPING_FIELDS = ("hidden", "batch_size", "lr", "weight_decay", "objective", "noise_sigma_min",
                         "noise_sigma_max", "nce_noise_sigma", "std_floor", "seed")


@dataclass
class TrainResult:
    model: EnergyMLP  # on CPU, in eval mode
    device: str
    amp: bool
    epochs_completed: int
    epochs_planned: int
    seconds: float  # training wall time of the whole run, across resumes
    device_hours: float
    cost: float
    stopped_reason: str | None  # None | 'time_budget' | 'cost_ceiling'
    message: str
    loss_history: list[float] = field(default_factory=list)
    resumed_from_epoch: int = 0  # 0 when training started afresh

    def raise_if_stopped(self) -> "TrainResult":
        """For callers that treat an early stop as a failure."""
        if self.stopped_reason:
            raise TrainingStopped(self.message)
        return self


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch ``epoch`` of run ``seed`` (independent of earlier epochs)."""
    digest = hashlib.sha256(f"ebmops-train:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def checkpoint_key(x_train: np.ndarray, cfg) -> str:
    h = hashlib.sha256(np.ascontiguousarray(x_train).tobytes())
    h.update(repr(x_train.shape).encode())
    h.update(json.dumps({k: getattr(cfg, k) for k in WEIGHT_SHAPING_FIELDS}, sort_keys=True).encode())
    return h.hexdigest()


def _categories_key(categories: dict) -> str:
    return hashlib.sha256(json.dumps({str(j): list(v) for j, v in sorted(categories.items())}).encode()).hexdigest()[:16]


@contextlib.contextmanager
def torch_threads(n: int):
    """Use ``n`` torch CPU threads inside the block (0: leave as is), then restore the previous count."""
    previous = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(previous)


def _check_input(x_train) -> np.ndarray:
    x = np.ascontiguousarray(x_train, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0 or x.shape[1] == 0:
        raise ConfigError(f"x_train must be a non-empty 2-D array [events, features]; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ConfigError("x_train holds NaN or infinite values; clean or impute them before training")
    return x


def _load_checkpoint(path: Path, key: str, device: torch.device) -> dict | None:
    if not path.is_file():
        return None
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT or state.get("key") != key:
        raise ConfigError(f"the checkpoint {path} belongs to a different training run (other data or settings among "
                          f"{', '.join(WEIGHT_SHAPING_FIELDS)}); delete it, pass resume=False, or use another "
                          f"checkpoint directory")
    return state


def train_energy_model(x_train: np.ndarray, cfg, *, checkpoint_dir: Path | None = None, resume: bool = True,
                       progress: bool = True, categories: dict | None = None) -> TrainResult:
    """Train an :class:`EnergyMLP` on normal events ``x_train`` (raw features) with ``cfg: TrainingSettings``;
    ``categories`` (input column -> categories) makes the columns it names one-hot codes."""
    x = _check_input(x_train)
    cfg = with_min_train_events(cfg, len(x))  # small training sets get more epochs (training/schedule.py)
    with torch_threads(cfg.threads):
        device = resolve_device(cfg.device)
        amp = amp_mode(device, cfg.amp)
        price = price_for(device.type, cfg.price_per_device_hour)
        loss_fn = objective_for(cfg)
        mean, std = fit_standardisation(x, cfg.std_floor)
        model = build_model(x.shape[1], cfg.hidden, mean, std, seed=cfg.seed, categories=categories).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scaler = amp.scaler()
        key = checkpoint_key(x, cfg) if not categories else checkpoint_key(x, cfg) + _categories_key(categories)
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None

        start, seconds, history = 0, 0.0, []
        if ckpt_path is not None:
            remove_stale_temps(ckpt_path)  # a writer killed mid-write leaves one behind
        state = _load_checkpoint(ckpt_path, key, device) if (ckpt_path is not None and resume) else None
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start, seconds, history = int(state["epoch"]), float(state["seconds"]), list(state["loss_history"])

        with torch.no_grad():
            z_all = model.standardise(torch.from_numpy(x).to(device))  # standardise once, not per batch
        stop = None
        epoch = start
        while epoch < cfg.epochs:
            stop = next_epoch_verdict(seconds_spent=seconds, epochs_done=epoch, epochs_planned=cfg.epochs,
                                      price_per_hour=price, device_type=device.type,
                                      time_budget_s=cfg.time_budget_s, cost_ceiling=cfg.cost_ceiling)
            if stop is not None:
                break
            t0 = time.perf_counter()
            history.append(_run_epoch(model, opt, scaler, amp, loss_fn, z_all, cfg, epoch, device, progress))
            epoch += 1
            if ckpt_path is not None:
                payload = {"format": CHECKPOINT_FORMAT, "key": key, "epoch": epoch, "loss_history": history,
                           "model_spec": model.spec(), "model": model.state_dict(), "optimizer": opt.state_dict(),
                           "scaler": scaler.state_dict() if scaler is not None else None, "device": str(device)}
                # Seconds up to this write; the write itself counts in this process's total only.
                payload["seconds"] = seconds + (time.perf_counter() - t0)
                atomic_write(ckpt_path, lambda f: torch.save(payload, f))
            seconds += time.perf_counter() - t0

    model = model.cpu().eval()
    device_hours = seconds / 3600.0
    cost = cost_of(seconds, price)
    if stop is not None:
        message = stop.message
    else:
        resumed = f", resumed from epoch {start}" if start else ""
        message = (f"trained {epoch} of {cfg.epochs} epochs on {device.type}{amp.label}"
                   f" in {seconds:.1f} s{resumed}; cost {cost:.4g}")
    return TrainResult(model=model, device=device.type, amp=amp.enabled, epochs_completed=epoch,
                       epochs_planned=cfg.epochs, seconds=seconds, device_hours=device_hours, cost=cost,
                       stopped_reason=stop.reason if stop else None, message=message, loss_history=history,
                       resumed_from_epoch=start)


def _run_epoch(model, opt, scaler, amp, loss_fn, z_all, cfg, epoch: int, device: torch.device,
               progress: bool) -> float:
    """One pass over the training rows; returns the mean loss."""
    gen = torch.Generator(device=device)
    gen.manual_seed(epoch_seed(cfg.seed, epoch))
    n, bs = len(z_all), cfg.batch_size
    with tqdm(total=math.ceil(n / bs), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", file=sys.stderr,
              disable=not progress, leave=True, dynamic_ncols=True) as bar:
        mean_loss = float(train_pass(model, opt, scaler, amp, loss_fn, z_all, bs, gen, device,
                                     on_batch=lambda: bar.update(1))) / n
        bar.set_postfix(loss=f"{mean_loss:.4g}")
    return mean_loss


def train_pass(model, opt, scaler, amp, loss_fn, z_all: torch.Tensor, batch_size: int, gen: torch.Generator,
               device: torch.device, on_batch=None) -> torch.Tensor:
    """One shuffled pass of optimiser steps over standardised rows ``z_all``: the permutation, then each
    batch's noise, drawn from ``gen`` in that order (so a pass is reproducible from its seed). Returns the
    summed loss (loss x rows), kept on the device: no host sync per batch. Shared by the in-memory epoch and
    the streamed trainer's buffer window."""
    n = len(z_all)
    perm = torch.randperm(n, generator=gen, device=device)
    total = torch.zeros((), device=device)
    model.train()
    for i in range(0, n, batch_size):
        z = z_all[perm[i:i + batch_size]]
        with amp.autocast(device):
            loss = loss_fn(model.energy_standardised, z, gen)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        total += loss.detach() * len(z)
        if on_batch is not None:
            on_batch()
    return total
