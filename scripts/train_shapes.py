# mypy: allow-untyped-calls
"""Train the shapes-t2v denoiser on the procedural shapes stream; resumable and seeded.

Each step renders a batch of clips on the device, encodes its captions with the frozen
MiniLM-L6 (10% dropped to "" for classifier-free guidance), draws sigmas from a
logit-normal (plus a little uniform), and minimises the flow-matching loss of
:func:`cinecloud.engine.shapes.model.flow_matching_loss`. AdamW with warmup and a cosine
(or constant) learning rate, gradient clipping and an EMA of the weights.

A run stops cleanly before ``--minutes`` of wall time (or at ``--max-steps``, counted over
all runs) and writes its full state to ``--ckpt-dir``; ``--resume`` continues from there
exactly (model, EMA, optimizer, step, data-stream and noise RNG states), with the
hyperparameters saved beside it unless they are given again. ``--export`` writes the
pipeline directory with the EMA weights.

    python scripts/train_shapes.py --config tiny --max-steps 50 --device cpu
    python scripts/train_shapes.py --config full --minutes 8.5 --ckpt-dir ckpt \\
        --text-encoder te --total-steps 18000 --compile
    python scripts/train_shapes.py --resume ckpt --minutes 8.5 --text-encoder te --compile
    python scripts/train_shapes.py --resume ckpt --max-steps 0 --export models/shapes-t2v
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import json
import math
import os
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cinecloud.engine.shapes.dataset import ShapesStream
from cinecloud.engine.shapes.model import ShapesDiT, flow_matching_loss
from cinecloud.engine.shapes.pipeline import (
    ShapesT2VPipeline,
    load_packaged_text_encoder,
    load_text_encoder_dir,
)

__all__ = [
    "CONFIGS",
    "Batch",
    "TrainState",
    "export_pipeline",
    "load_checkpoint",
    "lr_at",
    "main",
    "parse_args",
    "sample_sigmas",
    "save_checkpoint",
    "train",
]

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 2},
    "full": {"hidden_size": 256, "num_layers": 8, "num_heads": 4},
}
STATE_FILE = "state.pt"
HYPER_FILE = "hyperparameters.json"
LOG_FILE = "train_log.jsonl"
SAVE_RESERVE_S = 20.0  # wall time kept back for the final checkpoint and export
MAX_SHARD = "15MB"
HYPERPARAMETERS: dict[str, Any] = {  # defaults; a resumed run reuses its checkpoint's
    "config": "full",
    "seed": 0,
    "batch_size": None,  # 256 on CUDA, 8 on CPU
    "lr": 4e-4,
    "warmup": 500,
    "total_steps": None,  # None: constant learning rate after warmup
    "min_lr_ratio": 0.1,
    "weight_decay": 0.0,
    "grad_clip": 1.0,
    "ema": 0.9995,
    "caption_dropout": 0.1,
    "t_mean": 0.8,
    "t_std": 0.8,
    "t_uniform": 0.05,
    "shift": 2.0,
    "max_text_len": 32,
}


# ---------------------------------------------------------------- arguments


def _add_hyperparameters(p: argparse.ArgumentParser) -> None:
    """Options a resumed run takes from its checkpoint unless they are given again."""
    hide = argparse.SUPPRESS
    p.add_argument("--config", choices=sorted(CONFIGS), default=hide, help="default full")
    p.add_argument("--seed", type=int, default=hide, help="default 0")
    p.add_argument("--batch-size", type=int, default=hide, help="default 256 on CUDA, 8 on CPU")
    p.add_argument("--lr", type=float, default=hide, help="default 4e-4")
    p.add_argument("--warmup", type=int, default=hide, help="linear warmup steps (500)")
    p.add_argument("--total-steps", type=int, default=hide, help="cosine length; none: constant")
    p.add_argument("--min-lr-ratio", type=float, default=hide, help="cosine floor (0.1 x lr)")
    p.add_argument("--weight-decay", type=float, default=hide, help="default 0")
    p.add_argument("--grad-clip", type=float, default=hide, help="default 1.0")
    p.add_argument("--ema", type=float, default=hide, help="EMA decay (0.9995)")
    p.add_argument("--caption-dropout", type=float, default=hide, help="default 0.1")
    p.add_argument("--t-mean", type=float, default=hide, help="logit-normal mean of sigma (0.8)")
    p.add_argument("--t-std", type=float, default=hide, help="logit-normal std of sigma (0.8)")
    p.add_argument("--t-uniform", type=float, default=hide, help="share of uniform sigmas (0.05)")
    p.add_argument("--shift", type=float, default=hide, help="sampler shift on export (2.0)")
    p.add_argument("--max-text-len", type=int, default=hide, help="caption tokens (32)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse options; a resumed run fills the hyperparameters not given from its checkpoint."""
    p = argparse.ArgumentParser(description="Train the shapes-t2v denoiser.")
    _add_hyperparameters(p)
    p.add_argument("--minutes", type=float, default=None, help="wall-time budget of this run")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step (all runs)")
    p.add_argument("--resume", type=Path, default=None, help="checkpoint directory to continue")
    p.add_argument("--init", type=Path, default=None, help="start from an exported pipeline")
    p.add_argument("--init-step", type=int, default=0, help="the step --init was exported at")
    p.add_argument("--ckpt-dir", type=Path, default=None, help="default: --resume or ./ckpt")
    p.add_argument("--save-every", type=int, default=2000, help="steps between checkpoints")
    p.add_argument("--export", type=Path, default=None, help="write the pipeline here at the end")
    p.add_argument("--export-dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--text-encoder", type=Path, default=None, help="MiniLM-L6 model directory")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--prefetch", type=int, default=None, help="batches made ahead (CUDA: 3)")
    p.add_argument("--log-every", type=int, default=50)
    args = p.parse_args(argv)
    if args.init is not None and args.resume is not None:
        p.error("pass --resume or --init, not both")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    saved = _saved_hyperparameters(args.resume)
    for name, default in HYPERPARAMETERS.items():
        if not hasattr(args, name):
            setattr(args, name, saved.get(name, default))
    args.batch_size = args.batch_size or (256 if cuda else 8)
    args.prefetch = (3 if cuda else 0) if args.prefetch is None else args.prefetch
    args.ckpt_dir = args.ckpt_dir or args.resume or Path("ckpt")
    return args


