"""Contract tests: one suite of behaviour that every adapter of a port must show."""

import pytest

pytest.register_assert_rewrite("tests.contract.transport_contract")
