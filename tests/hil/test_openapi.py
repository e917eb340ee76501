"""Property-based requests generated from the OpenAPI document (schemathesis) find no server error
and no response that contradicts the document: valid requests, requests that break the document
(numbers out of range, wrong types), and requests with generated tokens (non-ASCII ones too)."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from hil.config import build_config
from hil.runs import RunFolder
from hil.service import MAX_CURSOR, create_app
from hil.trainer import Trainer

TOKEN = "schema-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    config = build_config({"epochs": 1, "hidden": [16], "run_dir": runs / "run"})
    Trainer(config, RunFolder.create(config), progress=False).fit()
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(runs, TOKEN), headers=AUTH)


def _seen(case) -> set[str]:
    """What a case exercises of the inputs that once reached a server error."""
    query = case.query or {}
    token = str(query.get("token", ""))
    since = query.get("since")
    return {name for name, hit in [("a non-ASCII token", not token.isascii()),
                                   ("since beyond SQLite's integers", isinstance(since, int) and since > MAX_CURSOR)]
            if hit}


OPERATIONS = ["GET /api/status", "GET /api/runs", "GET /api/runs/{run_id}", "GET /api/runs/{run_id}/metrics",
              "GET /api/runs/{run_id}/events", "POST /api/runs/{run_id}/stop", "POST /api/runs/{run_id}/pause",
              "POST /api/runs/{run_id}/resume", "GET /metrics"]


def test_the_document_lists_every_operation(schema):
    assert sorted(f"{r.ok().method.upper()} {r.ok().path}" for r in schema.get_all_operations()) == sorted(OPERATIONS)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("name", OPERATIONS)
def test_every_operation_keeps_its_documented_promises(schema, name, mode):
    method, path = name.split()
    operation = schema[path][method]
    seen: set[str] = set()

    @given(st.data())
    @settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def check(data):
        case = data.draw(operation.as_strategy(generation_mode=mode))
        if case.path_parameters and mode == GenerationMode.POSITIVE and data.draw(st.booleans()):
            case.path_parameters["run_id"] = "run"  # the run that exists, not only random names
        token = data.draw(st.booleans())  # the right token, or whatever the case carries
        if not token:
            seen.update(_seen(case))
        case.call_and_validate(headers=AUTH if token else None)

    check()
    assert "a non-ASCII token" in seen
    if name == "GET /api/runs/{run_id}/metrics" and mode == GenerationMode.NEGATIVE:
        assert "since beyond SQLite's integers" in seen
