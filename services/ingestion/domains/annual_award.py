"""annual_award: awards won by plans and their sponsors, appended year by year."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from services.ingestion import cleansing as c
from services.ingestion.domains.fields import CODE_PATTERN, MONEY, RawCell, header
from services.ingestion.models import DataSource
from services.ingestion.pipeline import TabularDomainService


class AnnualAwardRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    award_year: RawCell = header("Year", "Award Year", "年度", required=False)
    award_date: RawCell = header("Award Date", "Date", "颁奖日期", required=False)
    award_name: RawCell = header("Award", "Award Name", "奖项")
    recipient_name: RawCell = header("Recipient", "Winner", "获奖单位")
    plan_code: RawCell = header("Plan Code", "计划代码", required=False)
    region: RawCell = header("Region", "地区", required=False)
    amount: RawCell = header("Amount", "Prize", "奖金", required=False)


class AnnualAward(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    award_year: int = Field(ge=1990, le=2100)
    award_date: dt.date | None = None
    award_name: str = Field(min_length=1, max_length=200)
    recipient_name: str = Field(min_length=1, max_length=200)
    plan_code: str | None = Field(None, pattern=CODE_PATTERN, max_length=32)
    region: str | None = None
    amount: float | None = Field(None, ge=0, json_schema_extra=MONEY)


def _year_from_date(frame: pd.DataFrame, _source: DataSource) -> pd.DataFrame:
    """A missing award year is taken from the award date."""
    missing = frame["award_year"].isna() & frame["award_date"].notna()
    if missing.any():
        frame.loc[missing, "award_year"] = frame.loc[missing, "award_date"].map(lambda d: d.year).astype("float64")
    return frame


service = TabularDomainService(
    input_model=AnnualAwardRow,
    output_model=AnnualAward,
    cleaners={
        "award_year": c.integer,
        "award_date": c.date,
        "award_name": c.name,
        "recipient_name": c.name,
        "plan_code": c.code,
        "region": c.name,
        "amount": c.number,
    },
    derive=_year_from_date,
)
