"""The service as a real process: a SIGKILL in the middle of additions loses no acknowledged
item and leaves a gallery that loads; and the page, driven in headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from serving_helpers import REPO, http_json, random_unit, start_server, stop_server

from reid_pbn.serving import Gallery, model_provenance


@pytest.mark.slow
def test_sigkill_during_additions_keeps_every_acknowledged_item(tmp_path, model_files):
    config_file, weights, cfg = model_files
    prov = model_provenance(cfg, config_file=config_file, weights=weights, feature_dim=512)
    # Big enough that saving the index takes a while: the kill lands inside an addition.
    base = 3000
    Gallery.build(tmp_path / "g", random_unit(base, 512, 0), provenance=prov)[0].close()
    proc, url = start_server(tmp_path / "g", model_files, tmp_path / "server1.log")
    acked, stop = [], threading.Event()

    def add_forever():
        i = 0
        while not stop.is_set():
            try:
                status, body = http_json("POST", url + "/gallery", {
                    "features": random_unit(1, 512, 100 + i).tolist(), "pids": [10_000 + i]})
            except OSError:  # the server is gone
                return
            assert status == 201, body
            acked.append(body["added"][0]["id"])
            i += 1

    threads = [threading.Thread(target=add_forever) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 12 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        stop_server(proc)
    assert len(acked) >= 12
    proc, url = start_server(tmp_path / "g", model_files, tmp_path / "server2.log")
    try:
        size = http_json("GET", url + "/stats")[1]["gallery_size"]
        # Every acknowledged item, plus at most the additions in flight at the kill.
        assert base + len(acked) <= size <= base + len(acked) + len(threads)
        for item_id in acked:
            assert http_json("GET", f"{url}/gallery/{item_id}")[0] == 200
    finally:
        stop_server(proc)


def _chromium():
    browser = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1200,800"):
        options.add_argument(flag)
    # No skip: a machine without the browser fails here (.ci/run installs it).
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.mark.slow
def test_page_in_headless_chromium(tmp_path, gallery_dir, model_files, synthetic):
    proc, url = start_server(gallery_dir, model_files, tmp_path / "server.log")
    browser = _chromium()
    try:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        query, pid = synthetic.query[0][0], synthetic.query[0][1]
        assert any(g[1] == pid for g in synthetic.gallery)
        browser.find_element(By.ID, "query-file").send_keys(query)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".result")) == 6)
        wait.until(lambda b: b.execute_script(
            "return [...document.querySelectorAll('.result img.thumb')]"
            ".every(i => i.complete && i.naturalWidth > 0)"))
        cards = browser.find_elements(By.CSS_SELECTOR, ".result")
        distances = [float(c.find_element(By.CLASS_NAME, "distance").text) for c in cards]
        assert distances == sorted(distances)
        ranks = [c.find_element(By.CLASS_NAME, "rank").text for c in cards]
        assert ranks == [f"#{i}" for i in range(1, 7)]
        marked = browser.find_elements(By.CSS_SELECTOR, ".result.match .match-mark")
        assert len(marked) == sum(1 for g in synthetic.gallery if g[1] == pid) >= 1
        assert all(f"pid {pid}" in m.find_element(By.XPATH, "..").text for m in marked)
        browser.find_element(By.ID, "query-pid")  # the page offers an explicit id
        shot = tmp_path / "serving_page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("REID_PBN_DOCS_SCREENSHOT"):
            shutil.copy(shot, REPO / "docs" / "img" / "serving_page.png")
        # Add an image from the page; the gallery grows and the search reruns.
        browser.find_element(By.ID, "add-files").send_keys(synthetic.query[1][0])
        browser.find_element(By.ID, "add-button").click()
        wait.until(lambda b: "added 1" in b.find_element(By.ID, "add-status").text)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".result")) == 7)
        assert http_json("GET", url + "/stats")[1]["gallery_size"] == 7
    finally:
        browser.quit()
        stop_server(proc)
