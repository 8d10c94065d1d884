"""The operator console: access rules, CSRF, masking, and every page in headless Chromium after real traffic."""

from __future__ import annotations

import dataclasses
import html
import re
import threading
import time
from pathlib import Path

import pytest
import requests

from bot.console import charts
from bot.records import labels
from tests.scenarios.console_helpers import ARTIFACTS, TOKEN, BackgroundWorker, say, serve, traffic
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
    assert "要优惠" in overview and "新客专享券" in overview  # intents and campaigns by their Chinese names
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


def shown(page: str) -> str:
    """The text a person reads on a page: no tags, attributes, scripts or styles."""
    page = re.sub(r"<(script|style|title)\b.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


# codes that must never be read on a page: every label-table key that is a code (has _ or -, or is an
# intent), and the ids that have names in content (consultants.yaml, coupons.yaml)
RAW = sorted({k for t in labels.TABLES.values() for k in t if "_" in k} | set(labels.INTENTS) - {"faq", "none"}
             | {"li.consultant", "wang.consultant", "zhao.supervisor", "new-customer-10", "asked-discount-85", "queue"})


def raw_codes(text: str, ids: frozenset[str] = frozenset()) -> list[str]:
    """The codes read in `text` (but `ids`: journey and step ids operators wrote, such as a step named greeting)."""
    return [k for k in RAW if k not in ids and re.search(rf"(?<![\w.-]){re.escape(k)}(?![\w.-])", text)]


def test_every_page_is_chinese_all_the_way(console, sandbox, service, runtime):
    runtime.clock = last_weekday_at(0, 10).timestamp  # Monday 10:00: the handoff goes to a consultant on duty
    traffic(sandbox, service, runtime)
    say(sandbox, service, runtime, "还在吗", "wmConsoleB02")  # while a person holds the chat: one row, not two
    s = login(console)
    pages = {p: s.get(console.url + p).text for p in
             [*PAGES, "/admin/customer?id=wmConsoleB02", "/admin/sop?customer=wmConsoleB02", "/admin/?days=1"]}
    ids = frozenset({j.id for j in runtime.content.journeys} | {st.id for j in runtime.content.journeys for st in j.steps})
    for path, page in pages.items():
        text = shown(page)
        found = raw_codes(text, ids)
        assert found == [], (path, [text[max(0, text.find(k) - 80):text.find(k) + 40] for k in found])
        assert '{"' not in page, path
        assert "favicon.svg" in page
    queue = shown(pages["/admin/handoffs"])
    assert "小李" in queue or "小王" in queue, "consultants by name"
    b02 = shown(pages["/admin/customer?id=wmConsoleB02"])
    assert b02.count("还在吗") == 1, "a message seen during a handoff is one timeline row"
    assert "客户上条消息后已发" in b02 and "48 小时内已发" not in b02
    assert "转人工（询价）" in b02, b02
    a01 = shown(pages["/admin/customer?id=wmConsoleA01"])
    assert "新客专享券" in a01 and "客户说「有优惠吗」" in a01
    assert s.get(console.url + "/admin/static/favicon.svg").status_code == 200


def test_label_table_reads_prefixed_codes():
    assert labels.reason_zh("stopped:handed_off") == "已停止：已转人工"
    assert labels.zh("kf_window_closed") == "客户超过 48 小时未发消息"
    assert labels.zh("customer_added", "trigger") == "添加好友"
    assert labels.zh("least_loaded", "assignment") == "当前接待最少的顾问"
    assert labels.reason_zh("closed_by:li.consultant", {"li.consultant": "小李"}.get) == "由小李结束"
    assert labels.outcome_zh("sent:kf") == "已发送（客服号消息）"
    assert "{" not in labels.event_sentence("handoff_opened", {"intent": "price", "consultant": "li.consultant",
                                                               "reason": "least_loaded"},
                                            labels.Names(consultant={"li.consultant": "小李"}.get))
    assert labels.event_sentence("mystery", {"a": "b_c"}) == "" and labels.event_name("mystery") == "其他事件"


def test_live_queue_endpoint_returns_the_queue_and_needs_a_login(console, sandbox, service, runtime):
    traffic(sandbox, service, runtime)
    anon = requests.get(console.url + "/admin/handoffs/live", allow_redirects=False)
    assert anon.status_code == 401
    s = login(console)
    live = s.get(console.url + "/admin/handoffs/live").json()
    assert [row["customer"] for row in live["rows"]] == ["wmConsoleB02"] and live["waiting"] + live["claimed"] >= 1
    assert "wmConsoleB02" in live["html"] and raw_codes(shown(live["html"])) == []
    say(sandbox, service, runtime, "人工", "wmConsoleD04")
    assert "wmConsoleD04" in [row["customer"] for row in s.get(console.url + "/admin/handoffs/live").json()["rows"]]
    page = s.get(console.url + "/admin/handoffs").text
    assert 'src="/admin/static/live.js"' in page and "<script>" not in page  # CSP: script-src 'self'
    assert s.get(console.url + "/admin/static/live.js").status_code == 200


def test_charts_have_no_zero_labels_wrapping_legends_and_headroom():
    grouped = charts.grouped_hbars("漏斗", [("新客专享券", [3, 0, 0]), ("满减券", [0, 0, 0])], ["已发放", "已核销", "已过期"])
    assert not re.search(r">0<", str(grouped)), "no zero-value labels"
    names = ["客户消息（人工接待中）", "机器人发送的全部消息", "顾问首次回复的消息", "群发任务", "客服号消息", "欢迎语"]
    svg = str(charts.stacked_bars("图", ["12-01", "12-02"], {n: [1, 2] for n in names}, width=480))
    ys = {float(y) for y in re.findall(r'<rect x="[\d.]+" y="([\d.-]+)" width="10"', svg)}
    assert len(ys) >= 2, "the legend wraps onto a second line"
    xs = [float(x) for x in re.findall(r'<rect x="([\d.]+)" y="[\d.-]+" width="10"', svg)]
    assert max(xs) < 480
    one = str(charts.bars("每日转人工", ["12-01", "12-02"], [5, 9]))
    tops = [float(y) for y in re.findall(r'<text x="[\d.]+" y="([\d.]+)" font-size="10" text-anchor="middle">9<', one)]
    assert tops and tops[0] >= 10, "the top value is not clipped"


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


DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"  # the README shows these: kept current
IN_DOCS = ("overview", "handoffs", "customer", "sop", "sandbox", "channels")


def shot(page, name: str) -> None:
    """A screenshot: into docs/screenshots for the pages the README shows, test-artifacts/ for the rest."""
    folder = DOCS if name in IN_DOCS else ARTIFACTS
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"console-{name}.png"), full_page=name != "overview")


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