def _saved_hyperparameters(resume: Path | None) -> dict[str, Any]:
    if resume is None:
        return {}
    path = resume / HYPER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume: {path} not found")
    saved: dict[str, Any] = json.loads(path.read_text())
    return saved


# ---------------------------------------------------------------- data


@dataclass
class TextEncoder:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kept_ids: torch.Tensor | None  # a pruned copy's vocabulary; None: every token


def load_text_encoder(path: Path | None, device: torch.device) -> TextEncoder:
    """The frozen MiniLM-L6 from ``path`` (an exported copy) or from its pip package."""
    kept_ids = None
    if path is None:
        encoder, tokenizer = load_packaged_text_encoder(torch.float32)
    else:
        encoder, tokenizer, kept_ids = load_text_encoder_dir(path, torch.float32)
    encoder = encoder.to(device)  # type: ignore[arg-type]
    return TextEncoder(encoder, tokenizer, kept_ids)


@dataclass
class Batch:
    clips: torch.Tensor  # (B, 3, T, H, W) in [-1, 1]
    text: torch.Tensor  # (B, L, 384) token states
    mask: torch.Tensor  # (B, L) bool
    stream_state: torch.Tensor  # the data generator's state after this batch
    ready: torch.cuda.Event | None = None


class Batches:
    """Batches from :class:`ShapesStream` with their captions encoded, made ``ahead`` in a
    background thread on a side CUDA stream (or inline when ``ahead`` is 0)."""

    def __init__(
        self, stream: ShapesStream, text_encoder: TextEncoder, max_len: int, ahead: int
    ) -> None:
        self.stream, self.max_len = stream, max_len
        self.encoder, self.tokenizer = text_encoder.model, text_encoder.tokenizer
        self.kept_ids = text_encoder.kept_ids
        self.device = stream.device
        self._queue: queue.Queue[Batch | BaseException] = queue.Queue(maxsize=max(ahead, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if ahead > 0:
            self._thread = threading.Thread(target=self._fill, daemon=True)
            self._thread.start()

    def _make(self) -> Batch:
        clips, captions = next(self.stream)
        tokens = self.tokenizer(
            captions,
            padding="max_length",
            max_length=self.max_len,
            truncation=True,
            return_tensors="pt",
        )
        if self.kept_ids is not None and not torch.isin(tokens.input_ids, self.kept_ids).all():
            raise ValueError("a caption has tokens the pruned text encoder lacks; export it again")
        ids = tokens.input_ids.to(self.device, non_blocking=True)
        mask = tokens.attention_mask.to(self.device, non_blocking=True)
        cuda = self.device.type == "cuda"
        with torch.no_grad(), torch.autocast(self.device.type, torch.bfloat16, enabled=cuda):
            text = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        clips = clips.permute(0, 2, 1, 3, 4).contiguous()
        return Batch(clips, text.float(), mask.bool(), self.stream.gen.get_state())

    def _fill(self) -> None:
        side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        try:
            while not self._stop.is_set():
                if side is None:
                    batch = self._make()
                else:
                    with torch.cuda.stream(side):
                        batch = self._make()
                        batch.ready = torch.cuda.Event()
                        batch.ready.record(side)
                self._queue.put(batch)
        except BaseException as exc:  # handed to the training loop
            self._queue.put(exc)

    def __next__(self) -> Batch:
        if self._thread is None:
            return self._make()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        if item.ready is not None:
            torch.cuda.current_stream(self.device).wait_event(item.ready)
            for t in (item.clips, item.text, item.mask):
                t.record_stream(torch.cuda.current_stream(self.device))
        return item

    def close(self) -> None:
        self._stop.set()
        while self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.1)


# ---------------------------------------------------------------- schedules


def lr_at(step: int, args: argparse.Namespace, warm_from: int = 0) -> float:
    """Linear warmup (from step ``warm_from``) to ``--lr``, then constant or cosine down to
    ``--min-lr-ratio`` (the cosine counts from step 0)."""
    if step - warm_from < args.warmup:
        return float(args.lr * (step - warm_from + 1) / args.warmup)
    if args.total_steps is None:
        return float(args.lr)
    span = max(args.total_steps - args.warmup, 1)
    progress = min((step - args.warmup) / span, 1.0)
    floor = args.min_lr_ratio
    return float(args.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))))


