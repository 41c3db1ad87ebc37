"""``cinecloud fit-alpha``: fit alpha from timings and store it in a service-time table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from cinecloud.cli.main import app
from cinecloud.scheduler import load_service_models
from cinecloud.scheduler.service import DEFAULT_TABLE


def test_fit_prints_and_stores_alpha(tmp_path: Path) -> None:
    table = tmp_path / "alpha.json"
    shutil.copy(DEFAULT_TABLE, table)
    # T(N) = 100 (1 + 0.2 (N - 1)) / N
    timings = ["1=100", "2=60", "4=40"]
    args = ["fit-alpha", "wan-t2v", *timings, "--table", str(table), "--source", "test rig"]
    result = CliRunner().invoke(app, [*args, "--write"])
    assert result.exit_code == 0, result.output
    assert "alpha = 0.2000" in result.output
    stored = load_service_models(table).get("wan-t2v")
    assert (stored.alpha, stored.alpha_source) == (0.2, "test rig")
    before = json.loads(DEFAULT_TABLE.read_text())["families"]["wan-t2v"]
    assert stored.seconds_per_unit == before["seconds_per_unit"]


def test_fit_without_write_leaves_the_table(tmp_path: Path) -> None:
    table = tmp_path / "alpha.json"
    shutil.copy(DEFAULT_TABLE, table)
    result = CliRunner().invoke(app, ["fit-alpha", "ltx-t2v", "1=10", "2=6", "--table", str(table)])
    assert result.exit_code == 0, result.output
    assert table.read_text() == DEFAULT_TABLE.read_text()


def test_bad_timings_fail_with_a_short_error() -> None:
    result = CliRunner().invoke(app, ["fit-alpha", "wan-t2v", "2=10", "4=6"])
    assert result.exit_code == 2
    assert "1 rank" in result.output


def test_the_shipped_table_loads_and_names_a_source_for_every_value() -> None:
    data = json.loads(DEFAULT_TABLE.read_text())
    models = load_service_models()
    assert set(models.families) == set(data["families"])
    for name, entry in data["families"].items():
        assert entry["alpha_source"] and entry["unit_source"], name
        assert 0.0 <= models.get(name).alpha <= 1.0
