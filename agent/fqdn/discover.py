"""All web server names: nginx and Apache discovery together."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.fqdn import apache, nginx
from agent.fqdn.names import Discovery


def discover(nginx_conf: Path, apache_roots: Sequence[Path]) -> Discovery:
    """Names from ``nginx_conf`` (and includes), then from each Apache root."""
    out = nginx.discover(nginx_conf)
    out.extend(apache.discover(apache_roots))
    return out