def sample_sigmas(
    n: int, gen: torch.Generator, device: torch.device, mean: float, std: float, uniform: float
) -> torch.Tensor:
    """Noise levels in (0, 1): logit-normal, with a share ``uniform`` drawn uniformly."""
    normal = torch.sigmoid(mean + std * torch.randn(n, generator=gen, device=device))
    flat = torch.rand(n, generator=gen, device=device)
    pick = torch.rand(n, generator=gen, device=device) < uniform
    return torch.where(pick, flat, normal).clamp(1e-4, 1.0)


# ---------------------------------------------------------------- state


@dataclass
class TrainState:
    model: ShapesDiT
    ema: ShapesDiT
    optimizer: torch.optim.AdamW
    noise_gen: torch.Generator
    stream_state: torch.Tensor | None = None  # None: a fresh stream from --seed
    step: int = 0
    train_seconds: float = 0.0  # summed over all runs
    warm_from: int = 0  # the step the learning-rate warmup started (after --init: that step)


def new_state(args: argparse.Namespace, device: torch.device) -> TrainState:
    """Fresh weights from ``--seed``, or (``--init``) an exported pipeline's at ``--init-step``."""
    torch.manual_seed(args.seed)
    if args.init is None:
        model = ShapesDiT(**CONFIGS[args.config])
    else:
        model = _init_weights(args.init, args.config)
    model = model.to(device)
    state = _assemble(model, copy.deepcopy(model), args, device, args.init_step)
    state.step = state.warm_from = args.init_step
    return state


def _init_weights(source: Path, config: str) -> ShapesDiT:
    folder = source / "transformer" if (source / "transformer").is_dir() else source
    model: ShapesDiT = ShapesDiT.from_pretrained(str(folder), torch_dtype=torch.float32)
    wanted = CONFIGS[config]
    found = {k: model.config[k] for k in wanted}
    if found != wanted:
        raise ValueError(f"--init {source} is not --config {config} (has {found})")
    return model


def _assemble(
    model: ShapesDiT,
    ema: ShapesDiT,
    args: argparse.Namespace,
    device: torch.device,
    first_step: int = 0,
) -> TrainState:
    ema.requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=args.lr,
        betas=(0.9, 0.99),
        weight_decay=args.weight_decay,
        fused=device.type == "cuda",
    )
    noise_gen = torch.Generator(device).manual_seed(args.seed + 1 + first_step)
    return TrainState(model.train(), ema, optimizer, noise_gen)


