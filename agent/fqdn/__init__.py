"""FQDN discovery and resolution for the ``fqdn_resolution`` check.

- :mod:`agent.fqdn.names`: what discovery returns, and which names are FQDNs;
- :mod:`agent.fqdn.nginx`, :mod:`agent.fqdn.apache`: web server configuration readers;
- :mod:`agent.fqdn.hosts`: ``/etc/hosts`` with glibc's semantics;
- :mod:`agent.fqdn.resolve`: the DNS and system (getaddrinfo) views;
- :mod:`agent.fqdn.locality`: whether an address belongs to this host.
"""
