"""Entry points: the composition root, the CLI, HTTP handlers and queue triggers — thin wiring only."""