def save_checkpoint(state: TrainState, directory: Path, args: argparse.Namespace) -> Path:
    """Write the whole training state to ``directory/state.pt`` (atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": args.config,
        "model_config": dict(state.model.config),
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "noise_gen": state.noise_gen.get_state(),
        "stream_state": state.stream_state,
        "step": state.step,
        "train_seconds": state.train_seconds,
        "warm_from": state.warm_from,
        "seed": args.seed,
        "batch_size": args.batch_size,
    }
    path = directory / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    hyper = {name: getattr(args, name) for name in HYPERPARAMETERS}
    (directory / HYPER_FILE).write_text(json.dumps(hyper, indent=2) + "\n")
    return path


def load_checkpoint(directory: Path, args: argparse.Namespace, device: torch.device) -> TrainState:
    """The training state saved by :func:`save_checkpoint`; ``--config`` must match."""
    payload = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)
    if payload["config"] != args.config:
        raise ValueError(f"checkpoint is --config {payload['config']} (got {args.config})")
    if payload["seed"] != args.seed:
        raise ValueError(f"checkpoint was trained with --seed {payload['seed']} (got {args.seed})")
    config = {k: v for k, v in payload["model_config"].items() if not k.startswith("_")}
    model, ema = ShapesDiT(**config), ShapesDiT(**config)
    model.load_state_dict(payload["model"])
    ema.load_state_dict(payload["ema"])
    state = _assemble(model.to(device), ema.to(device), args, device)
    state.optimizer.load_state_dict(payload["optimizer"])
    state.noise_gen.set_state(payload["noise_gen"])
    state.stream_state = payload["stream_state"]
    state.step, state.train_seconds = payload["step"], payload["train_seconds"]
    state.warm_from = payload["warm_from"]
    return state


def export_pipeline(ema: ShapesDiT, out: Path, shift: float, dtype: str) -> Path:
    """Write the pipeline directory (EMA weights in ``dtype``, shards under 15 MB)."""
    config = {k: v for k, v in ema.config.items() if not k.startswith("_")}
    transformer = ShapesDiT(**config)
    transformer.load_state_dict(ema.state_dict())
    if dtype == "float16":
        transformer.half()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    pipe = ShapesT2VPipeline(transformer=transformer, scheduler=scheduler)
    pipe.save_pretrained(str(out), max_shard_size=MAX_SHARD)
    return out


# ---------------------------------------------------------------- training


def train_step(
    state: TrainState,
    batch: Batch,
    args: argparse.Namespace,
    loss_fn: Callable[..., torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step; returns the loss and the gradient norm (as tensors, unsynced)."""
    device = batch.clips.device
    n = batch.clips.shape[0]
    sigmas = sample_sigmas(n, state.noise_gen, device, args.t_mean, args.t_std, args.t_uniform)
    noise = torch.randn(batch.clips.shape, generator=state.noise_gen, device=device)
    for group in state.optimizer.param_groups:
        group["lr"] = lr_at(state.step, args, state.warm_from)
    with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        loss = loss_fn(state.model, batch.clips, noise, sigmas, batch.text, batch.mask)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), args.grad_clip)
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    decay = min(args.ema, (1 + state.step) / (10 + state.step))
    ema_params: list[torch.Tensor] = list(state.ema.parameters())
    params: list[torch.Tensor] = list(state.model.parameters())
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    state.step += 1
    state.stream_state = batch.stream_state
    return loss.detach(), grad_norm.detach()


class Logger:
    """Prints and appends JSON lines; averages losses between prints (one sync per print)."""

    def __init__(
        self, path: Path, args: argparse.Namespace, flops_per_sample: float, step: int
    ) -> None:
        self.path, self.args, self.flops = path, args, flops_per_sample
        self.losses: list[float] = []
        self._sum: list[torch.Tensor] = []
        self._mark = (time.perf_counter(), step)

    def add(
        self, state: TrainState, loss: torch.Tensor, grad_norm: torch.Tensor, run_start: float
    ) -> None:
        step = state.step
        self._sum.append(torch.stack([loss, grad_norm]))
        if step % self.args.log_every:
            return
        values = torch.stack(self._sum).float().cpu()
        self.losses.extend(values[:, 0].tolist())
        self._sum.clear()
        now, (last_t, last_step) = time.perf_counter(), self._mark
        rate = (step - last_step) * self.args.batch_size / max(now - last_t, 1e-9)
        self._mark = (now, step)
        record = {
            "step": step,
            "loss": round(float(values[:, 0].mean()), 6),
            "grad_norm": round(float(values[:, 1].mean()), 4),
            "lr": state.optimizer.param_groups[0]["lr"],
            "samples_per_s": round(rate, 1),
            "tflops": round(rate * self.flops / 1e12, 2),
            "elapsed_s": round(now - run_start, 1),
        }
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(
            f"{json.dumps(record)} eta={_eta(step, rate, now - run_start, self.args)}", flush=True
        )


