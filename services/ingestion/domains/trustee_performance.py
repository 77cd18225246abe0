"""trustee_performance: monthly returns of each trustee-managed portfolio against its benchmark."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from services.ingestion import cleansing as c
from services.ingestion.domains.fields import CODE_PATTERN, MONEY, RATE, RawCell, header
from services.ingestion.models import DataSource
from services.ingestion.pipeline import TabularDomainService


class TrusteePerformanceRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    report_date: RawCell = header("Report Date", "Month", "月度")
    plan_code: RawCell = header("Plan Code", "计划代码")
    portfolio_code: RawCell = header("Portfolio Code", "组合代码")
    trustee_name: RawCell = header("Trustee", "Trustee Name", "受托人")
    return_rate: RawCell = header("Return", "Return Rate", "收益率")
    benchmark_rate: RawCell = header("Benchmark", "Benchmark Return", "基准收益率", required=False)
    net_assets: RawCell = header("Net Assets", "资产净值", required=False)


class TrusteePerformance(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    report_date: dt.date
    plan_code: str = Field(pattern=CODE_PATTERN, max_length=32)
    portfolio_code: str = Field(pattern=CODE_PATTERN, max_length=32)
    trustee_name: str = Field(min_length=1, max_length=200)
    return_rate: float = Field(ge=-1.0, le=10.0, json_schema_extra=RATE)
    benchmark_rate: float | None = Field(None, ge=-1.0, le=10.0, json_schema_extra=RATE)
    excess_return: float | None = Field(None, json_schema_extra=RATE)
    net_assets: float | None = Field(None, ge=0, json_schema_extra=MONEY)


def _excess_return(frame: pd.DataFrame, _source: DataSource) -> pd.DataFrame:
    frame["excess_return"] = (frame["return_rate"] - frame["benchmark_rate"]).round(6)
    return frame


service = TabularDomainService(
    input_model=TrusteePerformanceRow,
    output_model=TrusteePerformance,
    cleaners={
        "report_date": c.date,
        "plan_code": c.code,
        "portfolio_code": c.code,
        "trustee_name": c.name,
        "return_rate": c.number,
        "benchmark_rate": c.number,
        "net_assets": c.number,
    },
    derive=_excess_return,
)
