"""The dashboard in a real browser (Debian's chromium, headless) against a live run."""

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
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/?token=tok")
            page.wait_for_function("document.getElementById('run-status').textContent === 'running'", timeout=30000)
            page.wait_for_function("state.series.test_accuracy_cumulative.length >= 2", timeout=60000)
            seen = page.evaluate("state.series.loss.length")
            page.wait_for_function(f"state.series.loss.length > {seen}", timeout=30000)  # the curves keep updating
            assert "simulated crossbar" in page.text_content("#run-device")
            # which estimate each layer uses and its cost, from the run's started event
            assert page.text_content("#run-estimate") == ("gradient estimate per layer: 0: activity (3 queries/step, "
                                                          "eps 0.01), 1: activity (3 queries/step, eps 0.01)")
            assert page.evaluate("state.series.val_accuracy_cumulative.length") >= 2
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
    if os.environ.get("HIL_ARTIFACTS"):
        Path(os.environ["HIL_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["HIL_ARTIFACTS"]) / "dashboard.png")
