"""Each role's story, clicked through in a real browser (headless Chromium via Selenium).

Every test leaves a 1366x768 screenshot in tests/artifacts/ (docs/console.md shows them)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from mapping.registry import DEFAULTS
from tests.console.conftest import ARTIFACTS, NAMES, TOKENS, Console


def sign_in(driver: Any, console: Console, role: str, then: str = "/") -> None:
    driver.delete_all_cookies()
    driver.get(f"{console.url}/signin?{urlencode({'next': then})}")
    driver.find_element(By.ID, "token").send_keys(TOKENS[role])
    click(driver, driver.find_element(By.CSS_SELECTOR, "form[action='/signin'] button"))
    who = WebDriverWait(driver, 5).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".who .user"), "the signed-in page"
    )
    assert who[0].text == NAMES[role]
    assert driver.current_url == f"{console.url}{then}"


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def click(driver: Any, button: Any) -> None:
    """Click what submits a form, and wait for the next page."""
    html = driver.find_element(By.TAG_NAME, "html")
    button.click()

    def gone(_: Any) -> bool:
        try:
            html.is_enabled()
        except WebDriverException:  # stale, or no longer in the document
            return True
        return False

    WebDriverWait(driver, 5).until(gone, "the next page")


def show(driver: Any, css: str) -> None:
    """Scroll the part a screenshot is about to the top."""
    driver.execute_script(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'start'});", css
    )


def text_of(driver: Any, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def fill(driver: Any, element_id: str, value: str) -> None:
    """Put a long text in a field at once (typing 3 KB of YAML key by key takes seconds)."""
    field = driver.find_element(By.ID, element_id)
    driver.execute_script("arguments[0].value = arguments[1];", field, value)


def test_sign_in_page(browser: Any, console: Console) -> None:
    browser.delete_all_cookies()
    browser.get(f"{console.url}/")
    assert "/signin" in browser.current_url
    browser.find_element(By.ID, "token").send_keys("not-a-token")
    click(browser, browser.find_element(By.CSS_SELECTOR, "form[action='/signin'] button"))
    assert "unknown token" in text_of(browser, ".flash.bad")
    shot(browser, "signin")


def test_overview_links_every_record(browser: Any, console: Console) -> None:
    sign_in(browser, console, "viewer")
    assert text_of(browser, ".tile .value") == "running"
    rows = browser.find_elements(By.CSS_SELECTOR, "#in-flight tbody tr")
    assert len(rows) == len(console.sample.open_numbers)
    links = rows[0].find_elements(By.CSS_SELECTOR, "a.sys")
    hrefs = {a.text: a.get_attribute("href") for a in links}
    number = next(k for k in hrefs if k.startswith("INC"))
    key = next(k for k in hrefs if k.startswith("OPS-"))
    assert hrefs[number].startswith(console.service.settings.servicenow.url)
    assert "incident.do?sys_id=" in hrefs[number]
    assert hrefs[key].endswith(f"/browse/{key}")
    shot(browser, "overview")
    # Nothing on the pages needs a script: with scripts off, the same rows are there.
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        browser.get(f"{console.url}/incidents/{console.sample.open_numbers[0]}")
        assert browser.find_elements(By.CSS_SELECTOR, "#timeline li")
        browser.get(f"{console.url}/")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#in-flight tbody tr")) == len(rows)
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})


def test_viewer_sees_the_gate_but_cannot_override(browser: Any, console: Console) -> None:
    sign_in(browser, console, "viewer")
    number = console.sample.gated[0]
    browser.get(f"{console.url}/incidents/{number}")
    assert text_of(browser, "#gate h2") == "Closure gate: shut"
    assert browser.find_elements(By.CSS_SELECTOR, "#gate .missing li")
    assert not browser.find_elements(By.ID, "reason")  # no override form for a viewer
    assert "Change manager" not in text_of(browser, "header nav")
    timeline = text_of(browser, "#timeline")
    assert "conflict decided" in timeline and "jira wins" in timeline
    shot(browser, "incident")
    browser.get(f"{console.url}/changes")
    assert text_of(browser, "h1") == "Not allowed"
    assert "needs the change-manager or admin role; val has viewer" in text_of(browser, ".flash")


def test_change_manager_overrides_with_a_reason_and_sees_it_in_the_audit(
    browser: Any, console: Console
) -> None:
    sign_in(browser, console, "change-manager", "/changes?since=2000-01-01")
    number = console.sample.gated[1]
    form = browser.find_element(
        By.CSS_SELECTOR, f"#gates form[action='/incidents/{number}/override']"
    )
    form.find_element(By.NAME, "reason").send_keys("hotfix verified in production; CR-42 follows")
    click(browser, form.find_element(By.TAG_NAME, "button"))
    assert f"gate of {number} overridden" in text_of(browser, ".flash.ok")
    audit = [
        row.text
        for row in browser.find_elements(By.CSS_SELECTOR, "#audit-rows tbody tr")
        if row.text.startswith(number)
    ]
    assert audit and all(
        "by token:dana: hotfix verified in production; CR-42 follows" in row for row in audit
    ), audit
    browser.get(f"{console.url}/incidents/{number}")
    assert text_of(browser, "#gate h2") == "Closure gate: open"
    assert "hotfix verified" in text_of(browser, "#timeline")
    # ... and takes it back: the gate is armed again, and the audit says who and why.
    browser.find_element(By.ID, "revoke-reason").send_keys("the hotfix was rolled back")
    click(browser, browser.find_element(By.XPATH, "//button[text()='Revoke the override']"))
    assert "revoked: the gate is armed again" in text_of(browser, ".flash.ok")
    assert text_of(browser, "#gate h2") == "Closure gate: shut"
    browser.get(f"{console.url}/changes?since=2000-01-01")
    assert "revoked" in next(
        r.text
        for r in browser.find_elements(By.CSS_SELECTOR, "#audit-rows tbody tr")
        if r.text.startswith(number)
    )
    shot(browser, "changes")
    row = next(
        r
        for r in browser.find_elements(By.CSS_SELECTOR, "#audit-rows tbody tr")
        if r.text.startswith(number)
    )
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", row)
    shot(browser, "changes-override-in-audit")


def test_admin_previews_a_bad_mapping_fixes_it_saves_and_rolls_back(
    browser: Any, console: Console
) -> None:
    sign_in(browser, console, "admin", "/admin")
    good = (DEFAULTS / "jira.yaml").read_text()
    bad = good.replace("    path: summary\n", "    path: summary\n    policy: loudest\n", 1)
    fill(browser, "spec", bad)
    browser.find_element(By.ID, "incident").send_keys(console.sample.open_numbers[-1])
    click(browser, browser.find_element(By.XPATH, "//button[text()='Check and preview']"))
    problems = text_of(browser, "#preview-result")
    line = bad.splitlines().index("    policy: loudest") + 1
    assert f"pasted.yaml:{line}" in problems, problems
    assert "nothing was saved" in problems
    shot(browser, "admin-mapping-errors")

    fixed = good.replace("    path: summary\n", "    path: summary\n    policy: owner:jira\n", 1)
    fill(browser, "spec", fixed)
    click(browser, browser.find_element(By.XPATH, "//button[text()='Check and preview']"))
    result = text_of(browser, "#preview-result")
    assert result.startswith("Valid: jira/default"), result
    assert "title <-> summary: policy" in result
    assert '"summary"' in result  # what it would write to the incident's issue
    shot(browser, "admin-mapping-preview")

    click(browser, browser.find_element(By.XPATH, "//button[text()='Save and use']"))
    assert "saved and in use" in text_of(browser, ".flash.ok")
    assert (console.mappings_dir / "jira.yaml").read_text() == fixed
    newest = browser.find_element(By.CSS_SELECTOR, "#versions tbody tr.current")
    assert "jira/default" in newest.text and "token:ada" in newest.text
    assert console.service.runtime.mappings.get("jira").source == fixed  # in use now

    earlier = [
        row
        for row in browser.find_elements(By.CSS_SELECTOR, "#versions tbody tr")
        if "jira/default" in row.text and "current" not in (row.get_attribute("class") or "")
    ]
    target = earlier[0].find_element(By.CSS_SELECTOR, "td a").text
    click(browser, earlier[0].find_element(By.XPATH, ".//button[text()='Roll back to this']"))
    assert f"rolled back to version {target}" in text_of(browser, ".flash.ok")
    current = browser.find_element(By.CSS_SELECTOR, "#versions tbody tr.current")
    assert f"rolled back to version {target}" in current.text
    assert console.service.runtime.mappings.get("jira").source != fixed
    show(browser, "#versions")
    shot(browser, "admin-mapping-versions")


def test_admin_replays_a_parked_item(browser: Any, console: Console) -> None:
    sign_in(browser, console, "admin", "/admin")
    rows = browser.find_elements(By.CSS_SELECTOR, "#parked-items tbody tr")
    before = len(rows)
    assert before >= 1
    show(browser, "#parked")
    shot(browser, "admin-parked")
    first = rows[0]
    parked_id = first.find_element(By.TAG_NAME, "td").text
    incident_link = first.find_element(By.CSS_SELECTOR, "td a").get_attribute("href")
    click(browser, first.find_element(By.XPATH, ".//button[text()='Replay']"))
    assert f"parked item {parked_id} queued again" in text_of(browser, ".flash.ok")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#parked-items tbody tr")) == before - 1
    browser.get(incident_link)
    newest = browser.find_element(By.CSS_SELECTOR, "#timeline li")
    assert "replayed" in newest.text and "token:ada" in newest.text


def test_a_form_without_its_csrf_token_is_refused(browser: Any, console: Console) -> None:
    sign_in(browser, console, "admin", "/admin")
    before = len(browser.find_elements(By.CSS_SELECTOR, "#parked-items tbody tr"))
    form = browser.find_element(By.CSS_SELECTOR, "form[action='/admin/parked/replay-all']")
    browser.execute_script(
        "arguments[0].querySelector('input[name=csrf]').remove(); arguments[0].submit();", form
    )
    assert text_of(browser, "h1") == "Form refused"
    assert "CSRF token is missing" in text_of(browser, ".flash.bad")
    shot(browser, "csrf-refused")
    browser.get(f"{console.url}/admin")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#parked-items tbody tr")) == before