def test_browser_live_queue_updates_without_a_reload(browser, runtime, sandbox, service, r):
    traffic(sandbox, service, runtime)
    svc = serve(runtime.settings, r, runtime.content, sandbox.url, TOKEN, runtime.coupons)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(svc.url + f"/admin/login?token={TOKEN}")
        page.goto(svc.url + "/admin/handoffs")
        page.wait_for_selector("#handoff-queue")
        assert "wmConsoleLive" not in page.inner_text("#handoff-queue")
        page.evaluate("window.__same_page = 1")
        first = page.inner_text("#handoff-queue .waited")
        say(sandbox, service, runtime, "人工", "wmConsoleLive")  # a new handoff, through the sandbox and a worker
        page.locator("#handoff-queue tr", has_text="wmConsoleLive").wait_for(timeout=15_000)  # CSP: no eval
        assert page.evaluate("window.__same_page") == 1, "updated in place, not reloaded"
        assert page.url.endswith("/admin/handoffs")
        page.wait_for_timeout(1500)
        assert page.inner_text("#handoff-queue .waited") != first
        assert "秒" in page.inner_text("#handoff-queue .waited"), "waiting time ticks"
        assert raw_codes(page.inner_text("main")) == []
        assert not [e for e in errors if "Content Security Policy" in e], errors
        shot(page, "live-queue")
    finally:
        svc.stop()
