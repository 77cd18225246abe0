"""Domain services, one module per domain, each exposing `service` (a `DomainService`)."""
