"""The sample generator: the checked-in set is small and complete; benchmark data splits N rows over M files."""

from __future__ import annotations

from services.ingestion.catalog import load_catalog
from services.ingestion.config import PROJECT_ROOT
from services.ingestion.discovery import discover
from services.ingestion.excel import HeaderSpec, read_table
from services.ingestion.samples import SAMPLE_SET, generate_benchmark, generate_sample_set


def test_checked_in_sample_set_is_small_and_discoverable():
    root = PROJECT_ROOT / "sample_data"
    files = sorted(p for p in root.rglob("*.xlsx"))
    assert len(files) == len(SAMPLE_SET)
    assert sum(p.stat().st_size for p in files) < 300_000
    catalog = load_catalog()
    for name in catalog.names():
        found = discover(name, catalog.domain(name).source, root)
        assert found.files, name
    assert discover("annuity_performance", catalog.domain("annuity_performance").source, root).version == "V2"


def test_sample_set_regenerates(tmp_path):
    written = generate_sample_set(tmp_path)
    assert sorted(p.relative_to(tmp_path) for p in written) == sorted(
        (PROJECT_ROOT / "sample_data").joinpath(d, r).relative_to(PROJECT_ROOT / "sample_data")
        for d, r, *_ in SAMPLE_SET
    )


def test_benchmark_spreads_rows_over_workbooks_with_unique_keys(tmp_path):
    paths = generate_benchmark(tmp_path, rows=103, workbooks=4, messy=False)
    assert [p.parent.relative_to(tmp_path).as_posix() for p in paths] == ["annuity_performance/V1"] * 4
    service = load_catalog().service("annuity_performance")
    frames = [read_table(p, "Performance", HeaderSpec.from_model(service.input_model)).frame for p in paths]
    assert [len(f) for f in frames] == [26, 26, 26, 25]
    keys = [k for f in frames for k in f["portfolio_code"]]
    assert len(set(keys)) == 103
