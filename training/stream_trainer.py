"""Training from a stream: a shuffle buffer over record batches, exact resume mid-epoch.

Each epoch reads the source's partitions in an order drawn from ``(seed, epoch)`` and fills a
**shuffle buffer** with the training rows of consecutive batches (:func:`training.streaming.part_masks`)
until it holds ``shuffle_rows`` of them; the buffer is permuted by a generator seeded by
``(seed, epoch, window)``, trained on in minibatches of ``training.batch_size``, and emptied. So
at most one buffer and one record batch are in memory, whatever the number of events.

**Checkpoints.** After every buffer window the model, optimizer, the loss so far and the
**cursor** (epoch, index in the epoch's partition order, next batch, next window) are written
atomically to ``<checkpoint_dir>/checkpoint.pt``; at an epoch's end the cursor is cleared. A run
killed at any point resumes from the last window: it seeks the reader to the recorded batch
(:class:`~ebmops.core.data.stream.Position`) and replays the following windows exactly, so
the final weights are bit-identical to a run never interrupted (CPU, same torch build and
threads). The checkpoint key covers the source's fingerprint, the weight-shaping settings, the
split fractions, the buffer and batch sizes: a checkpoint of other data or settings is refused.

Budgets (``time_budget_s``, ``cost_ceiling``) are checked before each epoch, as in
:mod:`training.trainer`; an epoch that has begun completes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from ebmops.core.data.stream import Position, StreamSource
from training.schedule import with_min_train_events
from training.atomic import atomic_write, remove_stale_temps
from training.budget import cost_of, next_epoch_verdict, price_for
from training.device import amp_mode, resolve_device
from training.model import build_model, categories_by_index
from training.objective import objective_for
from training.streaming import StreamSplit, part_masks
from training.trainer import (CHECKPOINT_NAME, WEIGHT_SHAPING_FIELDS, TrainResult, epoch_seed, torch_threads,
                              train_pass)

STREAM_CHECKPOINT_FORMAT = 2


@dataclass(frozen=True)
class Cursor:
    """Where an epoch stands: ``order_index`` into the epoch's partition order, the next batch in
    that partition, and the index of the next buffer window."""

    epoch: int
    order_index: int
    batch: int
    window: int

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "order_index": self.order_index, "batch": self.batch, "window": self.window}


def partition_order(n_partitions: int, seed: int, epoch: int) -> list[int]:
    """The partitions in the order epoch ``epoch`` reads them."""
    return np.random.default_rng(epoch_seed(seed, epoch)).permutation(n_partitions).tolist()


def window_seed(seed: int, epoch: int, window: int) -> int:
    digest = hashlib.sha256(f"ebmops-stream:{seed}:{epoch}:{window}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def stream_key(source: StreamSource, cfg, shuffle_rows: int) -> str:
    h = hashlib.sha256(source.fingerprint().encode())
    shaping = {k: getattr(cfg, k) for k in WEIGHT_SHAPING_FIELDS}
    shaping.update(train_fraction=cfg.train_fraction, calibration_fraction=cfg.calibration_fraction,
                   shuffle_rows=int(shuffle_rows), batch_rows=int(source.batch_rows))
    h.update(json.dumps(shaping, sort_keys=True).encode())
    return h.hexdigest()


def windows(source: StreamSource, cfg, epoch: int, shuffle_rows: int,
            start: Cursor | None = None) -> Iterator[tuple[Cursor, int, np.ndarray]]:
    """(cursor after the window, window index, training rows) for each buffer window of ``epoch``."""
    order = partition_order(len(source.partitions), cfg.seed, epoch)
    k0, b0, w = (start.order_index, start.batch, start.window) if start else (0, 0, 0)
    buf: list[np.ndarray] = []
    have = 0
    for k in range(k0, len(order)):
        p = order[k]
        for batch in source.iter_batches(partitions=[p], start=Position(p, b0 if k == k0 else 0), regions=False):
            train = part_masks(batch, cfg)[0]
            if train.any():
                buf.append(batch.x[train])
                have += int(train.sum())
            if have >= shuffle_rows:
                yield Cursor(epoch, k, batch.position.batch + 1, w + 1), w, np.concatenate(buf)
                buf, have, w = [], 0, w + 1
    if have:
        yield Cursor(epoch, len(order), 0, w + 1), w, np.concatenate(buf)


def _load(path: Path, key: str, device: torch.device) -> dict | None:
    from ebmops.core.errors import ConfigError

    if not path.is_file():
        return None
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("format") != STREAM_CHECKPOINT_FORMAT or state.get("key") != key:
        raise ConfigError(f"the checkpoint {path} belongs to a different training run (other data, split, buffer or "
                          f"settings among {', '.join(WEIGHT_SHAPING_FIELDS)}); delete it, pass resume=False, or use "
                          f"another checkpoint directory")
    return state


def train_stream(source: StreamSource, split: StreamSplit, cfg, *, shuffle_rows: int,
                 checkpoint_dir: Path | None = None, resume: bool = True, progress: bool = True) -> TrainResult:
    """Train an :class:`~training.model.EnergyMLP` on the training rows of ``source`` (see the module doc)."""
    cfg = with_min_train_events(cfg, split.n_train)  # small training sets get more epochs (training/schedule.py)
    with torch_threads(cfg.threads):
        device = resolve_device(cfg.device)
        amp = amp_mode(device, cfg.amp)
        price = price_for(device.type, cfg.price_per_device_hour)
        loss_fn = objective_for(cfg)
        if split.vocabulary:  # a categorical source: its batches carry the split's codes
            source = source.with_vocabulary(split.vocabulary)
        model = build_model(source.schema.n_features, cfg.hidden, split.mean, split.std, seed=cfg.seed,
                            categories=categories_by_index(source.schema.features, split.vocabulary)).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scaler = amp.scaler()
        key = stream_key(source, cfg, shuffle_rows)
        ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
        if ckpt is not None:
            remove_stale_temps(ckpt)
        state = _load(ckpt, key, device) if (ckpt is not None and resume) else None
        epoch, seconds, history, cursor, loss_sum, loss_rows = 0, 0.0, [], None, 0.0, 0
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            epoch, seconds, history = int(state["epoch"]), float(state["seconds"]), list(state["loss_history"])
            if state.get("cursor"):
                cursor = Cursor(**state["cursor"])
                loss_sum, loss_rows = float(state["loss_sum"]), int(state["loss_rows"])
        resumed_at = (epoch, cursor)

        def save(cur: Cursor | None, t0: float) -> None:
            if ckpt is None:
                return
            payload = {"format": STREAM_CHECKPOINT_FORMAT, "key": key, "epoch": epoch, "loss_history": history,
                       "cursor": cur.to_dict() if cur else None, "loss_sum": loss_sum, "loss_rows": loss_rows,
                       "model_spec": model.spec(), "model": model.state_dict(), "optimizer": opt.state_dict(),
                       "scaler": scaler.state_dict() if scaler is not None else None, "device": str(device),
                       "seconds": seconds + (time.perf_counter() - t0)}
            atomic_write(ckpt, lambda f: torch.save(payload, f))

        stop = None
        while epoch < cfg.epochs:
            if cursor is None:
                stop = next_epoch_verdict(seconds_spent=seconds, epochs_done=epoch, epochs_planned=cfg.epochs,
                                          price_per_hour=price, device_type=device.type,
                                          time_budget_s=cfg.time_budget_s, cost_ceiling=cfg.cost_ceiling)
                if stop is not None:
                    break
            with tqdm(total=split.n_train, initial=min(loss_rows, split.n_train), unit="ev", unit_scale=True,
                      desc=f"epoch {epoch + 1}/{cfg.epochs}", file=sys.stderr, disable=not progress,
                      dynamic_ncols=True) as bar:
                t0 = time.perf_counter()  # reading the window counts as training time too
                for after, w, xw in windows(source, cfg, epoch, shuffle_rows, cursor):
                    total = _train_window(model, opt, scaler, amp, loss_fn, xw, cfg, window_seed(cfg.seed, epoch, w),
                                          device)
                    loss_sum += total
                    loss_rows += len(xw)
                    save(after, t0)
                    seconds += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    bar.update(len(xw))
                    bar.set_postfix(loss=f"{loss_sum / max(loss_rows, 1):.4g}")
            history.append(loss_sum / max(loss_rows, 1))
            epoch, cursor, loss_sum, loss_rows = epoch + 1, None, 0.0, 0
            save(None, t0)
            seconds += time.perf_counter() - t0

    model = model.cpu().eval()
    cost = cost_of(seconds, price)
    start_epoch, start_cursor = resumed_at
    if stop is not None:
        message = stop.message
    else:
        where = ""
        if start_cursor is not None:
            where = (f", resumed in epoch {start_cursor.epoch + 1} at window {start_cursor.window} "
                     f"(partition {start_cursor.order_index} of the epoch's order, batch {start_cursor.batch})")
        elif start_epoch:
            where = f", resumed from epoch {start_epoch}"
        message = (f"trained {epoch} of {cfg.epochs} epochs on {device.type}{amp.label} over {split.n_train:,} "
                   f"streamed events in {seconds:.1f} s{where}; cost {cost:.4g}")
    return TrainResult(model=model, device=device.type, amp=amp.enabled, epochs_completed=epoch,
                       epochs_planned=cfg.epochs, seconds=seconds, device_hours=seconds / 3600.0, cost=cost,
                       stopped_reason=stop.reason if stop else None, message=message, loss_history=history,
                       resumed_from_epoch=start_epoch)


def _train_window(model, opt, scaler, amp, loss_fn, xw: np.ndarray, cfg, seed: int, device: torch.device) -> float:
    """Train on one shuffled buffer window; returns the summed loss (loss x rows)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    with torch.no_grad():
        z_all = model.standardise(torch.from_numpy(xw).to(device))
    return float(train_pass(model, opt, scaler, amp, loss_fn, z_all, cfg.batch_size, gen, device))
