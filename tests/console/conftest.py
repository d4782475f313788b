"""The console against a real service (uvicorn on a free port) whose store holds a sample
history (service.sample), and a client that signs in the way a browser does."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.harness import Service, settings_for
from service.sample import Sample, Urls, populate
from simulators.runner import SimulatorCluster

TOKENS = {
    "viewer": "tok-console-viewer",
    "comms": "tok-console-comms",
    "change-manager": "tok-console-cm",
    "admin": "tok-console-admin",
}
NAMES = {"viewer": "val", "comms": "cora", "change-manager": "dana", "admin": "ada"}
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@dataclass
class Console:
    service: Service
    sample: Sample
    mappings_dir: Path

    @property
    def url(self) -> str:
        return self.service.url


@pytest.fixture(scope="session")
def console(
    cluster: SimulatorCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    folder = tmp_path_factory.mktemp("console")
    mappings = folder / "mappings"
    mappings.mkdir()
    settings = settings_for(
        cluster,
        f"sqlite:///{folder / 'console.db'}",
        mappings_dir=str(mappings),
        api_tokens=[
            {"name": NAMES[role], "token": token, "role": role} for role, token in TOKENS.items()
        ],
    )
    # Nothing polls or reconciles: the pages show exactly the sample history.
    with Service(settings, poll=False, workers=False) as service:
        urls = Urls(
            servicenow=cluster.urls["servicenow"],
            jira=cluster.urls["jira"],
            statuspage=cluster.urls["statuspage"],
        )
        sample = populate(service.runtime.db, count=60, urls=urls, spacing=dt.timedelta(hours=36))
        yield Console(service, sample, mappings)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def signed_in(console: Console, role: str) -> httpx.Client:
    """A client holding a session cookie for ``role``, as a browser would after signing in."""
    client = httpx.Client(base_url=console.url, timeout=10, follow_redirects=False)
    form = client.get("/signin")
    answer = client.post(
        "/signin", data={"csrf": csrf_of(form.text), "token": TOKENS[role], "next": "/"}
    )
    assert answer.status_code == 303, answer.text
    return client


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium for the session, 1366x768 (Debian's chromium and chromium-driver)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(
            f"no browser installed ({', '.join(missing)} missing): "
            "apt-get install chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1366,768",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--disable-extensions",
        "--no-first-run",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(str(CHROMEDRIVER)), options=options)
    # The page itself 1366x768 (the window's size would include the browser's own frame).
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1366, "height": 768, "deviceScaleFactor": 1, "mobile": False},
    )
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
