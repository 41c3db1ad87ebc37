"""The pure parts of RayLauncher: a pool's bundle and the settings workers get."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cinecloud.config import load_config
from cinecloud.workers.ray_launcher import RayPool, _settings, node_env


def test_bundle_leaves_out_what_a_worker_does_not_take() -> None:
    assert RayPool().bundle() == {"CPU": 1.0, "GPU": 1.0}
    assert RayPool(num_gpus=0, num_cpus=2).bundle() == {"CPU": 2}
    pool = RayPool(num_gpus=2, num_cpus=0, resources={"H200": 1, "spot": 0})
    assert pool.bundle() == {"GPU": 2, "H200": 1}


def test_pool_rejects_negative_amounts() -> None:
    with pytest.raises(ValueError, match="num_gpus must be >= 0"):
        RayPool(num_gpus=-1)
    with pytest.raises(ValueError, match="H200 must be >= 0"):
        RayPool(resources={"H200": -1})


def test_settings_carry_only_cinecloud_variables(tmp_path: Path) -> None:
    cfg = load_config(server={"home": tmp_path}, worker={"token": "t0k", "models": ["a/b"]})
    env = {"CINECLOUD_STORAGE__BACKEND": "s3", "PATH": "/driver/bin", "PYTHONPATH": "/x"}
    settings = _settings(cfg, "http://cp:8000", env)
    assert settings["CINECLOUD_STORAGE__BACKEND"] == "s3"
    assert settings["CINECLOUD_WORKER__TOKEN"] == "t0k"
    assert settings["CINECLOUD_WORKER__MODELS"] == '["a/b"]'
    assert settings["CINECLOUD_WORKER__SERVER_URL"] == "http://cp:8000"
    assert "PATH" not in settings and "PYTHONPATH" not in settings


def test_node_env_keeps_the_node_and_puts_this_cinecloud_first() -> None:
    base = {"PATH": "/node/bin", "PYTHONPATH": os.pathsep.join(["/node/lib", "/other"])}
    env = node_env({"CINECLOUD_WORKER__NAME": "w"}, base)
    assert env["PATH"] == "/node/bin" and env["CINECLOUD_WORKER__NAME"] == "w"
    first, *rest = env["PYTHONPATH"].split(os.pathsep)
    assert (Path(first) / "cinecloud" / "config" / "__init__.py").is_file()
    assert rest == ["/node/lib", "/other"]
