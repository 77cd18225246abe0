"""The ingest run report goes through the artifact store: written to Blob Storage (Azurite), read back."""

from __future__ import annotations

import csv
import io
import json
import uuid

from infrastructure.artifacts import blob


def test_finalize_writes_report_and_csvs_to_blob_storage(runner, data_root, ingest_env, azurite):
    data_root()
    container = f"reports{uuid.uuid4().hex[:12]}"
    store = blob.BlobArtifactStore(blob.container_from_connection_string(azurite, container))
    ingest_env.update(artifacts=store)
    run = runner.run({"domains": ["annuity_performance"]})
    assert run.error is None and run.report is not None
    files = run.report["files"]
    assert files["report"].endswith(f"/{container}/{run.job_id}/report.json")
    report = json.loads(store.get(f"{run.job_id}/report.json"))
    assert report["job_id"] == run.job_id and report["mode"] == "plan only"
    unknown = list(csv.DictReader(io.StringIO(store.get(f"{run.job_id}/unknown_names.csv").decode())))
    assert len(unknown) == run.report["domains"]["annuity_performance"]["unknown_names"] == 16
    rejected = store.get(f"{run.job_id}/rejected_rows.csv").decode().splitlines()
    assert rejected[0] == "domain,file,sheet,row,reason,values"
