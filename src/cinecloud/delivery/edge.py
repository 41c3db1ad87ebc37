"""The nginx edge's config: ``deploy/nginx/cinecloud.conf`` rendered for one deployment.

The template names its settings ``${EDGE_*}`` (what ``envsubst`` fills); nginx's own
``$variables`` are left alone. The signing secret goes into ``secure_link_md5``
verbatim, so it must be a plain token (``secrets.token_urlsafe`` makes one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cinecloud.config import repo_root

__all__ = ["EDGE_TEMPLATE", "EdgeSettings", "render_edge_config"]

#: The template in a source checkout.
EDGE_TEMPLATE = repo_root() / "deploy" / "nginx" / "cinecloud.conf"

_PLACEHOLDER = re.compile(r"\$\{(EDGE_[A-Z_]+)\}")
_SAFE_SECRET = re.compile(r"[A-Za-z0-9_\-.~+/=]{16,256}")
_ADDRESS = re.compile(r"[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}")
_SIZE = re.compile(r"[0-9]+[kmgKMG]?")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


@dataclass(frozen=True)
class EdgeSettings:
    """What one edge needs: where it listens, the origin, its cache, and the secret."""

    listen: str
    origin: str
    cache_dir: Path
    secret: str
    user: str = "www-data"
    cache_max_size: str = "10g"

    def values(self) -> dict[str, str]:
        checks = [
            ("listen", self.listen, _ADDRESS),
            ("origin", self.origin, _ADDRESS),
            ("secret", self.secret, _SAFE_SECRET),
            ("user", self.user, _USER),
            ("cache_max_size", self.cache_max_size, _SIZE),
        ]
        for name, value, pattern in checks:
            if not pattern.fullmatch(value):
                shown = "<hidden>" if name == "secret" else repr(value)
                raise ValueError(f"edge {name} is not usable in nginx config: {shown}")
        cache_dir = str(self.cache_dir)
        if not Path(cache_dir).is_absolute() or re.search(r"[\s;{}'\"$\\]", cache_dir):
            raise ValueError(f"edge cache_dir must be an absolute plain path: {cache_dir!r}")
        return {
            "EDGE_LISTEN": self.listen,
            "EDGE_ORIGIN": self.origin,
            "EDGE_CACHE_DIR": cache_dir,
            "EDGE_SECRET": self.secret,
            "EDGE_USER": self.user,
            "EDGE_CACHE_MAX_SIZE": self.cache_max_size,
        }


def render_edge_config(template: str, settings: EdgeSettings) -> str:
    """``template`` with every ``${EDGE_*}`` filled; unknown placeholders raise."""
    values = settings.values()
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - set(values))
    if unknown:
        raise ValueError(f"edge template has unknown placeholders: {unknown}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
