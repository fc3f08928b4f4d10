"""The web UI in a real browser: log in, upload workflows in the page, approve a rejected output in /admin.

Drives Debian Chromium (``/usr/bin/chromium``) with Playwright's sync API against a real ``comfygate serve``
(embedded default: SQLite, local outputs, filesystem broker, one local worker) on loopback. Playwright's own
browser downloads are never used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from deployment import REPO_ROOT, Deployment
from services import service_missing

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000  # per browser action; every wait in this file has a deadline


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path_factory.mktemp("browser-data"))
    try:
        deployment.migrate()
        deployment.start_server(with_worker=True)
        assert deployment.admin_password and deployment.admin_key, deployment.log("server.log")
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture(scope="module")
def browser(pytestconfig: pytest.Config) -> Iterator[object]:
    if not CHROMIUM.exists():
        service_missing(f"Debian Chromium at {CHROMIUM}", "not installed; apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, deployment: Deployment):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=deployment.base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def _log_in(page, deployment: Deployment, password: str | None = None):  # type: ignore[no-untyped-def]
    page.fill("#username", "admin")
    page.fill("#password", password or deployment.admin_password)
    with page.expect_navigation():
        page.click("form[action='/login'] button[type=submit]")


def _upload(page, name: str, *, file: Path | None = None, text: str | None = None):  # type: ignore[no-untyped-def]
    page.fill("#name", name)
    if file is not None:
        page.set_input_files("#workflow_file", str(file))
    if text is not None:
        page.fill("#workflow_text", text)
    with page.expect_navigation() as navigation:
        page.click("form[action='/ui/workflows'] button[type=submit]")
    return navigation.value


def test_upload_in_page_and_approve_rejected_output(page, deployment: Deployment,  # type: ignore[no-untyped-def]
                                                    tmp_path: Path) -> None:
    # Not logged in: / sends the user to the login page.
    response = page.goto("/")
    assert response is not None and response.ok
    assert re.search(r"/login\?next=/$", page.url), page.url

    # A wrong password is refused with a visible error, and the user stays on the login page.
    _log_in(page, deployment, password="not-the-password")
    assert page.locator("[role=alert]").inner_text() == "wrong username or password"
    assert "/login" in page.url
    assert page.input_value("#username") == "admin"  # kept; only the password is typed again

    # The printed first-start password works and lands on the page the user asked for.
    _log_in(page, deployment)
    assert page.url == deployment.base_url + "/"
    assert page.locator("h1").first.inner_text() == "Upload a workflow"

    # Upload a workflow through the file input, as the ComfyUI editor saved it (UI format).
    response = _upload(page, "gradient-card", file=REPO_ROOT / "workflows" / "gradient_card.ui.json")
    assert response is not None and response.status == 201
    result = page.locator("#upload-result")
    assert "gradient-card — version 1" in result.locator("h1").inner_text()
    assert page.locator("#run-url").inner_text() == "POST /v1/workflows/gradient-card/versions/1/runs"
    schema = json.loads(page.locator("#input-schema").inner_text())
    assert schema["type"] == "object" and "1.width" in schema["properties"], schema

    # A second workflow, the one whose output the gate rejects.
    page.goto("/")
    response = _upload(page, "blank", file=REPO_ROOT / "workflows" / "blank.json")
    assert response is not None and response.status == 201
    assert page.locator("#run-url").inner_text() == "POST /v1/workflows/blank/versions/1/runs"
    page.goto("/")
    listed = page.locator("table tr td:first-child").all_inner_texts()
    assert sorted(listed) == ["blank", "gradient-card"]

    # The converted UI export runs like its API export.
    card_run = deployment.post("/v1/workflows/gradient-card/runs?wait=60", {"inputs": {}})
    assert card_run.status_code == 200 and card_run.json()["status"] == "succeeded", card_run.text

    # Over the REST API: run the blank workflow; the sentinel rejects it and withholds the output.
    run = deployment.post("/v1/workflows/blank/runs?wait=60", {"inputs": {}})
    assert run.status_code == 200, run.text
    run_body = run.json()
    assert run_body["status"] == "rejected", run_body
    withheld = deployment.get(f"/v1/runs/{run_body['id']}/outputs/0")
    assert withheld.status_code == 403, withheld.text

    # The admin console shows the withheld output: its image (actually decoded), reasons and scores.
    page.goto("/admin")
    item = page.locator(f"section.review-item[data-run='{run_body['id']}']")
    assert item.count() == 1
    image = item.locator("img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                           timeout=TIMEOUT_MS)
    assert image.evaluate("img => img.naturalWidth") == 128
    reasons = item.locator("ul.reasons li").all_inner_texts()
    assert reasons and any("blank" in r or "uniform" in r for r in reasons), reasons
    score_rows = item.locator("table.scores tr").all_inner_texts()
    assert len(score_rows) > 1, score_rows  # header plus one row per check
    assert any(re.search(r"\d\.\d{4}", row) for row in score_rows), score_rows
    screenshot = tmp_path / "admin-pending.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 0
    print(f"admin console screenshot: {screenshot}")

    # The review form refuses a POST without the CSRF token, even with a valid admin session cookie.
    output_id = item.get_attribute("id").removeprefix("output-")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    forged = requests.post(f"{deployment.base_url}/admin/review/{output_id}", data={"decision": "approve"},
                           cookies=cookies, allow_redirects=False, timeout=30)
    assert forged.status_code == 403, forged.text
    forged = requests.post(f"{deployment.base_url}/admin/review/{output_id}",
                           data={"decision": "approve", "csrf_token": "wrong"},
                           cookies=cookies, allow_redirects=False, timeout=30)
    assert forged.status_code == 403, forged.text
    assert deployment.get(f"/v1/runs/{run_body['id']}").json()["status"] == "rejected"

    # Approve in the page: the confirmation shows, the item leaves the queue.
    item.locator("input[name=note]").fill("flat grey is what this card is meant to be")
    with page.expect_navigation():
        item.locator("button[value=approve]").click()
    assert page.locator("#decided").inner_text() == f"Decision on output {output_id} recorded."
    assert page.locator(f"section.review-item[data-run='{run_body['id']}']").count() == 0

    # Deciding again (a second reviewer, a double click) is refused in the page, not with a bare error.
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    again = requests.post(f"{deployment.base_url}/admin/review/{output_id}",
                          data={"decision": "reject", "csrf_token": csrf},
                          cookies=cookies, allow_redirects=False, timeout=30)
    assert again.status_code == 409, again.text
    assert 'id="review-error"' in again.text and "not waiting for review" in again.text

    # Over the REST API: the run is now succeeded and its output bytes are served.
    after = deployment.get(f"/v1/runs/{run_body['id']}")
    assert after.json()["status"] == "succeeded", after.text
    image_response = deployment.get(f"/v1/runs/{run_body['id']}/outputs/0")
    assert image_response.status_code == 200, image_response.text
    assert image_response.headers["Content-Type"] == "image/png"
    assert image_response.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_invalid_workflow_shows_the_error_in_the_page(page, deployment: Deployment) -> None:  # type: ignore[no-untyped-def]
    page.goto("/")
    _log_in(page, deployment)
    bad = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "7": {"class_type": "NoSuchNode", "inputs": {"image": ["1", 0]}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    response = _upload(page, "broken", text=json.dumps(bad))
    assert response is not None and response.status == 422
    error = page.locator("#upload-error")
    assert error.is_visible()
    text = error.inner_text()
    assert "Upload refused" in text and "NoSuchNode" in text, text
    assert re.search(r"['\"]7['\"]", text), text  # the node id is named
    # The form is still there to try again, with what the user typed, and nothing was created.
    assert page.locator("form[action='/ui/workflows']").is_visible()
    assert page.input_value("#name") == "broken"
    assert json.loads(page.input_value("#workflow_text")) == bad
    listed = deployment.get("/v1/workflows").json()
    assert "broken" not in json.dumps(listed)


def test_not_logged_in_admin_redirects_to_login(page, deployment: Deployment) -> None:  # type: ignore[no-untyped-def]
    page.goto("/admin?decided=1")
    login_url = urlsplit(page.url)
    assert login_url.path == "/login" and parse_qs(login_url.query)["next"] == ["/admin?decided=1"], page.url
    _log_in(page, deployment)
    assert page.url == deployment.base_url + "/admin?decided=1"
    assert page.locator("h1").first.inner_text() == "Review queue"

    # A form posted without a session (it expired) goes to the login page and back to the console,
    # not to a URL that only answers POST.
    expired = requests.post(f"{deployment.base_url}/admin/review/1", data={"decision": "approve"},
                            allow_redirects=False, timeout=30)
    assert expired.status_code == 303 and expired.headers["Location"] == "/login?next=/admin"


@pytest.mark.parametrize("target", ["//evil.example/", "/\\evil.example/", "https://evil.example/"])
def test_login_never_redirects_off_site(page, deployment: Deployment, target: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/login?next=" + quote(target, safe=""))
    _log_in(page, deployment)
    assert page.url == deployment.base_url + "/", page.url


def test_edit_a_policy_in_the_console_and_open_calibration(page, deployment: Deployment,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path) -> None:
    # A workflow whose flat grey output the default policy rejects; one reviewer decision makes one label.
    blank = json.loads((REPO_ROOT / "workflows" / "blank.json").read_text())
    created = deployment.post("/v1/workflows", {"name": "policy-blank", "workflow": blank})
    assert created.status_code == 201, created.text
    run = deployment.post("/v1/workflows/policy-blank/runs?wait=60", {"inputs": {}}).json()
    assert run["status"] == "rejected", run
    decided = deployment.post(f"/v1/review/{run['outputs'][0]['id']}", {"decision": "reject"})
    assert decided.status_code == 200, decided.text

    page.goto("/")
    _log_in(page, deployment)
    with page.expect_navigation():
        page.click("a[href='/admin/workflows/policy-blank/versions/1/policy']")
    assert page.locator("#policy-revision").inner_text().startswith("Revision 1")
    policy = json.loads(page.input_value("#policy"))
    assert policy["checks"]["blank"] == {"reject": 0.02}, policy

    # A threshold typed as text: refused in the page, naming the key path, with what was typed kept.
    policy["checks"]["blank"] = {"reject": "low"}
    page.fill("#policy", json.dumps(policy, indent=2))
    save = "form[action='/admin/workflows/policy-blank/versions/1/policy'] button[type=submit]"
    with page.expect_navigation() as navigation:
        page.click(save)
    assert navigation.value is not None and navigation.value.status == 422
    assert page.locator("#policy-error").is_visible()
    assert page.locator("#policy-error-field").inner_text() == "policy.checks.blank.reject"
    assert json.loads(page.input_value("#policy"))["checks"]["blank"] == {"reject": "low"}
    assert deployment.get("/v1/workflows/policy-blank/versions/1/policy").json()["revision"] == 1

    # Fixed: saved, the page says so and shows the new revision and the stored policy.
    policy["checks"]["blank"] = {"reject": 0.01}
    page.fill("#policy", json.dumps(policy, indent=2))
    with page.expect_navigation():
        page.click(save)
    assert page.locator("#policy-saved").inner_text() == "Saved: the policy is now at revision 2."
    assert page.locator("#policy-revision").inner_text().startswith("Revision 2")
    assert json.loads(page.input_value("#policy"))["checks"]["blank"] == {"reject": 0.01}
    stored = deployment.get("/v1/workflows/policy-blank/versions/1/policy").json()
    assert stored["revision"] == 2 and stored["policy"]["checks"]["blank"] == {"reject": 0.01}

    # Calibration: the one label, blank's score drawn as a rejected bar, its band measured, no suggestion yet.
    with page.expect_navigation():
        page.click("#calibration-link")
    assert "0 approved, 1 rejected" in page.locator("#label-counts").inner_text()
    check = page.locator("#check-blank")
    assert check.is_visible()
    assert check.locator("svg rect.bar-rejected").count() == 10
    heights = [float(h) for h in check.locator("svg rect.bar-rejected").evaluate_all(
        "bars => bars.map(b => b.getAttribute('height'))")]
    assert sum(h > 0 for h in heights) == 1, heights  # one rejected output, one non-empty bar
    reject_row = check.locator("tr.band-reject").inner_text()
    assert "0.0100" in reject_row and "1 / 0 / 0 / 0" in reject_row, reject_row
    assert "at least 10 approved and 10 rejected" in check.locator("p.note").inner_text()
    screenshot = tmp_path / "calibration.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 0

    # Applying a threshold goes through the same validation: a bad one is shown in the page, a good one saved.
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    form = {"csrf_token": csrf, "version": "1", "check": "blank", "band": "reject"}
    refused = requests.post(f"{deployment.base_url}/admin/calibration/policy-blank/apply",
                            data={**form, "threshold": "2"}, cookies=cookies, allow_redirects=False, timeout=30)
    assert refused.status_code == 422 and 'id="calibration-error"' in refused.text, refused.text
    applied = requests.post(f"{deployment.base_url}/admin/calibration/policy-blank/apply",
                            data={**form, "threshold": "0.03"}, cookies=cookies, allow_redirects=False, timeout=30)
    assert applied.status_code == 303, applied.text
    page.goto(applied.headers["Location"])
    assert "revision 3" in page.locator("#applied").inner_text()
    assert deployment.get("/v1/workflows/policy-blank/versions/1/policy").json()["policy"]["checks"]["blank"] == {
        "reject": 0.03}
