"""annuity_performance: monthly assets, flows and returns per plan, portfolio and client company.

The sheet names companies but not their ids; ids come from enrichment (reference table, then an optional
provider), unknown names get temporary ids.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from services.ingestion import cleansing as c
from services.ingestion.domains.fields import CODE_PATTERN, MONEY, RATE, RawCell, header
from services.ingestion.pipeline import TabularDomainService


class AnnuityPerformanceRow(BaseModel):
    """One raw sheet row, as the header names it."""

    model_config = ConfigDict(frozen=True)

    report_date: RawCell = header("Report Date", "Month", "Valuation Date", "月度")
    plan_code: RawCell = header("Plan Code", "Plan No", "计划代码")
    plan_name: RawCell = header("Plan Name", "计划名称", required=False)
    portfolio_code: RawCell = header("Portfolio Code", "Portfolio", "组合代码")
    company_name: RawCell = header("Client Name", "Company", "Company Name", "客户名称")
    business_type: RawCell = header("Business Type", "业务类型", required=False)
    beginning_assets: RawCell = header("Opening Assets", "Beginning Assets", "期初资产规模", required=False)
    ending_assets: RawCell = header("Closing Assets", "Ending Assets", "期末资产规模")
    contributions: RawCell = header("Contributions", "供款", required=False)
    benefits_paid: RawCell = header("Benefits Paid", "Outflows", "流失(含待遇支付)", required=False)
    investment_income: RawCell = header("Investment Income", "投资收益", required=False)
    annualised_return: RawCell = header("Annualised Return", "Return", "年化收益率", required=False)


class AnnuityPerformance(BaseModel):
    """One warehouse row of `warehouse.annuity_performance`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    report_date: dt.date
    plan_code: str = Field(pattern=CODE_PATTERN, max_length=32)
    plan_name: str | None = None
    portfolio_code: str = Field(pattern=CODE_PATTERN, max_length=32)
    company_name: str = Field(min_length=1, max_length=200)
    company_id: str = Field(min_length=1, max_length=32)
    business_type: str | None = None
    beginning_assets: float | None = Field(None, json_schema_extra=MONEY)
    ending_assets: float = Field(json_schema_extra=MONEY)
    contributions: float | None = Field(None, json_schema_extra=MONEY)
    benefits_paid: float | None = Field(None, json_schema_extra=MONEY)
    investment_income: float | None = Field(None, json_schema_extra=MONEY)
    annualised_return: float | None = Field(None, ge=-1.0, le=10.0, json_schema_extra=RATE)


service = TabularDomainService(
    input_model=AnnuityPerformanceRow,
    output_model=AnnuityPerformance,
    cleaners={
        "report_date": c.date,
        "plan_code": c.code,
        "plan_name": c.name,
        "portfolio_code": c.code,
        "company_name": c.name,
        "business_type": c.name,
        "beginning_assets": c.number,
        "ending_assets": c.number,
        "contributions": c.number,
        "benefits_paid": c.number,
        "investment_income": c.number,
        "annualised_return": c.number,
    },
    fill_down=("plan_code", "plan_name"),
)
