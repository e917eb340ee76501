"""Property-based requests generated from the OpenAPI document (schemathesis) find no server error
and no response that contradicts the document."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from hil.config import build_config
from hil.runs import RunFolder
from hil.service import create_app
from hil.trainer import Trainer

TOKEN = "schema-token"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    config = build_config({"epochs": 1, "hidden": [16], "run_dir": runs / "run"})
    Trainer(config, RunFolder.create(config), progress=False).fit()
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(runs, TOKEN))


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_documented_promises(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
