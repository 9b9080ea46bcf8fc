"""What the daemon refuses, and warns about, before it starts.

``acme-preflight run`` and ``acme-preflight config validate`` both call :func:`startup`, so a
config that validates is one the daemon starts with ("validate, then reload" is safe).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agent.config import Config, is_loopback_host, redact_url
from agent.files import ACTS_ON_ACCOUNT, secret_file_warning, state_dir_problem

EX_CANTCREAT = 73


class StartupError(Exception):
    """A problem that is not the config's syntax, with the exit code it gets (73: state_dir)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Startup:
    token: str | None
    warnings: tuple[str, ...]


def startup(config: Config, environ: Mapping[str, str] | None = None) -> Startup:
    """Check everything ``run`` needs; raise ``ConfigError`` (exit 78) or
    :class:`StartupError`, else return the collector token and the warnings to show."""
    # The daemon's modules, imported here so `config validate` alone stays light.
    from agent.daemon.sender import load_token, ssl_context

    cfg = config.collector
    token = load_token(cfg, environ) if cfg.url else None
    ssl_context(cfg)  # ca_file and the client certificate pair load
    problem = state_dir_problem(config.agent.state_dir)
    if problem is None:
        problem = _creatable(config.agent.state_dir)
    if problem is not None:
        raise StartupError(f"[agent] state_dir: {problem}", EX_CANTCREAT)
    return Startup(token, tuple(startup_warnings(config, token)))


def startup_warnings(config: Config, token: str | None) -> list[str]:
    """What the daemon runs with but an administrator should fix (also checked on reload)."""
    found: list[str] = []
    cfg = config.collector
    if cfg.url and cfg.token_file is not None:
        w = secret_file_warning(cfg.token_file, "[collector] token_file")
        if w:
            found.append(w)
    key_file = config.certcentral.api_key_file
    if key_file is not None:
        w = secret_file_warning(key_file, "[certcentral] api_key_file", ACTS_ON_ACCOUNT)
        if w:
            found.append(w)
    if (
        token
        and cfg.url
        and cfg.url.startswith("http://")
        and not is_loopback_host(urlsplit(cfg.url).hostname or "")
    ):
        found.append(
            f"[collector] url: {redact_url(cfg.url)} is plain http:// to another host: the "
            "token and every report cross the network unencrypted; use https://"
        )
    return found


def _creatable(path: Path) -> str | None:
    """Why a missing state_dir cannot be made (the daemon creates it), or None."""
    if os.path.lexists(path):
        return None
    parent = path.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not os.path.isdir(parent):
        return f"cannot create {path}: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {path}: {parent} is not writable"
    return None
