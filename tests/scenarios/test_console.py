"""The operator console: access rules, CSRF, masking, and every page in headless Chromium after real traffic."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.scenarios.console_helpers import ARTIFACTS, TOKEN, BackgroundWorker, serve, traffic
from tests.scenarios.test_handoff_e2e import last_weekday_at

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]
PAGES = ["/admin/", "/admin/handoffs", "/admin/customer?id=wmConsoleA01", "/admin/sop?customer=wmConsoleA01"]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(svc, token: str = TOKEN) -> requests.Session:
    s = requests.Session()
    page = s.get(svc.url + "/admin/login")
    resp = s.post(svc.url + "/admin/login", data={"csrf": csrf_of(page.text), "token": token},
                  allow_redirects=False)
    assert resp.status_code == 302, resp.text
    return s


@pytest.fixture()
def console(runtime, sandbox, r):
    svc = serve(runtime.settings, r, runtime.content, sandbox.url, TOKEN, runtime.coupons)
    yield svc
    svc.stop()


def test_console_is_off_without_a_token_outside_sandbox_mode(runtime, sandbox, r):
    svc = serve(runtime.settings, r, runtime.content, sandbox.url, None, runtime.coupons)
    try:
        assert requests.get(svc.url + "/admin/").status_code == 404
        assert requests.get(svc.url + "/admin/login").status_code == 404
        assert requests.post(svc.url + "/admin/login", data={"token": "x"}).status_code == 404
    finally:
        svc.stop()


def test_sandbox_mode_console_needs_its_token_even_from_localhost(runtime, sandbox, r):
    settings = dataclasses.replace(runtime.settings, secret=None)
    svc = serve(settings, r, runtime.content, sandbox.url, None, runtime.coupons)
    try:  # no token: off, whatever the address or forwarding headers say
        assert requests.get(svc.url + "/admin/").status_code == 404
        assert requests.get(svc.url + "/admin/sandbox", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 404
    finally:
        svc.stop()
    svc = serve(settings, r, runtime.content, sandbox.url, "run-token-abc", runtime.coupons)
    try:  # the banner's link (?token=) logs in; without it, the login page
        anon = requests.get(svc.url + "/admin/sandbox", allow_redirects=False)
        assert anon.status_code == 302 and "/admin/login" in anon.headers["Location"]
        s = requests.Session()
        assert s.get(svc.url + "/admin/login?token=run-token-abc").status_code == 200
        assert s.get(svc.url + "/admin/sandbox", allow_redirects=False).status_code == 200
        assert requests.get(svc.url + "/admin/login?token=wrong").status_code == 403
    finally:
        svc.stop()


def test_sandbox_chat_posts_to_the_service_not_to_what_host_says(runtime, sandbox, r):
    settings = dataclasses.replace(runtime.settings, secret=None)
    svc = serve(settings, r, runtime.content, sandbox.url, TOKEN, runtime.coupons)
    try:
        s = login(svc)
        page = s.get(svc.url + "/admin/sandbox")
        worker = threading.Thread(target=drain_soon, args=(runtime,), daemon=True)
        worker.start()
        resp = s.post(svc.url + "/admin/sandbox/send", data={"csrf": csrf_of(page.text), "customer": "wmHostTest1",
                                                        "text": "你好"},
                      headers={"Host": "attacker.example:1",  # requests picks cookies by Host: give them
                               "Cookie": "; ".join(f"{k}={v}" for k, v in s.cookies.items())},
                      allow_redirects=False)
        worker.join(10)
        assert resp.status_code == 302 and "error" not in resp.headers["Location"], resp.text
        assert any(d["touser"] == "wmHostTest1" for d in sandbox.delivered())
    finally:
        svc.stop()


def drain_soon(runtime) -> None:
    """A worker that answers what the sandbox chat queues (for up to 5 s)."""
    w, deadline = runtime.worker(), time.monotonic() + 5
    while time.monotonic() < deadline:
        w.run_once()
        time.sleep(0.05)


def test_failed_logins_are_limited_per_address_without_sleeping(console):
    s = requests.Session()
    page = s.get(console.url + "/admin/login")
    for _ in range(20):
        assert s.post(console.url + "/admin/login", data={"csrf": csrf_of(page.text), "token": "nope"}
                      ).status_code == 403
    blocked = s.post(console.url + "/admin/login", data={"csrf": csrf_of(page.text), "token": TOKEN},
                     allow_redirects=False)
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers


def test_unauthenticated_and_csrfless_requests_are_refused(console):
    anon = requests.Session()
    resp = anon.get(console.url + "/admin/handoffs", allow_redirects=False)
    assert resp.status_code == 302 and "/admin/login" in resp.headers["Location"]
    assert anon.get(console.url + "/metrics").status_code == 401  # metrics have their own token
    page = anon.get(console.url + "/admin/login")
    assert anon.post(console.url + "/admin/login", data={"token": TOKEN}).status_code == 403  # no CSRF token
    wrong = anon.post(console.url + "/admin/login", data={"csrf": csrf_of(page.text), "token": "nope"})
    assert wrong.status_code == 403 and "令牌不正确" in wrong.text
    # a forged cookie does not log in
    forged = requests.Session()
    forged.cookies.set("wecom_console", "eyJzaWQiOiJ4IiwiYXV0aCI6dHJ1ZX0.forged.sig")
    assert forged.get(console.url + "/admin/", allow_redirects=False).status_code == 302

    s = login(console)
    assert s.get(console.url + "/admin/handoffs").status_code == 200
    assert s.post(console.url + "/admin/mask", data={}).status_code == 403
    assert s.post(console.url + "/admin/logout", data={"csrf": "0" * 64}).status_code == 403
    other = login(console)  # another session's CSRF token is no good here
    other_csrf = csrf_of(other.get(console.url + "/admin/").text)
    assert s.post(console.url + "/admin/mask", data={"csrf": other_csrf}).status_code == 403
    own = csrf_of(s.get(console.url + "/admin/").text)
    copied = requests.Session()  # someone kept a copy of the logged-in cookie
    copied.cookies.set("wecom_console", s.cookies.get("wecom_console"))
    assert copied.get(console.url + "/admin/", allow_redirects=False).status_code == 200
    assert s.post(console.url + "/admin/logout", data={"csrf": own}, allow_redirects=False).status_code == 302
    assert s.get(console.url + "/admin/", allow_redirects=False).status_code == 302
    assert copied.get(console.url + "/admin/", allow_redirects=False).status_code == 302  # ended on the server


def test_pages_show_traffic_without_secrets_and_ids_can_be_masked(console, sandbox, service, runtime):
    traffic(sandbox, service, runtime)
    s = login(console)
    overview = s.get(console.url + "/admin/?days=7").text
    assert re.search(r'id="kpi-messages">4<', overview), "four customer messages"
    assert "<svg" in overview and 'class="bar"' in overview
    assert "discount" in overview and "new-customer-10" in overview
    found = s.get(console.url + "/admin/customer?q=wmConsole").text
    assert all(c in found for c in ("wmConsoleA01", "wmConsoleB02", "wmConsoleC03"))
    assert "wmConsoleB02" in s.get(console.url + "/admin/handoffs").text
    pages = [s.get(console.url + p).text for p in PAGES]
    secrets = [runtime.settings.secret, runtime.settings.aes_key, runtime.settings.token, TOKEN]
    for text in pages:
        assert not any(secret in text for secret in secrets)
    csrf = csrf_of(pages[0])
    s.post(console.url + "/admin/mask", data={"csrf": csrf, "next": "/admin/handoffs"})
    masked = s.get(console.url + "/admin/handoffs").text
    assert "wmConsoleB02" not in masked and "wmCo…02" in masked
    timeline = s.get(console.url + "/admin/customer?id=wmConsoleA01").text
    assert "wmConsoleA01" not in timeline and "有优惠吗" in timeline


# --- in the browser -----------------------------------------------------------------------------

@pytest.fixture()
def browser():
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not installed at /usr/bin/chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS)
        yield b
        b.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


def test_browser_login_every_page_charts_and_sandbox_chat(browser, runtime, sandbox, service, r):
    traffic(sandbox, service, runtime)
    settings = dataclasses.replace(runtime.settings, secret=None)  # sandbox mode: the 沙盒 page is on
    svc = serve(settings, r, runtime.content, sandbox.url, TOKEN, runtime.coupons)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(svc.url + "/admin/")
        assert "/admin/login" in page.url
        shot(page, "login")
        page.fill("#token", "wrong")
        page.click("#login-submit")
        assert page.inner_text("#login-error") == "令牌不正确"
        page.fill("#token", TOKEN)
        page.click("#login-submit")
        page.wait_for_selector("#kpi-messages")
        assert page.inner_text("#kpi-messages") == "4"
        for chart in ("#chart-messages", "#chart-intents", "#chart-handoffs", "#chart-coupons", "#chart-sop"):
            assert page.locator(f"{chart} svg.chart").count() >= 1, chart
        assert page.locator("#chart-messages svg.chart rect.bar").count() >= 1
        assert page.locator("#chart-sop svg.chart rect.bar").count() >= 1
        shot(page, "overview")

        page.click("text=转人工")
        page.wait_for_selector("#handoff-queue")
        assert "wmConsoleB02" in page.inner_text("#handoff-queue")
        assert page.locator("svg.chart").count() >= 1
        shot(page, "handoffs")

        page.click("header nav >> text=客户")
        page.fill("#customer-q", "wmConsoleA01")
        page.click("#customer-search")
        page.wait_for_selector("#timeline")
        timeline = page.inner_text("#timeline")
        assert "有优惠吗" in timeline and "优惠券" in timeline and "SOP 触达" in timeline
        assert "要优惠" in page.inner_text("#customer-card")
        shot(page, "customer")

        page.click("header nav >> text=SOP")
        page.wait_for_selector("#journeys")
        assert "new_customer_week" in page.inner_text("#journeys")
        assert "全部旅程校验通过" in page.inner_text("#sop-errors")
        page.fill("#plan-customer", "wmConsoleA01")
        page.click("#plan-submit")
        page.wait_for_selector("#plan")
        assert page.locator("#chart-upcoming svg.chart").count() == 1 or "没有待触达" in page.content()
        shot(page, "sop")

        page.click("#mask-toggle")
        page.goto(svc.url + "/admin/customer?id=wmConsoleA01")
        assert page.inner_text("#customer-id") == "wmCo…01"
        page.click("#mask-toggle")

        runtime.clock = last_weekday_at(0, 10).timestamp  # Monday 10:00: consultants on duty, whatever the hour
        with BackgroundWorker(runtime):
            page.click("header nav >> text=沙盒")
            page.wait_for_selector("#sandbox-text")
            page.fill("#sandbox-customer", "wmBrowser01")
            page.click("text=切换客户")
            page.fill("#sandbox-text", "有优惠吗")
            page.click("#sandbox-send")
            page.wait_for_selector("#customer-side .bubble.bot")
            side = page.inner_text("#customer-side")
            assert "有优惠吗" in side and "券码" in side
            page.fill("#sandbox-text", "人工")
            page.click("#sandbox-send")
            page.wait_for_selector("#staff-side .bubble.staff", timeout=10_000)
            assert page.locator("#customer-side .bubble.bot").count() >= 2
            shot(page, "sandbox")
        assert any(d["touser"] == "wmBrowser01" for d in sandbox.delivered())
    finally:
        svc.stop()
