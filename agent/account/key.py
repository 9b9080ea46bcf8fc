"""The CertCentral API key: ``[certcentral] api_key_file``, else a systemd credential."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from agent.config import CertCentralConfig, ConfigError

CREDENTIAL_NAME = "certcentral-api-key"  # LoadCredential=certcentral-api-key:/path
MAX_KEY_FILE = 4096
KEY = "[certcentral] api_key_file"


def key_source(cfg: CertCentralConfig, environ: Mapping[str, str] | None = None) -> Path | None:
    """Where the key would be read from, or None when neither place is set."""
    if cfg.api_key_file is not None:
        return cfg.api_key_file
    env = os.environ if environ is None else environ
    creds = env.get("CREDENTIALS_DIRECTORY", "")
    if creds and (Path(creds) / CREDENTIAL_NAME).is_file():
        return Path(creds) / CREDENTIAL_NAME
    return None


def load_api_key(cfg: CertCentralConfig, environ: Mapping[str, str] | None = None) -> str:
    """The key, or ConfigError naming where it should be (never quoting the file's text)."""
    path = key_source(cfg, environ)
    if path is None:
        raise ConfigError(
            KEY,
            "is required for the account checks (or a systemd credential "
            f"{CREDENTIAL_NAME} in $CREDENTIALS_DIRECTORY)",
        )
    key = KEY if cfg.api_key_file is not None else f"systemd credential {CREDENTIAL_NAME}"
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise ConfigError(key, f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(key, f"{path}: is a directory") from None
    except PermissionError:
        raise ConfigError(key, f"{path}: permission denied") from None
    except OSError as e:
        raise ConfigError(key, f"{path}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_KEY_FILE:
        raise ConfigError(key, f"{path}: larger than {MAX_KEY_FILE} bytes; not an API key file")
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path}: the key is not ASCII text") from None
    if not text:
        raise ConfigError(key, f"{path}: the file is empty")
    if any(not 0x21 <= ord(c) <= 0x7E for c in text):
        raise ConfigError(
            key, f"{path}: the key contains spaces, line breaks or control characters"
        )
    if len(text) < 16:
        raise ConfigError(key, f"{path}: the key is shorter than 16 characters; not an API key")
    return text
