"""Adapters behind CoreMachine's ports: PostgreSQL store and queue, transports, settings, logging."""
