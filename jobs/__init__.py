"""Declarative job types; every JobDefinition subclass under this package is registered at start-up."""
