"""A restarted worker's time to its first denoising step: cold, then with a warm compile cache.

The benchmark launches a fresh Python process ``--runs`` times (default 2) with the same
compile-cache home, as a restarted worker gets it: each child calls
``cinecloud.engine.speed.set_compile_cache(home)`` before torch is imported. The home is
a new temporary directory, so the first run compiles from nothing (``cold``) and later
runs find its compiled code on disk (``warm``; the label is what the child found: an
empty or absent cache directory is cold). Each child reports, as JSON on stdout, the
seconds from the parent's launch (``time.time()`` just before the process is started) to:

- ``started``: the child's first line ran (interpreter start);
- ``imported``: torch, diffusers and cinecloud's engine imported;
- ``built``: the model built on the device;
- ``attention``: the attention backend set: measured (``choose_attention``) on a cold
  start, the stored choice (``AttentionChoices`` under the home) on a warm one;
- ``tuned``: regional compile (``compile_regions``) and one warm-up run done;
- ``first_step``: the first denoising step of a job done (device synchronised).

Models (``--model``):

- ``wan`` (default): the full-size Wan2.1-T2V-1.3B transformer of
  ``benchmarks/gpu_engine.py``'s ``CASES`` with random weights (built on the device, not
  read from disk), bf16 on CUDA. There is no installed Wan pipeline to point the runner
  at, so the child does what ``Runner._tune`` does, with the same functions: the attention
  choice (remembered across runs in the home, as the runner remembers it) and the
  warm-up probe are one denoising step at the real shape (480x832, 81 frames: two
  forwards at batch 1, conditional and unconditional, as ``WanPipeline`` runs
  guidance), then regional compile, then the warm-up; the first step is one more.
- ``shapes``: our shipped ``cinecloud/shapes-t2v`` through the real
  ``cinecloud.engine.runner.Runner`` (the registry's spec, ``models/shapes-t2v``):
  ``built`` is when ``Runner._tune`` is entered (the family loaded), ``tuned`` when
  ``load()`` returns (the runner chooses attention inside, so ``attention`` is not
  reported apart), and ``first_step`` the runner's first ``on_step`` of a real job with the
  model's defaults (text encoding included), after which the job is cancelled.
- ``--tiny``: a tiny Wan on the CPU (same code path): a smoke run and the unit test's.

``--no-compile`` leaves compile out (the cache then stays empty: every run is cold).
The children run without ``TRITON_CACHE_DIR``, so Triton's kernels are cached under the
home too (as for a worker without that variable).

    python benchmarks/restart.py                       # Wan2.1-1.3B on the GPU, cold + warm
    python benchmarks/restart.py --model shapes        # shapes-t2v through the runner
    python benchmarks/restart.py --tiny --device cpu   # CPU smoke run

Prints a table (each phase, each run, and the cold / warm ratio) and writes
``benchmarks/results/restart.json`` (``restart_<model>.json`` for shapes, ``restart_tiny.json``
with ``--tiny``) unless ``--json`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
REPO = BENCHMARKS.parent
if str(BENCHMARKS) not in sys.path:  # the other benchmarks are scripts, not a package
    sys.path.insert(0, str(BENCHMARKS))

PHASES = ("started", "imported", "built", "attention", "tuned", "first_step")
MARKER = "RESTART-RESULT "  # the child's result line on stdout
SHAPES_PROMPT = "a red circle moving to the right on a sky background"

Mark = Callable[[str], None]


# ---------------------------------------------------------------- the child


def child_wan(args: argparse.Namespace, mark: Mark) -> dict[str, Any]:
    """Build the Wan transformer and tune it as ``Runner._tune`` does, then one step."""
    import diffusers  # noqa: F401
    import torch
    from diffusers import WanTransformer3DModel  # noqa: F401  (the lazy import, counted here)
    from gpu_lossy import build_wan_transformer, wan_latent_shape, wan_spec, wan_text

    from cinecloud.engine.speed import (
        CUDA_ATTENTION_CANDIDATES,
        AttentionChoices,
        attention_key,
        choose_attention,
        compile_regions,
    )

    mark("imported")
    cuda = args.device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    spec = wan_spec(args.tiny)
    dtype = torch.bfloat16 if cuda else torch.float32
    model = build_wan_transformer(spec, args.device, dtype)
    prompt, negative = wan_text(spec, args.device, dtype, 0)
    gen = torch.Generator("cpu").manual_seed(0)
    latents = torch.randn(1, *wan_latent_shape(spec), generator=gen).to(args.device, dtype)
    sync()
    mark("built")

    def step(timestep: float) -> None:
        """One denoising step as WanPipeline runs it: conditional, then unconditional."""
        t = torch.full((1,), timestep, device=args.device)
        with torch.inference_mode():
            for text in (prompt, negative):
                model(
                    hidden_states=latents, timestep=t, encoder_hidden_states=text, return_dict=False
                )
        sync()

    candidates = CUDA_ATTENTION_CANDIDATES if cuda else ()
    # As the runner does: a choice measured by an earlier process is set, not re-measured.
    choices = AttentionChoices(args.home / "cache" / "attention.json")
    key = attention_key(spec.what, args.device, tuple(wan_latent_shape(spec)))
    remembered = choices.get(key)
    attention_s: dict[str, float] = {}
    if remembered in candidates:
        model.set_attention_backend(remembered)
        attention, source = str(remembered), "remembered"
    else:
        attention, attention_s = choose_attention(model, candidates, lambda: step(999.0))
        source = "measured" if attention_s else "fixed"
        if attention_s:
            choices.put(key, attention, attention_s)
    mark("attention")
    blocks = 0 if args.no_compile else compile_regions(model)
    step(999.0)  # the warm-up
    mark("tuned")
    step(979.0)  # a job's first step
    mark("first_step")
    return {
        "what": spec.what,
        "attention": attention,
        "attention_source": source,
        "attention_s": attention_s,
        "compiled_blocks": blocks,
        "dtype": str(dtype),
        "latent": list(wan_latent_shape(spec)),
    }


def child_shapes(args: argparse.Namespace, mark: Mark) -> dict[str, Any]:
    """The shipped shapes-t2v through the real Runner: load (with tuning), then a job."""
    import torch

    import cinecloud.engine.families.shapes  # noqa: F401  (the family's imports, counted here)
    from cinecloud.engine.families import Family
    from cinecloud.engine.registry import builtin_specs
    from cinecloud.engine.runner import Cancelled, Runner, StepInfo

    mark("imported")
    cuda = args.device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    spec = next(s for s in builtin_specs(args.models_dir) if s.id == "cinecloud/shapes-t2v")

    class MarkedRunner(Runner):
        def _tune(self, family: Family, device: str) -> dict[str, str]:
            sync()
            mark("built")
            return super()._tune(family, device)

    runner = MarkedRunner(
        spec, device=args.device, compile="off" if args.no_compile else "regional"
    )
    runner.load()
    mark("tuned")
    params = spec.default_params(SHAPES_PROMPT)
    done = False

    def on_step(info: StepInfo) -> None:
        nonlocal done
        if info.step == 1:
            sync()
            mark("first_step")
            done = True

    with contextlib.suppress(Cancelled):  # cancelled once the first step is done
        runner.run(params, on_step, lambda: done)
    if not done:
        raise RuntimeError("the job finished without a first step")
    return {
        "what": f"{spec.id} ({spec.source}) through Runner",
        "tuning": runner.tuning,
        "dtype": runner.dtype,
        "steps": params.steps,
    }


def cache_size(cache: Path) -> tuple[int, int]:
    """Files and bytes under the compile cache."""
    files = [f for f in cache.rglob("*") if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files)


def child(args: argparse.Namespace) -> int:
    marks: dict[str, float] = {}

    def mark(phase: str) -> None:
        marks[phase] = time.time() - args.t0

    mark("started")
    from cinecloud.engine.speed import set_compile_cache

    cache = set_compile_cache(args.home)
    found = cache_size(cache)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    details = (child_shapes if args.model == "shapes" else child_wan)(args, mark)
    result = {
        "cache": "warm" if found[0] else "cold",
        "cache_dir": str(cache),
        "cache_files_at_start": found[0],
        "cache_mib_at_start": found[1] / 2**20,
        "cache_mib_at_end": cache_size(cache)[1] / 2**20,
        "phases": marks,
        "details": details,
        "pid": os.getpid(),
    }
    print(MARKER + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------- the parent


def launch(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    """One fresh child process; its result."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--model",
        args.model,
        "--device",
        args.device,
        "--home",
        str(home),
        "--models-dir",
        str(args.models_dir),
    ]
    command += ["--tiny"] if args.tiny else []
    command += ["--no-compile"] if args.no_compile else []
    command += ["--threads", str(args.threads)] if args.threads else []
    # Triton's kernels go under the inductor cache unless TRITON_CACHE_DIR points elsewhere:
    # the child must not find them there (a cold run would not be cold).
    env = {k: v for k, v in os.environ.items() if k != "TRITON_CACHE_DIR"}
    t0 = time.time()
    proc = subprocess.run(
        [*command, "--t0", repr(t0)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=args.timeout,
        check=False,
    )
    wall = time.time() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"the child exited {proc.returncode} without a result:\n{proc.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    result["wall_s"] = wall
    return result


def ratios(cold: dict[str, Any], warm: dict[str, Any]) -> dict[str, float]:
    """Cold / warm of each phase both runs report."""
    return {
        phase: cold["phases"][phase] / warm["phases"][phase]
        for phase in PHASES
        if phase in cold["phases"] and phase in warm["phases"] and warm["phases"][phase] > 0
    }


def print_table(title: str, runs: Sequence[dict[str, Any]], ratio: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("seconds from launch to", justify="left")
    for i, run in enumerate(runs, 1):
        table.add_column(f"run {i} ({run['cache']})", justify="right")
    table.add_column("cold / warm", justify="right")
    for phase in PHASES:
        if not any(phase in run["phases"] for run in runs):
            continue
        cells = [f"{run['phases'][phase]:.2f}" if phase in run["phases"] else "-" for run in runs]
        table.add_row(phase, *cells, f"{ratio[phase]:.2f}" if phase in ratio else "-")
    table.add_section()
    table.add_row("(cache MiB at start)", *(f"{r['cache_mib_at_start']:.1f}" for r in runs), "")
    Console(width=120).print(table)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model", choices=("wan", "shapes"), default="wan")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--tiny", action="store_true", help="a tiny Wan (CPU smoke run)")
    p.add_argument("--runs", type=int, default=2, help="processes; the first is cold")
    p.add_argument("--no-compile", action="store_true", help="no regional compile")
    p.add_argument("--home", type=Path, default=None, help="default: a new temporary dir")
    p.add_argument("--keep-home", action="store_true", help="leave the temporary home")
    p.add_argument("--models-dir", type=Path, default=REPO / "models")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads in the child (default: torch's; --tiny: 1)",
    )
    p.add_argument("--timeout", type=float, default=1800, help="seconds per child")
    p.add_argument("--json", type=Path, default=None)
    # the child's
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs < 2 and not args.child:
        p.error("--runs must be >= 2 (one cold, then warm)")
    if args.tiny and args.model != "wan":
        p.error("--tiny is a tiny Wan; use --model wan")
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if args.threads is None and args.tiny:
        args.threads = 1
    if args.child and (args.t0 is None or args.home is None):
        p.error("--child needs --t0 and --home")
    if args.json is None:
        name = (
            "restart_tiny" if args.tiny else f"restart{'_shapes' if args.model == 'shapes' else ''}"
        )
        args.json = RESULTS / f"{name}.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    from gpu_lossy import device_name, versions

    home = args.home or Path(tempfile.mkdtemp(prefix="cinecloud-restart-"))
    runs: list[dict[str, Any]] = []
    try:
        for i in range(args.runs):
            run = launch(args, home)
            runs.append(run)
            first = run["phases"].get("first_step", float("nan"))
            print(f"run {i + 1} ({run['cache']}): first step at {first:.2f} s", file=sys.stderr)
    finally:
        if args.home is None and not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)
    cold = next((r for r in runs if r["cache"] == "cold"), None)
    warm = next((r for r in runs if r["cache"] == "warm"), None)
    ratio = ratios(cold, warm) if cold and warm else {}
    what = runs[0]["details"]["what"]
    payload = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": args.device,
        "device_name": device_name(args.device),
        "versions": versions(),
        "model": args.model,
        "what": what,
        "compile": not args.no_compile,
        "threads": args.threads,
        "home": str(home) if args.home or args.keep_home else None,
        "phases": list(PHASES),
        "runs": runs,
        "cold_over_warm": ratio,
        "first_step_cold_over_warm": ratio.get("first_step"),
    }
    print_table(f"{what}: restart to first step ({payload['device_name']})", runs, ratio)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
