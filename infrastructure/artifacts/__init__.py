"""Adapters of `core.artifacts.ArtifactStore`: a local folder and Azure Blob Storage."""
