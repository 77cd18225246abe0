"""Data ingestion: domains from `config/data_sources.yml`, Excel reading, cleansing, staging and loading."""
