"""pytest plugin that registers the lab fixtures (see tests/lab/README.md)."""

from __future__ import annotations

import pytest

from tests.lab.pki import LabPki, make_pki

# Cleared for every test, httpx-style: nothing a developer's shell exports may route a
# test through a proxy or swap its trust store.
ENV_VARS = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)


@pytest.fixture(autouse=True)
def _clean_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)


@pytest.fixture(scope="session")
def lab_pki() -> LabPki:
    """The lab's CAs and leaf certs (see tests/lab/pki.py), made once per session."""
    return make_pki()