def _eta(step: int, samples_per_s: float, elapsed: float, args: argparse.Namespace) -> str:
    steps_per_s = samples_per_s / args.batch_size
    parts = []
    if args.max_steps is not None and steps_per_s > 0:
        parts.append(f"{max(args.max_steps - step, 0) / steps_per_s / 60:.1f}min to max-steps")
    if args.minutes is not None:
        parts.append(f"{max(args.minutes * 60 - elapsed, 0) / 60:.1f}min left in run")
    if args.total_steps is not None and steps_per_s > 0:
        parts.append(f"{max(args.total_steps - step, 0) / steps_per_s / 60:.1f}min to total-steps")
    return ", ".join(parts) or "-"


def _text_flops(encoder: PreTrainedModel, length: int) -> int:
    weights = sum(p.numel() for n, p in encoder.named_parameters() if "embeddings" not in n)
    return 2 * weights * length


def _announce(state: TrainState, args: argparse.Namespace, text_flops: int) -> float:
    """Print the model's size and cost; returns training FLOPs per sample."""
    params = sum(p.numel() for p in state.model.parameters())
    forward = state.model.flops_per_sample(args.max_text_len)
    per_sample = 3 * forward + text_flops
    print(
        f"shapes-t2v --config {args.config}: {params:,} parameters, "
        f"{state.model.tokens_per_clip} tokens per clip, "
        f"{forward / 1e9:.2f} GFLOPs forward, {per_sample / 1e9:.2f} GFLOPs per training sample "
        f"(3x forward + text encoder {text_flops / 1e9:.2f}); device {args.device}, "
        f"batch {args.batch_size}, step {state.step}",
        flush=True,
    )
    return float(per_sample)


def _typical(times: collections.deque[float]) -> float:
    """The median of recent step times, once there are a few (the first ones compile)."""
    return statistics.median(times) if len(times) >= 3 else 0.0


def _should_stop(
    state: TrainState, args: argparse.Namespace, run_start: float, step_s: float
) -> bool:
    if args.max_steps is not None and state.step >= args.max_steps:
        return True
    if args.minutes is None:
        return False
    elapsed = time.perf_counter() - run_start
    return bool(elapsed + 3 * step_s + SAVE_RESERVE_S > args.minutes * 60)


def _batches(args: argparse.Namespace, state: TrainState, device: torch.device) -> Batches:
    stream = ShapesStream(  # after --init, fresh data rather than the first run's again
        args.batch_size,
        args.seed + state.warm_from,
        device=device,
        caption_dropout=args.caption_dropout,
    )
    if state.stream_state is not None:
        stream.gen.set_state(state.stream_state)
    encoder = load_text_encoder(args.text_encoder, device)
    return Batches(stream, encoder, args.max_text_len, args.prefetch)


def train(args: argparse.Namespace) -> tuple[TrainState, list[float]]:
    """Run (or continue) training as ``args`` say; returns the state and the logged losses."""
    run_start = time.perf_counter()
    device = torch.device(args.device)
    if args.resume is not None:
        state = load_checkpoint(args.resume, args, device)
    else:
        state = new_state(args, device)
    batches = _batches(args, state, device)
    flops = _announce(state, args, _text_flops(batches.encoder, args.max_text_len))
    loss_fn = torch.compile(flow_matching_loss) if args.compile else flow_matching_loss
    args.ckpt_dir.mkdir(parents=True, exist_ok=True)
    logger = Logger(args.ckpt_dir / LOG_FILE, args, flops, state.step)
    loop_start = time.perf_counter()
    recent: collections.deque[float] = collections.deque(maxlen=25)
    print(f"ready to train after {loop_start - run_start:.1f} s", flush=True)
    try:
        while not _should_stop(state, args, run_start, _typical(recent)):
            tick = time.perf_counter()
            loss, grad_norm = train_step(state, next(batches), args, loss_fn)
            logger.add(state, loss, grad_norm, run_start)
            if args.save_every and state.step % args.save_every == 0:
                save_checkpoint(state, args.ckpt_dir, args)
            recent.append(time.perf_counter() - tick)
    finally:
        batches.close()
    state.train_seconds += time.perf_counter() - loop_start
    path = save_checkpoint(state, args.ckpt_dir, args)
    print(f"saved step {state.step} to {path} ({state.train_seconds / 60:.1f} min trained)")
    if args.export is not None:
        export_pipeline(state.ema, args.export, args.shift, args.export_dtype)
        print(f"exported the EMA pipeline to {args.export} ({args.export_dtype})")
    return state, logger.losses


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
