"""max_files limits the files read; records of every file read are loaded in one operation per table."""

from __future__ import annotations

from services.ingestion.samples import generate_benchmark


def test_max_files_limits_and_accumulates(runner, data_root, table_rows):
    root = data_root(copy_samples=False)
    generate_benchmark(root, rows=90, workbooks=3)
    run = runner.run({"domains": ["annuity_performance"], "execute": True, "max_files": 2})
    assert run.error is None
    [found] = run.results[1]
    assert (found["matched"], len(found["files"])) == (3, 2)
    assert [r["file"] for r in run.results[2]] == [f["path"] for f in found["files"]]
    outputs = [r["output"] for r in run.results[2]]
    [load] = run.results[5][0]["tables"]
    assert load["rows"] == sum(outputs) == table_rows("warehouse.annuity_performance")
    assert all(o > 0 for o in outputs)


def test_all_files_when_max_files_is_unset(runner, data_root, table_rows, warehouse):
    root = data_root(copy_samples=False)
    generate_benchmark(root, rows=90, workbooks=3)
    run = runner.run({"domains": ["annuity_performance"], "execute": True})
    assert len(run.results[2]) == 3
    by_file = warehouse.execute(
        "SELECT count(DISTINCT _source_file), count(*) FROM warehouse.annuity_performance"
    ).fetchone()
    assert by_file == (3, sum(r["output"] for r in run.results[2]))
