"""A domain is added with one YAML entry and one service module: no change to jobs, triggers or core."""

from __future__ import annotations

import datetime as dt
import textwrap

import openpyxl

TOY_SERVICE = textwrap.dedent('''
    """toy_fruit: fruit deliveries, a domain added at test time."""

    from __future__ import annotations

    import datetime as dt

    from pydantic import BaseModel, Field

    from services.ingestion import cleansing as c
    from services.ingestion.domains.fields import RawCell, header
    from services.ingestion.pipeline import TabularDomainService


    class DeliveryRow(BaseModel):
        day: RawCell = header("Delivery Day", "Day")
        fruit: RawCell = header("Fruit")
        boxes: RawCell = header("Boxes", "Count")


    class Delivery(BaseModel):
        day: dt.date
        fruit: str = Field(pattern=r"^[A-Z]+$")
        boxes: int = Field(ge=0)


    service = TabularDomainService(DeliveryRow, Delivery, {"day": c.date, "fruit": c.code, "boxes": c.integer})
''')

TOY_DOMAIN = {
    "description": "Fruit deliveries",
    "service": "toy_fruit_service",
    "source": {"base_folder": "toy_fruit", "patterns": ["*.xlsx"], "version_folders": "none"},
    "target": {"table": "toy_fruit", "primary_key": ["day", "fruit"], "load_mode": "delete_insert"},
    "references": [{"table": "fruits", "key": ["fruit"], "columns": {"fruit": "fruit"}}],
    "quality": {"required_columns": ["day", "fruit", "boxes"], "max_drift": 0.5},
}


def test_a_toy_domain_from_yaml_and_one_module(runner, data_root, data_sources, tmp_path, monkeypatch, warehouse):
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "toy_fruit_service.py").write_text(TOY_SERVICE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(modules))
    root = data_root(copy_samples=False)
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Fruit deliveries"])
    sheet.append([" delivery day", "FRUIT", "Boxes"])
    sheet.append([dt.date(2024, 6, 1), " apple ", 3])
    sheet.append(["2024/06/02", "pear", "1,200"])
    sheet.append(["02.06.2024", "Apple", "seven"])
    sheet.append(["Total", None, 1203])
    (root / "toy_fruit").mkdir()
    workbook.save(root / "toy_fruit" / "deliveries.xlsx")
    data_sources(lambda config: config["domains"].update(toy_fruit=TOY_DOMAIN))

    run = runner.run({"domains": ["toy_fruit"], "execute": True})

    assert run.error is None
    rows = warehouse.execute("SELECT day::text, fruit, boxes FROM warehouse.toy_fruit ORDER BY day").fetchall()
    assert rows == [("2024-06-01", "APPLE", 3), ("2024-06-02", "PEAR", 1200)]
    assert warehouse.execute("SELECT fruit FROM warehouse.fruits ORDER BY fruit").fetchall() == [("APPLE",), ("PEAR",)]
    [result] = run.results[2]
    assert (result["input"], result["output"], result["rejected"], result["skipped"]) == (4, 2, 1, 1)
    assert result["rejected_sample"][0]["reason"] == "boxes: cannot read 'seven'"
