"""Operator actions (issue 12.4) from the console (CSRF-protected POSTs) and the CLI, over real Redis and the
sandbox: close and reassign a handoff, replay a dead letter, pause and resume a journey; each recorded with who."""

from __future__ import annotations

import getpass
import json
import re
from datetime import datetime, timedelta
from datetime import time as local_time

import pytest
import requests

from bot.ops import cli
from bot.queue.inbox import Inbox, Item
from bot.records.handoffs import Handoffs
from bot.records.store import Store
from sop import engine as sop_engine
from tests.scenarios import test_handoff_e2e as e2e
from tests.scenarios.console_helpers import TOKEN, serve
from tests.scenarios.test_console import csrf_of, login
from tests.scenarios.test_handoff_e2e import CUSTOMER, TZ, cards_to, say, to_customer
from tests.support import ROOT, drain, make_settings, sop_due, sop_keys

clock = e2e.clock  # the handoff scenarios' fixtures: a settable clock (Monday 10:00), the sandbox desk
desk_env = e2e.desk_env

CLI_USER = f"cli:{getpass.getuser()}"


@pytest.fixture()
def console(runtime, sandbox, r):
    svc = serve(runtime.settings, r, runtime.content, sandbox.url, TOKEN, runtime.coupons,
                staff=lambda: runtime.parts().staff)
    yield svc
    svc.stop()


@pytest.fixture()
def cli_env(monkeypatch, sandbox, redis_url):
    """The CLI's environment: the repo's config.yaml, the test Redis, the sandbox as WeCom."""
    for k, v in make_settings(sandbox.url, redis_url)[1].items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("WECOM_BOT_CONFIG", str(ROOT / "config.yaml"))


def events(r, kind: str) -> list[dict]:
    return [e for e in Store(r).events(500) if e["kind"] == kind]


def shown(page: str) -> str:
    """A page's text as a reader sees it (no tags, so no class names)."""
    return re.sub(r"<[^>]+>", " ", page)


def handoff(runtime):
    return Handoffs(runtime.r, TZ).open_for(CUSTOMER)


def kf_state(runtime, h) -> tuple[int, str]:
    """The session's state and servicer as WeCom (the sandbox, over HTTP) answers kf/service_state/get."""
    return runtime.wecom().service_state(h.open_kfid, CUSTOMER)


def other(h) -> str:
    return "wang.consultant" if h.consultant != "wang.consultant" else "li.consultant"


def test_close_from_the_console_ends_the_session_and_is_recorded(desk_env, service, console, runtime, r):
    say(desk_env, service, runtime, "多少钱")
    h = handoff(runtime)
    assert desk_env.service_state(CUSTOMER) == 3
    s = login(console)
    page = s.get(console.url + "/admin/handoffs")
    assert 'class="close-handoff"' in page.text and h.id in page.text
    refused = s.post(console.url + "/admin/handoffs/close", data={"handoff": h.id}, allow_redirects=False)
    assert refused.status_code == 403 and handoff(runtime) is not None
    done = s.post(console.url + "/admin/handoffs/close", data={"handoff": h.id, "csrf": csrf_of(page.text)})
    assert done.status_code == 200 and "已结束转人工，机器人恢复接待" in done.text
    assert desk_env.service_state(CUSTOMER) == 4 and handoff(runtime) is None
    [ev] = events(r, "handoff_closed")
    assert ev["handoff"] == h.id and ev["reason"] == "operator" and ev["by"] == "console" and ev["client"] == "127.0.0.1"
    before = len(to_customer(desk_env))
    say(desk_env, service, runtime, "你好")
    assert len(to_customer(desk_env)) == before + 1  # the bot answers again
    timeline = s.get(console.url + f"/admin/customer?id={CUSTOMER}").text
    assert "控制台（127.0.0.1）结束了转人工" in timeline and "handoff_closed" not in shown(timeline)


