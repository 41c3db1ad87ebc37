"""The lossy-options and restart benchmarks, end to end on the CPU with their ``--tiny`` paths.

``benchmarks/gpu_lossy.py --tiny`` runs the tiny Wan (every cache option diffusers has)
and shapes-t2v on 8 held-out prompts; ``benchmarks/restart.py --tiny`` starts two fresh
processes with one compile-cache home (cold, then warm). Both write JSON, checked here.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # (unit: by its folder)

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
NOT_RUN = {"skipped", "unavailable", "not applicable"}


def benchmark(name: str) -> ModuleType:
    """A script of ``benchmarks/`` (a folder of scripts, not a package)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def test_option_names_parse() -> None:
    lossy = benchmark("gpu_lossy")
    fbc = lossy.parse_option("fbc-0.1+compile")
    assert (fbc.kind, fbc.threshold, fbc.compiled, fbc.baseline) == (
        "fbc",
        0.1,
        True,
        "exact+compile",
    )
    with pytest.raises(ValueError):
        lossy.parse_option("fbc-x")
    with pytest.raises(ValueError):
        lossy.parse_option("teacache")
    # baselines are added and run first, eager before compiled, FP8 last
    order = [o.name for o in lossy.plan_options(["fp8+compile", "fbc-0.05", "magcache"])]
    assert order == ["exact", "fbc-0.05", "magcache", "exact+compile", "fp8+compile"]


def test_lossy_tiny(tmp_path: Path) -> None:
    lossy = benchmark("gpu_lossy")
    out = tmp_path / "lossy.json"
    assert lossy.main(["--tiny", "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["versions"]["torch"]
    assert set(result["workloads"]) == {"wan", "shapes"}
    for name, workload in result["workloads"].items():
        options: dict[str, dict[str, Any]] = {o["option"]: o for o in workload["options"]}
        exact = options["exact"]
        assert exact["status"] == "ok" and exact["rel_error"] == 0.0
        assert exact["seconds"] > 0 and exact["speedup"] == pytest.approx(1.0)
        for option in options.values():
            if option["status"] == "ok":
                assert option["seconds"] > 0 and option["warmup_s"] > 0
                assert math.isfinite(option["rel_error"]) and option["rel_error"] >= 0
                assert option["speedup"] > 0
            else:
                assert option["status"] in NOT_RUN, option
                assert option["reason"], option
                assert option["seconds"] is None
        # FP8 needs CUDA: it says why (no CUDA, or torchao missing)
        assert options["fp8+compile"]["status"] in {"skipped", "unavailable"}
        if name == "wan":
            for cache in ("fbc-0.05", "fbc-0.1", "magcache", "taylorseer", "seacache"):
                assert options[cache]["status"] == "ok", options[cache]
                assert 0 < options[cache]["computed"] <= 1
            assert len(options["magcache"]["details"]["mag_ratios"]) == 8  # the tiny steps
        else:
            assert options["fbc-0.1"]["status"] == "not applicable"
            assert exact["metrics"]["all_change"] == 0.0
            assert 0 <= exact["metrics"]["all"] <= 1


def test_restart_tiny(tmp_path: Path) -> None:
    restart = benchmark("restart")
    out = tmp_path / "restart.json"
    assert restart.main(["--tiny", "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert [run["cache"] for run in runs] == ["cold", "warm"]
    for run in runs:
        times = [run["phases"][phase] for phase in result["phases"] if phase in run["phases"]]
        assert len(times) == len(result["phases"])  # the Wan path reports every phase
        assert all(t > 0 for t in times)
        assert times == sorted(times)
        assert run["details"]["compiled_blocks"] > 0
    assert result["first_step_cold_over_warm"] > 0
    assert result["home"] is None  # the temporary home is gone
