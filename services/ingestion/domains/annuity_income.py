"""annuity_income: monthly fee income per plan, client company and product line.

This sheet carries company ids, so its records also backfill the company reference table that
annuity_performance's enrichment reads.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from services.ingestion import cleansing as c
from services.ingestion.domains.fields import CODE_PATTERN, MONEY, RawCell, header
from services.ingestion.pipeline import TabularDomainService


class AnnuityIncomeRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    report_date: RawCell = header("Report Date", "Month", "月度")
    plan_code: RawCell = header("Plan Code", "计划代码")
    company_id: RawCell = header("Company ID", "Client ID", "客户编号")
    company_name: RawCell = header("Client Name", "Company", "客户名称")
    product_line: RawCell = header("Product Line", "Business Type", "业务类型")
    fee_income: RawCell = header("Fee Income", "Income", "收入")
    management_fee: RawCell = header("Management Fee", "管理费", required=False)
    custody_fee: RawCell = header("Custody Fee", "托管费", required=False)


class AnnuityIncome(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    report_date: dt.date
    plan_code: str = Field(pattern=CODE_PATTERN, max_length=32)
    company_id: str = Field(pattern=CODE_PATTERN, max_length=32)
    company_name: str = Field(min_length=1, max_length=200)
    product_line: str = Field(pattern=CODE_PATTERN, max_length=32)
    fee_income: float = Field(json_schema_extra=MONEY)
    management_fee: float | None = Field(None, json_schema_extra=MONEY)
    custody_fee: float | None = Field(None, json_schema_extra=MONEY)


service = TabularDomainService(
    input_model=AnnuityIncomeRow,
    output_model=AnnuityIncome,
    cleaners={
        "report_date": c.date,
        "plan_code": c.code,
        "company_id": c.code,
        "company_name": c.name,
        "product_line": c.code,
        "fee_income": c.number,
        "management_fee": c.number,
        "custody_fee": c.number,
    },
)
