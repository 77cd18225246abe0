"""Test doubles of external SDKs that cannot run here (Azure Service Bus)."""
