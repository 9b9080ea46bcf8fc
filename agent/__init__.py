"""acme-preflight: readiness checks for DigiCert ACME automation."""

__version__ = "0.1.0"
