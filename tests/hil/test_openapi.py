"""Property-based requests generated from the OpenAPI document (schemathesis) find no server error
and no response that contradicts the document."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.config import build_config
from hil.runs import RunFolder
from hil.service import create_app
from hil.trainer import Trainer

TOKEN = "schema-token"


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    config = build_config({"epochs": 1, "hidden": [16], "run_dir": runs / "run"})
    Trainer(config, RunFolder.create(config), progress=False).fit()
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(runs, TOKEN))


def test_every_operation_keeps_its_documented_promises(schema):
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9

    @given(st.data())
    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def check(data):
        case = data.draw(st.sampled_from(operations).flatmap(lambda op: op.as_strategy()))
        if case.path_parameters and data.draw(st.booleans()):
            case.path_parameters["run_id"] = "run"  # the run that exists, not only random names
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})

    check()