def test_reassign_from_the_console_transfers_alerts_and_records(desk_env, service, console, runtime, r):
    say(desk_env, service, runtime, "多少钱")
    h = handoff(runtime)
    target = other(h)
    s = login(console)
    page = s.get(console.url + f"/admin/customer?id={CUSTOMER}")
    assert 'class="reassign-handoff"' in page.text and f'<option value="{target}">' in page.text
    assert s.post(console.url + "/admin/handoffs/reassign", data={"handoff": h.id, "userid": target},
                  allow_redirects=False).status_code == 403
    assert handoff(runtime).consultant == h.consultant
    done = s.post(console.url + "/admin/handoffs/reassign",
                  data={"handoff": h.id, "userid": target, "csrf": csrf_of(page.text),
                        "next": f"/admin/customer?id={CUSTOMER}"})
    assert done.status_code == 200 and "已改派，新顾问已收到提醒" in done.text
    assert kf_state(runtime, h) == (3, target)
    assert handoff(runtime).consultant == target and len(cards_to(desk_env, target)) == 1
    [ev] = [e for e in events(r, "handoff_reassigned") if e.get("by")]
    assert (ev["frm"], ev["to"], ev["by"], ev["client"]) == (h.consultant, target, "console", "127.0.0.1")
    assert "控制台（127.0.0.1）把转人工改派给" in done.text and "handoff_reassigned" not in shown(done.text)
    # someone who is neither in consultants.yaml nor a kf servicer is refused
    again = s.post(console.url + "/admin/handoffs/reassign", data={"handoff": h.id, "userid": "nobody.x",
                                                                  "csrf": csrf_of(page.text)})
    assert "该顾问不在顾问名单中" in again.text and handoff(runtime).consultant == target


def test_close_and_reassign_from_the_cli(desk_env, service, runtime, r, cli_env, capsys):
    say(desk_env, service, runtime, "多少钱")
    h = handoff(runtime)
    target = other(h)
    assert cli.main(["handoffs", "reassign", h.id, target]) == 0
    assert "reassigned" in capsys.readouterr().out
    assert kf_state(runtime, h) == (3, target) and len(cards_to(desk_env, target)) == 1
    [ev] = [e for e in events(r, "handoff_reassigned") if e.get("by")]
    assert ev["by"] == CLI_USER and ev["to"] == target
    assert cli.main(["handoffs", "reassign", h.id, "nobody.x"]) == 1
    assert cli.main(["handoffs", "close", h.id]) == 0
    assert desk_env.service_state(CUSTOMER) == 4 and handoff(runtime) is None
    [ev] = events(r, "handoff_closed")
    assert ev["by"] == CLI_USER and ev["reason"] == "operator"
    assert cli.main(["handoffs", "close", h.id]) == 1  # already closed
    assert cli.main(["handoffs", "close", "no-such-handoff"]) == 1


def dead_letter(r, key: str) -> str:
    inbox = Inbox(r)
    inbox.put(Item("escalate", '{"id": "nope", "level": 1}', key))
    [entry] = [e for e in inbox.read("test-consumer", 10, None) if e.data.startswith('{"id": "nope"')]
    inbox.dead_letter(entry, "boom: it kept failing")
    return inbox.dead_letters()[-1]["id"]


def test_replay_a_dead_letter_from_the_console_and_the_cli(console, runtime, r, cli_env, capsys):
    first, second = dead_letter(r, "dl-1"), dead_letter(r, "dl-2")
    s = login(console)
    page = s.get(console.url + "/admin/handoffs")
    assert f'data-letter="{first}"' in page.text and "升级提醒" in page.text and "boom: it kept failing" in page.text
    assert s.post(console.url + "/admin/dlq/replay", data={"id": first}, allow_redirects=False).status_code == 403
    assert Inbox(r).depth()["dead"] == 2
    done = s.post(console.url + "/admin/dlq/replay", data={"id": first, "csrf": csrf_of(page.text)})
    assert "已重放到消息队列" in done.text and f'data-letter="{first}"' not in done.text
    assert [d["id"] for d in Inbox(r).dead_letters()] == [second]
    assert any(e.kind == "escalate" for e in Inbox(r).peek())
    [ev] = events(r, "dead_letters_replayed")
    assert (ev["ids"], ev["count"], ev["by"], ev["client"]) == ([first], 1, "console", "127.0.0.1")
    assert cli.main(["dlq", "replay", "1-0"]) == 1  # not a dead letter
    assert cli.main(["dlq", "replay", second]) == 0
    assert "replayed 1 dead letter(s)" in capsys.readouterr().out
    assert Inbox(r).depth()["dead"] == 0
    assert events(r, "dead_letters_replayed")[0]["by"] == CLI_USER


def queued_touches(r, journey: str) -> list[dict]:
    """The touches of `journey` the engine put into the inbox (not yet performed)."""
    found = [json.loads(e.data) for e in Inbox(r).peek() if e.kind == "touch"]
    return [t for t in found if t.get("journey") == journey]


