"""In-memory adapters of the state store and the transport, for unit tests."""
