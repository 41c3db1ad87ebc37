"""Rendering the nginx edge template (pure: the template is given as text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinecloud.delivery.edge import EdgeSettings, render_edge_config

SETTINGS = EdgeSettings(
    listen="127.0.0.1:8080",
    origin="127.0.0.1:8000",
    cache_dir=Path("/var/cache/cinecloud"),
    secret="s3cr3t-token_value-0123456789",
)


def test_fills_placeholders_and_keeps_nginx_variables() -> None:
    template = 'listen ${EDGE_LISTEN}; secure_link_md5 "$secure_link_expires$uri ${EDGE_SECRET}";'
    assert render_edge_config(template, SETTINGS) == (
        'listen 127.0.0.1:8080; secure_link_md5 "$secure_link_expires$uri '
        's3cr3t-token_value-0123456789";'
    )


def test_unknown_placeholder() -> None:
    with pytest.raises(ValueError, match="EDGE_NOPE"):
        render_edge_config("x ${EDGE_NOPE};", SETTINGS)


@pytest.mark.parametrize(
    "change",
    [
        {"secret": 'abc"; return 200; #0123456789'},
        {"secret": "short"},
        {"secret": "has space in it 0123456789"},
        {"listen": "8080; evil"},
        {"origin": "http://127.0.0.1:8000"},
        {"cache_dir": Path("relative/cache")},
        {"cache_dir": Path("/tmp/a b")},
        {"user": "root;"},
        {"cache_max_size": "10 g"},
    ],
)
def test_rejects_values_that_would_break_the_config(change: dict[str, object]) -> None:
    settings = EdgeSettings(**{**SETTINGS.__dict__, **change})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="edge"):
        render_edge_config("${EDGE_LISTEN}", settings)


def test_secret_is_not_echoed_in_errors() -> None:
    settings = EdgeSettings(**{**SETTINGS.__dict__, "secret": "bad secret value 1234567"})
    with pytest.raises(ValueError) as exc:
        render_edge_config("", settings)
    assert "bad secret" not in str(exc.value)
