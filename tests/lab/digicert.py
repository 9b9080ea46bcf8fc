"""The whole DigiCert stand-in, run on a background loop so sync and async tests (and
subprocesses) can use it: HTTPS for acme/daas.digicert.com, the DNS that resolves them,
optionally the sensor proxy and failing endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tests.lab.base import LabServer, LabThread
from tests.lab.config import LAB_IP, LAB_NAMESERVER, write_lab_config
from tests.lab.dns import DnsServer
from tests.lab.https import HttpsServer
from tests.lab.pki import LabPki
from tests.lab.proxy import ConnectProxy

if TYPE_CHECKING:
    from typing import Self  # 3.11+; annotations only, so 3.10 can run the lab

HOSTNAMES = ("acme.digicert.com", "daas.digicert.com")
SENSOR_HOST = "127.0.0.4"
SENSOR_PORT = 48999  # sensor 3.8.47 and newer

S = TypeVar("S", bound=LabServer)


class DigicertLab:
    """HTTPS on ``ip:https_port`` presenting ``pki.valid`` and the lab DNS on
    ``nameserver:dns_port`` resolving both DigiCert names to ``ip``.

    ``ca_bundle`` is a PEM of the lab DigiCert root (the fixture sets SSL_CERT_FILE to it).
    Everything started through the lab stops in :meth:`close`.
    """

    def __init__(
        self,
        pki: LabPki,
        workdir: Path,
        *,
        ip: str = LAB_IP,
        https_port: int = 443,
        nameserver: str = LAB_NAMESERVER,
        dns_port: int = 53,
    ) -> None:
        self.pki = pki
        self.workdir = workdir
        self.ip = ip
        self.ca_bundle = pki.write_bundle(workdir / "lab-ca.pem")
        self.thread = LabThread()
        try:
            self.https = self.thread.start(HttpsServer(pki.valid, ip, https_port))
            zone = {name: [ip] for name in HOSTNAMES}
            self.dns = self.thread.start(DnsServer(zone, nameserver, dns_port))
        except BaseException:
            self.thread.close()
            raise

    @property
    def nameserver(self) -> str:
        """The resolver address as the agent's config spells it (``IP`` or ``IP:PORT``)."""
        return self.dns.host if self.dns.port == 53 else f"{self.dns.host}:{self.dns.port}"

    def start(self, server: S) -> S:
        """Start another lab server (endpoint, second HTTPS...) on the lab's loop."""
        return self.thread.start(server)

    def start_sensor(
        self, host: str = SENSOR_HOST, port: int = SENSOR_PORT, **kwargs: Any
    ) -> ConnectProxy:
        """Start the sensor proxy, tunnelling both DigiCert names to the lab HTTPS."""
        upstreams: Mapping[str, tuple[str, int]] = kwargs.pop(
            "upstreams", dict.fromkeys(HOSTNAMES, self.https.address)
        )
        return self.start(ConnectProxy(host, port, upstreams=upstreams, **kwargs))

    def write_config(self, path: Path | None = None, **overrides: Mapping[str, Any] | None) -> Path:
        """A config TOML for the agent pointed at this lab; overrides merge per section.

        ``lab.write_config(agent={"timeout": "0.5s"}, sensor={"host": "127.0.0.4"})``
        """
        return write_lab_config(
            path or self.workdir / "config.toml",
            state_dir=self.workdir / "state",
            ip=self.ip,
            port=self.https.port,
            nameserver=self.nameserver,
            **overrides,
        )

    def close(self) -> None:
        self.thread.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
