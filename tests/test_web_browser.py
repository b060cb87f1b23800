"""The Customer 360 page in a real headless browser (Debian's chromium) against a real server on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from c360_pipelines.api import create_app
from c360_pipelines.config import C360Config, load_config
from c360_pipelines.demo import write_demo
from c360_pipelines.runner import run_pipeline
from resources.warehouse import WarehouseResource

KEY = "browser-test-key"
DOCS_SCREENSHOT = Path(__file__).parents[1] / "docs" / "customer360.png"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> C360Config:
    root = tmp_path_factory.mktemp("web")
    write_demo(root, people=200, seed=21)
    (root / "c360.yaml").write_text((root / "c360.yaml").read_text() + f"\napi:\n  keys: [{KEY}]\n")
    config = load_config(root / "c360.yaml")
    with dg.DagsterInstance.ephemeral() as instance:
        run_pipeline(config, instance)
    return config


@pytest.fixture(scope="module")
def base_url(project: C360Config) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(project), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("Debian's chromium and chromium-driver are needed (apt-get install chromium chromium-driver)")
    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1400"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.implicitly_wait(5)
    yield chrome
    chrome.quit()


def test_find_a_customer_by_a_phone_typed_differently_and_see_the_whole_person(
        project: C360Config, base_url: str, browser: webdriver.Chrome, tmp_path: Path) -> None:
    warehouse = WarehouseResource(url=project.warehouse)
    people = warehouse.read_frame("SELECT c360_id, full_name, phone, sources FROM golden_profile "
                                  "WHERE phone IS NOT NULL ORDER BY c360_id")
    person = people[people["sources"].str.count(",") >= 2].iloc[0]  # known to three systems or more
    sent = set(warehouse.read_frame("SELECT phone_raw FROM contact_point_phone WHERE phone_e164 = :p",
                                    {"p": person["phone"]})["phone_raw"])
    national = person["phone"][2:]
    typed = f"{national[:3]} {national[3:6]} {national[6:]}"
    assert typed not in sent  # the search has to standardise it to find anyone

    browser.get(f"{base_url}/")
    assert browser.current_url.endswith("/login")
    browser.find_element(By.ID, "key").send_keys(KEY)
    browser.find_element(By.ID, "sign-in").click()
    browser.find_element(By.ID, "phone").send_keys(typed)
    browser.find_element(By.ID, "search").click()
    links = browser.find_elements(By.CSS_SELECTOR, "#results a.person-link")
    target = next(link for link in links if link.get_attribute("href").endswith(person["c360_id"]))
    target.click()

    assert browser.find_element(By.ID, "person-name").text == person["full_name"]
    systems = {e.get_attribute("data-system") for e in browser.find_elements(By.CSS_SELECTOR, "#records .system")}
    assert len(systems) >= 3 and systems == set(person["sources"].split(","))
    email = browser.find_element(By.CSS_SELECTOR, '.why[data-attribute="email"]')
    ActionChains(browser).move_to_element(email).perform()
    popup = email.find_element(By.CSS_SELECTOR, ".pop")
    assert popup.is_displayed() and "Rule" in popup.text and "From" in popup.text
    assert browser.find_element(By.ID, "timeline").is_displayed()
    assert browser.find_element(By.ID, "history").is_displayed()

    shot = tmp_path / "customer360.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("C360_UPDATE_SCREENSHOT"):
        shutil.copy(shot, DOCS_SCREENSHOT)