def held_member(r, journey: str) -> str:
    [member] = [m for m in sop_due(r) if m.startswith(journey + "|")]
    return member


def enrolled(runtime, journey: str, customer: str) -> datetime:
    """`customer` (who just wrote to the kf account) enrolled in `journey` now; the local day-3 20:30 after."""
    engine = runtime.engine()
    now = datetime.now(TZ)
    assert engine.enroll_journey(customer, journey, now) == 1
    return datetime.combine(now.date() + timedelta(days=3), local_time(20, 30), tzinfo=TZ)


def test_paused_journey_is_not_sent_until_resumed_from_the_console(sandbox, service, console, runtime, r):
    say(sandbox, service, runtime, "你好", "wmPause01")
    due = enrolled(runtime, "purchase_guide", "wmPause01")
    engine = runtime.engine()
    s = login(console)
    page = s.get(console.url + "/admin/sop")
    assert 'class="pause-journey" data-journey="purchase_guide"' in page.text
    assert s.post(console.url + "/admin/sop/pause", data={"journey": "purchase_guide"},
                  allow_redirects=False).status_code == 403
    done = s.post(console.url + "/admin/sop/pause", data={"journey": "purchase_guide", "csrf": csrf_of(page.text)})
    assert "旅程已暂停" in done.text and 'class="resume-journey" data-journey="purchase_guide"' in done.text
    [ev] = events(r, "journey_paused")
    assert (ev["journey"], ev["by"], ev["client"]) == ("purchase_guide", "console", "127.0.0.1")
    plan = s.get(console.url + "/admin/sop?customer=wmPause01").text
    assert "旅程已暂停" in plan
    held = engine.tick(due)  # another journey's touch of that evening still goes
    assert held.deferred >= 1 and not queued_touches(r, "purchase_guide")
    drain(runtime.worker())
    assert not [e for e in events(r, "touch") if e.get("journey") == "purchase_guide"]
    engine.tick(due + timedelta(minutes=1))  # deferred, not claimed again at once
    assert not queued_touches(r, "purchase_guide") and any(r.sismember(k, held_member(r, "purchase_guide")) for k in sop_keys(r, sop_engine.HELD))
    done = s.post(console.url + "/admin/sop/resume", data={"journey": "purchase_guide", "csrf": csrf_of(page.text)})
    assert "旅程已恢复" in done.text and events(r, "journey_resumed")[0]["by"] == "console"
    sent = engine.tick(due + timedelta(minutes=2))
    assert sent.emitted >= 1 and queued_touches(r, "purchase_guide")
    drain(runtime.worker())
    assert [e for e in events(r, "touch") if e.get("journey") == "purchase_guide"]


def test_pause_and_resume_from_the_cli_and_sop_plan_shows_paused(sandbox, service, runtime, r, cli_env, capsys):
    say(sandbox, service, runtime, "你好", "wmPause02")
    due = enrolled(runtime, "purchase_guide", "wmPause02")
    assert cli.main(["sop", "pause", "purchase_guide"]) == 0
    assert "paused purchase_guide" in capsys.readouterr().out
    assert sop_engine.paused(r)["purchase_guide"]["by"] == CLI_USER
    assert events(r, "journey_paused")[0]["by"] == CLI_USER
    assert cli.main(["sop", "plan", "--customer", "wmPause02"]) == 0
    assert "purchase_guide/day3_guide" in (out := capsys.readouterr().out) and "defer paused" in out
    assert "(journey paused" in out
    runtime.engine().tick(due)
    assert not queued_touches(r, "purchase_guide")
    assert cli.main(["sop", "resume", "purchase_guide"]) == 0
    assert "1 held touch(es) are due again" in capsys.readouterr().out
    assert events(r, "journey_resumed")[0]["by"] == CLI_USER
    runtime.engine().tick(due + timedelta(minutes=1))
    assert queued_touches(r, "purchase_guide")
    with pytest.raises(SystemExit):
        cli.main(["sop", "pause", "no_such_journey"])


def test_sop_page_and_actions_need_login(console):
    for path in ("/admin/handoffs/close", "/admin/dlq/replay", "/admin/sop/pause"):
        assert requests.post(console.url + path, data={}, allow_redirects=False).status_code == 403
