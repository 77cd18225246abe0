"""Job types and handlers for failure drills in tests: short leases, permanent failures, a raising finalize."""
