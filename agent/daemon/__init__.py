"""The long-running half: ``acme-preflight run`` (scheduler, spool, delivery, status)."""
