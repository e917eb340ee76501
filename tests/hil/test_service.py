"""The status service through FastAPI's TestClient, against runs training in another thread."""

import json
import threading
import time
from pathlib import Path

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from hil.access import OPEN_PATHS
from hil.config import build_config
from hil.runs import RunFolder
from hil.service import create_app
from hil.trainer import Trainer

TOKEN = "secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _trainer(tmp_path, name="run", epochs=200):
    config = build_config({"epochs": epochs, "hidden": [32], "batch_size": 64, "run_dir": tmp_path / name})
    return Trainer(config, RunFolder.create(config), progress=False)


def _in_thread(trainer):
    result = {}
    thread = threading.Thread(target=lambda: result.update(trainer.fit()), daemon=True)
    thread.start()
    return thread, result


def _wait(predicate, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def client(tmp_path):
    return TestClient(create_app(tmp_path, TOKEN))


def test_read_endpoints_describe_a_finished_run(tmp_path, client):
    summary = _trainer(tmp_path, epochs=2).fit()
    runs = client.get("/api/runs", headers=AUTH).json()
    assert [r["id"] for r in runs] == ["run"] and runs[0]["status"] == "finished"
    assert runs[0]["config"]["lr"] == 0.01  # what the dashboard's run table compares runs by
    latest = runs[0]["latest"]
    assert latest["test_accuracy_cumulative"] == summary["test_accuracy"] and "train_loss" in latest
    detail = client.get("/api/runs/run", headers=AUTH).json()
    assert detail["config"]["epochs"] == 2 and detail["counters"]["queries"] == summary["device_queries"]
    page = client.get("/api/runs/run/metrics", headers=AUTH).json()
    names = {r["name"] for r in page["rows"]}
    assert {"loss", "queries_per_second", "test_accuracy_cumulative", "test_accuracy_final_layer"} <= names
    accuracy = [r["value"] for r in page["rows"] if r["name"] == "test_accuracy_cumulative"]
    assert accuracy[-1] == summary["test_accuracy"]
    assert client.get(f"/api/runs/run/metrics?since={page['next']}", headers=AUTH).json() == {
        "rows": [], "next": page["next"]}
    status = client.get("/api/status", headers=AUTH).json()
    assert status["service"] == "ok" and status["runs_by_status"] == {"finished": 1} and status["devices"] == []
    text = client.get("/metrics", headers=AUTH).text
    assert f'hil_run_metric{{name="test_accuracy_cumulative",run="run"}} {summary["test_accuracy"]}' in text
    assert 'hil_device_counter{name="queries",run="run"}' in text
    events = client.get("/api/runs/run/events", headers=AUTH).text
    assert "event: started" in events and "event: finished" in events
    assert client.get("/").status_code == 200 and "hil" in client.get("/static/app.js").text
    assert "uPlot" in client.get("/static/vendor/uPlot.iife.min.js").text  # the charts, open like the page
    assert "MIT License" in client.get("/static/vendor/LICENSE").text


def test_sse_streams_a_live_run_and_resumes_from_last_event_id(tmp_path, client):
    trainer = _trainer(tmp_path, epochs=4)
    thread, _ = _in_thread(trainer)
    kinds, ids = [], []
    with client.stream("GET", "/api/runs/run/events", headers=AUTH) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kinds.append(line[7:])
            if line.startswith("id: "):
                ids.append(int(line[4:]))
    thread.join()
    assert kinds == ["started", "checkpoint", "checkpoint", "checkpoint", "checkpoint", "finished"]
    resumed = client.get("/api/runs/run/events", headers={**AUTH, "Last-Event-ID": str(ids[2])}).text
    assert [line[4:] for line in resumed.splitlines() if line.startswith("id: ")] == [str(i) for i in ids[3:]]


def test_pause_resume_and_stop_reach_the_trainer_at_a_step_boundary(tmp_path, client):
    trainer = _trainer(tmp_path)
    thread, result = _in_thread(trainer)
    _wait(lambda: trainer.train_steps > 3)
    assert client.post("/api/runs/run/pause", headers=AUTH).status_code == 202
    _wait(lambda: client.get("/api/runs/run", headers=AUTH).json()["status"] == "paused")
    steps = trainer.train_steps
    time.sleep(0.5)
    assert trainer.train_steps == steps
    health = client.get("/api/status", headers=AUTH).json()["devices"]
    assert health[0]["run_id"] == "run" and health[0]["status"] == "paused" and health[0]["healthy"]
    assert client.post("/api/runs/run/resume", headers=AUTH).status_code == 202
    _wait(lambda: trainer.train_steps > steps)
    assert client.post("/api/runs/run/stop", headers=AUTH).status_code == 202
    thread.join(timeout=30)
    assert result["status"] == "stopped"
    run = client.get("/api/runs/run", headers=AUTH).json()
    assert run["status"] == "stopped" and run["exit_reason"] == "stopped from the service"
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    kinds = [json.loads(line[6:])["kind"] for line in client.get("/api/runs/run/events", headers=AUTH).text.splitlines()
             if line.startswith("data: ")]
    assert kinds[0] == "started" and kinds[-2:] == ["checkpoint", "stopped"]
    assert [k for k in kinds if k in ("paused", "resumed")] == ["paused", "resumed"]
    assert client.post("/api/runs/run/stop", headers=AUTH).status_code == 409


@pytest.mark.parametrize("method, path, headers, code, needle", [
    ("get", "/api/runs", {}, 401, "needs the service token"),
    ("get", "/api/runs", {"Authorization": "Bearer nope"}, 403, "wrong token"),
    ("get", "/api/runs", {"Authorization": "Basic abc"}, 401, "Bearer <token>"),
    ("post", "/api/runs/run/stop", {}, 401, "needs the service token"),
    ("get", "/api/runs/ghost", AUTH, 404, "no run 'ghost'"),
    ("get", "/api/runs/ghost/events", AUTH, 404, "no run 'ghost'"),
    ("post", "/api/runs/ghost/pause", AUTH, 404, "no run 'ghost'"),
    ("get", "/api/runs/run/metrics?since=-1", AUTH, 422, "greater than or equal to 0"),
    ("get", "/api/runs/run/metrics?since=abc", AUTH, 422, "valid integer"),
    ("get", "/api/runs/run/metrics?since=9223372036854775808", AUTH, 422, "less than or equal to 9223372036854775807"),
    ("get", "/api/runs/run/metrics?since=9223372036854775807", AUTH, 200, '"rows": []'),
    ("get", "/api/runs/run/metrics?limit=0", AUTH, 422, "greater than or equal to 1"),
    ("get", "/api/runs/run/events", {**AUTH, "Last-Event-ID": str(2**63)}, 422, "less than or equal to"),
    ("get", "/api/runs?token=%C3%A9", {}, 403, "wrong token"),
    ("get", "/api/runs", {"Authorization": "Bearer é".encode()}, 403, "wrong token"),
    ("get", "/api/runs", {"Authorization": b"Bearer \xff\xfe"}, 403, "wrong token"),
    ("post", "/api/runs/run/stop?token=%F0%9F%94%91", {}, 403, "wrong token"),
])
def test_bad_requests_get_the_right_status_and_a_clear_message(tmp_path, client, method, path, headers, code, needle):
    _trainer(tmp_path, epochs=1).fit()
    response = getattr(client, method)(path, headers=headers)
    assert response.status_code == code, response.text
    assert needle in json.dumps(response.json())


def test_public_reads_open_reads_but_not_controls(tmp_path):
    _trainer(tmp_path, epochs=1).fit()
    client = TestClient(create_app(tmp_path, TOKEN, public_reads=True))
    assert client.get("/api/runs").status_code == 200 and client.get("/metrics").status_code == 200
    assert client.post("/api/runs/run/stop").status_code == 401


def test_the_openapi_document_lists_every_endpoint_with_response_models(client):
    doc = client.get("/openapi.json", headers=AUTH).json()
    paths = set(doc["paths"])
    assert {"/api/status", "/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/metrics",
            "/api/runs/{run_id}/events", "/api/runs/{run_id}/stop", "/api/runs/{run_id}/pause",
            "/api/runs/{run_id}/resume", "/metrics"} <= paths
    assert {"ServiceStatus", "RunSummary", "RunDetail", "MetricsPage", "ControlAccepted"} <= set(
        doc["components"]["schemas"])
    assert {"config", "latest"} <= set(doc["components"]["schemas"]["RunSummary"]["properties"])


def test_only_the_dashboard_page_and_its_files_are_open_without_the_token(tmp_path, client):
    _trainer(tmp_path, epochs=1).fit()
    assert OPEN_PATHS == ("/", "/static")
    routes = list(iter_route_contexts(client.app.routes))  # the routers' routes as the app serves them
    assert {"/docs", "/openapi.json", "/metrics", "/api/status"} <= {r.path for r in routes}
    assert "/redoc" not in {r.path for r in routes}
    for route in routes:
        url = route.path.replace("{run_id}", "run") + ("/app.js" if isinstance(route.route, Mount) else "")
        response = client.request("POST" if "POST" in (route.methods or ()) else "GET", url)
        if route.path in OPEN_PATHS:
            assert response.status_code == 200, route.path
        else:
            assert response.status_code == 401 and "needs the service token" in response.json()["detail"], route.path
    assert client.get("/docs?token=" + TOKEN).status_code == 200
    assert client.get("/openapi.json?token=" + TOKEN).json()["info"]["title"] == "hil"
    assert "Open without the token: `/` and `/static`" in client.get("/openapi.json", headers=AUTH).json()["info"][
        "description"]
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    assert "Open without the token: `/` (the dashboard page) and `/static/` (its script and style)" in readme


def test_public_reads_also_open_the_api_documentation(tmp_path):
    client = TestClient(create_app(tmp_path, TOKEN, public_reads=True))
    assert client.get("/openapi.json").status_code == 200 and client.get("/docs").status_code == 200


def test_fifty_dashboards_share_the_store_reads_of_the_run_they_watch(tmp_path, monkeypatch):
    _trainer(tmp_path, epochs=1).fit()
    monkeypatch.setattr("hil.service.SHARED_SECONDS", 600.0)  # one sharing interval, however slow the machine
    client = TestClient(create_app(tmp_path, TOKEN))
    store = client.app.state.store
    reads = {"run": 0, "metrics": 0}

    def counted(name, read):
        def wrapper(*args, **kwargs):
            reads[name] += 1
            return read(*args, **kwargs)
        return wrapper

    store.run = counted("run", store.run)
    store.metrics = counted("metrics", store.metrics)
    store.newest_metrics = counted("metrics", store.newest_metrics)
    rows = client.get("/api/runs/run/metrics", headers=AUTH).json()["rows"]
    cursors = [rows[i * len(rows) // 50]["id"] for i in range(50)]
    pages = []
    for since in cursors:  # each dashboard at its own cursor, all within one sharing interval
        detail = client.get("/api/runs/run", headers=AUTH).json()
        pages.append(client.get(f"/api/runs/run/metrics?since={since}", headers=AUTH).json())
        assert detail["status"] == "finished"
    assert reads == {"run": 1, "metrics": 1}
    for since, page in zip(cursors, pages, strict=True):
        assert page["rows"] == [r for r in rows if r["id"] > since] and page["next"] == rows[-1]["id"]


def test_the_run_list_reads_a_runs_latest_metrics_again_only_after_it_wrote(tmp_path, monkeypatch):
    _trainer(tmp_path, epochs=1).fit()
    monkeypatch.setattr("hil.service.SHARED_SECONDS", 0.0)  # no sharing: every request asks for the list
    client = TestClient(create_app(tmp_path, TOKEN))
    store = client.app.state.store
    reads = []
    latest_metrics = store.latest_metrics
    store.latest_metrics = lambda run_id: reads.append(run_id) or latest_metrics(run_id)
    for _ in range(3):
        assert "train_loss" in client.get("/api/runs", headers=AUTH).json()[0]["latest"]
    assert reads == ["run"]
    store.log_metrics("run", 99, 9, {"train_loss": 0.5})
    assert client.get("/api/runs", headers=AUTH).json()[0]["latest"]["train_loss"] == 0.5
    assert reads == ["run", "run"]
