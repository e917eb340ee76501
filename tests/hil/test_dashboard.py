"""The dashboard in a real browser (Debian's chromium, headless): a live run, and a sweep of finished runs."""

import os
import shutil
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

from hil.config import build_config
from hil.runs import RunFolder
from hil.serving import listen, serve_in_thread
from hil.trainer import Trainer

CHROMIUM = "/usr/bin/chromium"


def _launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])


def _keep(shot: Path) -> None:
    """Copy a screenshot to ``HIL_ARTIFACTS`` when set (CI keeps it)."""
    if os.environ.get("HIL_ARTIFACTS"):
        Path(os.environ["HIL_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["HIL_ARTIFACTS"]) / shot.name)


def test_dashboard_follows_a_live_run_and_its_stop_button_stops_it(tmp_path):
    config = build_config({"epochs": 300, "hidden": [64, 64], "batch_size": 32, "run_dir": tmp_path / "live"})
    trainer = Trainer(config, RunFolder.create(config), progress=False)
    result = {}
    thread = threading.Thread(target=lambda: result.update(trainer.fit()), daemon=True)
    thread.start()
    listener = listen("127.0.0.1", 0)
    port = listener[1].port
    with serve_in_thread(tmp_path, listener, "tok"):
        with sync_playwright() as p:
            browser = _launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/?token=tok")
            page.wait_for_function("document.getElementById('run-status').textContent === 'running'", timeout=30000)
            page.wait_for_function("points(state.focus, 'test_accuracy_cumulative').x.length >= 2", timeout=60000)
            seen = page.evaluate("points(state.focus, 'loss').x.length")
            page.wait_for_function(f"points(state.focus, 'loss').x.length > {seen}", timeout=30000)  # keeps updating
            assert "simulated crossbar" in page.text_content("#run-device")
            # which estimate each layer uses and its cost, from the run's started event
            assert page.text_content("#run-estimate") == ("gradient estimate per layer: 0: activity (3 queries/step, "
                                                          "eps 0.01), 1: activity (3 queries/step, eps 0.01)")
            assert page.evaluate("points(state.focus, 'val_accuracy_cumulative').x.length") >= 2
            assert page.evaluate("charts.loss.plot.data[1].length") >= seen  # drawn by uPlot
            assert page.text_content("#health").count("queries") == 1
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            page.click("#stop")
            page.wait_for_function("document.getElementById('run-status').textContent === 'stopped'", timeout=30000)
            assert page.is_disabled("#stop")
            page.wait_for_function("document.getElementById('events').textContent.includes(' stopped ')",
                                   timeout=10000)  # the event stream delivers the end too
            events = page.text_content("#events")
            browser.close()
        thread.join(timeout=30)
    assert result["status"] == "stopped"
    assert (tmp_path / "live" / "checkpoint.pt").exists()
    assert "started" in events and "stopped" in events
    assert shot.stat().st_size > 10000
    _keep(shot)


def test_the_run_table_sorts_by_the_swept_field_and_overlays_the_ticked_runs(tmp_path):
    for name, lr in [("fast", 0.03), ("mid", 0.01), ("slow", 0.003)]:
        config = build_config({"epochs": 2, "hidden": [16], "lr": lr, "run_dir": tmp_path / name})
        Trainer(config, RunFolder.create(config), progress=False).fit()
    listener = listen("127.0.0.1", 0)
    with serve_in_thread(tmp_path, listener, "tok"), sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(f"http://127.0.0.1:{listener[1].port}/?token=tok")
        page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 3", timeout=30000)
        order = "() => [...document.querySelectorAll('#runs tbody tr')].map((row) => row.dataset.run)"
        headers = page.eval_on_selector_all("#runs th", "cells => cells.map((cell) => cell.textContent)")
        assert headers[3] == "lr" and headers[:3] == ["", "id", "status"]  # the one swept field, run_dir aside
        assert len(headers) == 4 + 4  # and the four latest metrics
        nested = "sweptFields([{a: {b: 1}, c: 2}, {a: {b: 2}, c: 2}].map((config) => ({flat: flatten(config)})))"
        assert page.evaluate(nested) == ["a.b"]  # nested fields compare dotted, like rule_options.estimator
        page.click("#runs th[data-key='lr']")
        assert page.evaluate(order) == ["slow", "mid", "fast"]
        page.click("#runs th[data-key='lr']")
        assert page.evaluate(order) == ["fast", "mid", "slow"]
        assert page.text_content("#runs tr[data-run='slow'] td:nth-child(4)") == "0.003"
        for run in ("fast", "mid"):
            page.check(f"#runs tr[data-run='{run}'] input[type=checkbox]")
        page.wait_for_function("charts.accuracy.plot.series.length === 3", timeout=10000)  # x and one per run
        labels = page.evaluate("charts.accuracy.plot.series.slice(1).map((s) => s.label)")
        accuracy = page.evaluate("charts.accuracy.plot.data.slice(1).flat()")
        low, high = page.evaluate("[charts.accuracy.plot.scales.y.min, charts.accuracy.plot.scales.y.max]")
        assert page.evaluate("charts.loss.plot.series.length") == 3
        shot = tmp_path / "dashboard-sweep.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert sorted(labels) == ["fast", "mid"] and len(accuracy) == 4  # two epochs of each run
    # zoomed to the data (all above 0.5 here), not the whole 0-1
    assert min(accuracy) > 0.5 and 0.5 < low <= min(accuracy) and max(accuracy) <= high < 1
    _keep(shot)
