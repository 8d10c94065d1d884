"""Channels (渠道活码) end to end: codes synced to the sandbox, customers arriving through them over encrypted
callbacks (retried), lost contacts, and the stats and CLI an operator reads."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import pytest

from bot.content.channels import load_channels
from bot.records.channels import Arrival, ChannelBook
from bot.yamlfile import ConfigError
from tests.scenarios.test_console import browser  # noqa: F401 - the headless Chromium fixture
from tests.support import ROOT, drain, make_settings, run_command

CHANNELS = ROOT / "content" / "channels.yaml"


def contact_xml(change: str, customer: str, staff: str, state: str = "", code: str = "", t: int = 0) -> str:
    """A change_external_contact callback as WeCom sends it."""
    extra = (f"<State><![CDATA[{state}]]></State>" if state else "") + \
        (f"<WelcomeCode><![CDATA[{code}]]></WelcomeCode>" if code else "")
    return ("<xml><ToUserName><![CDATA[wwsandbox0000000001]]></ToUserName><FromUserName><![CDATA[sys]]>"
            f"</FromUserName><CreateTime>{t or int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[{change}]]></ChangeType>"
            f"<UserID><![CDATA[{staff}]]></UserID><ExternalUserID><![CDATA[{customer}]]></ExternalUserID>"
            f"{extra}</xml>")


def sync(runtime):
    done, tags_error = runtime.channels(runtime.wecom()).sync()
    assert tags_error == ""
    return done


def test_sync_creates_codes_once_and_updates_what_changed(sandbox, runtime, tmp_path, monkeypatch):
    first = sync(runtime)
    assert [(s.channel.id, s.action) for s in first] == [
        ("store_sh01", "created"), ("insert_box", "created"), ("live_0618", "created")]
    adds = sandbox.requests("externalcontact/add_contact_way")
    assert [a["json"]["type"] for a in adds] == [1, 2]  # one member: a personal code; several: type 2
    assert adds[0]["json"]["state"] == "store_sh01" and adds[1]["json"]["user"] == ["li.consultant", "wang.consultant"]
    kf = sandbox.requests("kf/add_contact_way")
    assert len(kf) == 1 and kf[0]["json"]["scene"] == "live_0618"
    assert first[2].url.startswith("https://work.weixin.qq.com/kfid/") and "live_0618" in first[2].url
    tags = sandbox.requests("externalcontact/add_corp_tag")
    assert len(tags) == 1 and {t["name"] for t in tags[0]["json"]["tag"]} == {"门店客户", "包裹卡"}

    again = sync(runtime)  # nothing changed: nothing is sent
    assert {s.action for s in again} == {"unchanged"} and [s.url for s in again] == [s.url for s in first]
    assert len(sandbox.requests("externalcontact/add_contact_way")) == 2
    assert len(sandbox.requests("kf/add_contact_way")) == 1
    assert len(sandbox.requests("externalcontact/add_corp_tag")) == 1

    edited = tmp_path / "channels.yaml"  # the insert card now routes to one member
    edited.write_text(CHANNELS.read_text(encoding="utf-8").replace(
        "staff: [li.consultant, wang.consultant]", "staff: [wang.consultant]"), encoding="utf-8")
    monkeypatch.setattr(runtime.content, "get", lambda name, _get=runtime.content.get:
                        load_channels(edited) if name == "channels" else _get(name))
    third = {s.channel.id: s for s in sync(runtime)}
    assert third["insert_box"].action == "updated" and third["insert_box"].url == first[1].url  # same QR
    update = sandbox.requests("externalcontact/update_contact_way")
    assert len(update) == 1 and update[0]["json"]["user"] == ["wang.consultant"]
    way = runtime.wecom().get_contact_way(update[0]["json"]["config_id"])
    assert way["user"] == ["wang.consultant"] and way["state"] == "insert_box"


def test_sandbox_refuses_contact_ways_as_wecom_does(sandbox, runtime):
    from bot.wecom import WeComError

    wecom = runtime.wecom()
    with pytest.raises(WeComError) as bad:
        wecom.update_contact_way("nope", "x", ["li.consultant"], True, "")
    assert bad.value.errcode == 41044
    body = {"type": 1, "scene": 3, "user": ["a"]}
    assert sandbox.contacts.add(body)["errcode"] == 41040  # bad scene
    assert sandbox.contacts.add({"type": 1, "scene": 2, "user": ["a", "b"]})["errcode"] == 41041
    assert sandbox.contacts.add({"type": 1, "scene": 2, "user": ["a"], "style": 9})["errcode"] == 41042
    assert sandbox.contacts.get({})["errcode"] == 41043
    sandbox.contacts.quota = len(sandbox.contacts.ways)
    assert sandbox.contacts.add({"type": 1, "scene": 2, "user": ["a"]})["errcode"] == 41045


def test_customer_from_a_staff_code_gets_tags_welcome_and_journey_once(sandbox, service, runtime):
    sync(runtime)
    t = int(time.time())
    for _ in range(3):  # WeCom retries the callback
        assert service.post(contact_xml("add_external_contact", "wmPoster1", "wang.consultant",
                                        "insert_box", "WC-insert", t)).status_code == 200
    drain(runtime.worker())
    welcomes = sandbox.requests("externalcontact/send_welcome_msg")
    assert len(welcomes) == 1 and welcomes[0]["json"]["welcome_code"] == "WC-insert"
    assert welcomes[0]["json"]["text"]["content"].startswith("感谢您的购买")  # the channel's own welcome
    marks = sandbox.requests("externalcontact/mark_tag")
    tag_id = runtime.channel_book.tag_ids()["包裹卡"]
    assert len(marks) == 1 and marks[0]["json"] == {"userid": "wang.consultant", "external_userid": "wmPoster1",
                                                     "add_tag": [tag_id]}
    assert "包裹卡" in runtime.customers.get("wmPoster1").tags
    assert runtime.channel_book.channel_of("wmPoster1") == "insert_box"
    now = datetime.now(runtime.settings.timezone)
    engine = runtime.engine()
    assert engine.enroll_journey("wmPoster1", "purchase_guide", now) == 0  # the channel enrolled it already
    assert engine.enroll_journey("wmNoChannel", "purchase_guide", now) == 1

    # Later the same customer scans the live-stream link: recorded, the first channel keeps them.
    drain(runtime.worker())
    book = runtime.channel_book
    assert book.attribute("wmPoster1", "live_0618", time.time()) == Arrival(first=False, new=True, channel="insert_box")
    assert book.channel_of("wmPoster1") == "insert_box"
    now = datetime.now(runtime.settings.timezone)
    stats = {s.channel: s for s in book.stats(["insert_box", "live_0618"], now - timedelta(days=1),
                                              now + timedelta(minutes=1))}
    assert stats["insert_box"].added == 1 and stats["live_0618"].added == 0 and stats["live_0618"].also == 1


def test_kf_link_scene_attributes_and_welcomes_through_the_event_code(sandbox, service, runtime):
    sync(runtime)
    scanned = sandbox.scan("live_0618", "wmLive1")
    assert scanned["kind"] == "kf"
    from tests.support import kf_notice

    for _ in range(2):
        service.post(kf_notice(scanned["token"]))
    drain(runtime.worker())
    on_event = [d for d in sandbox.delivered() if d["touser"] == "wmLive1"]
    assert len(on_event) == 1 and on_event[0]["text"]["content"].startswith("欢迎从直播间过来")
    assert runtime.channel_book.channel_of("wmLive1") == "live_0618"
    assert "直播间" in runtime.customers.get("wmLive1").tags
    assert not sandbox.requests("externalcontact/mark_tag")  # a kf customer has no staff contact to tag


def test_unknown_state_is_recorded_never_dropped(sandbox, service, runtime):
    service.post(contact_xml("add_external_contact", "wmOdd", "li.consultant", "old_flyer_2019", "WC-odd"))
    drain(runtime.worker())
    book = runtime.channel_book
    assert book.channel_of("wmOdd") == "unknown" and book.unknown_states() == {"old_flyer_2019": 1}
    service.post(contact_xml("add_external_contact", "wmOdd2", "li.consultant", "old_flyer_2019", "WC-odd2"))
    drain(runtime.worker())
    assert book.unknown_states() == {"old_flyer_2019": 2}
    assert len(sandbox.requests("externalcontact/send_welcome_msg")) == 2  # the journey's welcome still goes
    assert "unknown" in book.seen_channels()


def test_lost_customer_tells_the_consultant_once_and_counts_against_the_channel(sandbox, service, runtime):
    sync(runtime)
    service.post(contact_xml("add_external_contact", "wmGone", "li.consultant", "store_sh01", "WC-gone"))
    drain(runtime.worker())
    t = int(time.time()) + 5
    for _ in range(2):
        service.post(contact_xml("del_follow_user", "wmGone", "li.consultant", t=t))
    drain(runtime.worker())
    notes = [m for m in sandbox.staff_messages() if "流失提醒" in (m.get("text") or {}).get("content", "")]
    assert len(notes) == 1 and notes[0]["touser"] == "li.consultant"
    assert "门店海报-上海一店" in notes[0]["text"]["content"]
    now = datetime.now(runtime.settings.timezone)
    [s] = runtime.channel_book.stats(["store_sh01"], now - timedelta(hours=1), now + timedelta(minutes=1))
    assert s.added == 1 and s.lost == 1


def test_stats_on_a_seeded_history_match_a_hand_count(r):
    book = ChannelBook(r)
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Asia/Shanghai")
    day = datetime(2026, 11, 10, 10, 0, tzinfo=tz)
    # 10 customers from the poster on Nov 10, 4 from the live stream on Nov 11, 1 poster customer outside
    for i in range(10):
        book.attribute(f"p{i}", "store_sh01", day.timestamp() + i)
    for i in range(4):
        book.attribute(f"l{i}", "live_0618", (day + timedelta(days=1)).timestamp())
    book.attribute("late", "store_sh01", (day + timedelta(days=30)).timestamp())
    for i in range(3):  # replied within 24 h
        book.note(f"p{i}", "replied", day + timedelta(hours=2))
    book.note("p3", "replied", day + timedelta(hours=30))  # too late to count
    book.note("p0", "replied", day + timedelta(hours=40))  # the first reply is kept
    for who in ("p0", "p1", "l0"):
        book.note(who, "coupon", day + timedelta(hours=3))
    book.note("p1", "redeemed", day + timedelta(hours=5))
    book.note("p1", "purchased", day + timedelta(hours=5), 199.0)
    book.note("p1", "purchased", day + timedelta(days=3), 100.5)
    book.note("l0", "purchased", day + timedelta(days=2), 59.9)
    book.note("p9", "unsubscribed", day + timedelta(days=1))
    book.note("p8", "lost", day + timedelta(days=1))
    book.note("p7", "contact_deleted", day + timedelta(days=1))  # a staff member deleted them: not lost
    book.note("nobody", "purchased", day, 1000.0)  # not from a channel: not counted anywhere
    start, end = day - timedelta(hours=10), day + timedelta(days=2)
    stats = {s.channel: s for s in book.stats(["store_sh01", "live_0618"], start, end)}
    poster, live = stats["store_sh01"], stats["live_0618"]
    assert (poster.added, poster.replied, poster.coupon, poster.redeemed, poster.purchased, poster.orders,
            round(poster.amount, 2), poster.unsubscribed, poster.lost) == (10, 3, 2, 1, 1, 2, 299.5, 1, 1)
    assert (live.added, live.coupon, live.purchased, live.orders, round(live.amount, 2)) == (4, 1, 1, 1, 59.9)
    assert poster.as_json()["rates"]["replied"] == 0.3 and poster.daily == {"2026-11-10": 10}
    assert not r.exists("wecom:ch:cust:{nobody}")


def test_validation_names_file_line_and_key(tmp_path):
    bad = tmp_path / "channels.yaml"
    text = CHANNELS.read_text(encoding="utf-8")
    bad.write_text(text.replace("journey: purchase_guide", "journey: no_such_journey"), encoding="utf-8")
    line = next(i for i, t in enumerate(bad.read_text(encoding="utf-8").splitlines(), 1) if "no_such_journey" in t)
    with pytest.raises(ConfigError, match=rf"channels.yaml:{line}: channels\[1\].journey: unknown journey"):
        load_channels(bad, frozenset({"purchase_guide", "new_customer_week"}))
    bad.write_text(text.replace("    kf: true\n", "    kf: true\n    staff: [li.consultant]\n"), encoding="utf-8")
    with pytest.raises(ConfigError, match="exactly one of them"):
        load_channels(bad)
    bad.write_text(text.replace("id: store_sh01", "id: 门店"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"channels\[0\].id: expected 1-30 letters"):
        load_channels(bad)


def run(argv: list[str]) -> int:
    """Parse and run like `wecom-bot` does."""
    return run_command(argv)


def test_cli_sync_list_and_stats_json(sandbox, redis_url, r, monkeypatch, capsys):
    _, env = make_settings(sandbox.url, redis_url)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("WECOM_BOT_CONFIG", str(ROOT / "config.yaml"))
    assert run(["channels", "sync", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["channel"], x["action"]) for x in rows] == [("store_sh01", "created"), ("insert_box", "created"),
                                                           ("live_0618", "created")]
    assert set(rows[0]) == {"channel", "name", "kind", "action", "url", "error"}
    assert run(["channels", "sync"]) == 0
    assert "3 channel(s): 3 unchanged" in capsys.readouterr().out
    ChannelBook(r).attribute("wmCli", "store_sh01", time.time())
    assert run(["channels", "list", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["channel"] for x in listed] == ["store_sh01", "insert_box", "live_0618"]
    assert all(x["url"] and x["synced"] for x in listed)
    assert run(["channels", "stats", "--days", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"from", "to", "channels", "touches"} and data["touches"] == []
    poster = next(c for c in data["channels"] if c["channel"] == "store_sh01")
    assert poster["added"] == 1 and poster["name"] == "门店海报-上海一店" and set(poster["rates"]) >= {"replied", "lost"}
    assert run(["channels", "stats"]) == 0
    assert "门店海报-上海一店" in capsys.readouterr().out


def test_a_purchase_is_credited_to_the_last_touch_within_the_window(r):
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Asia/Shanghai")
    book = ChannelBook(r, tz, lambda: 72)
    at = datetime(2026, 11, 20, 20, 0, tzinfo=tz)
    book.touched("c1", "new_customer_week.day3_gift", at.timestamp())
    book.touched("c1", "coupon:new-customer-10", at.timestamp() + 60)  # the last one wins
    book.note("c1", "purchased", at + timedelta(hours=5), 88.0)
    book.touched("c2", "winback.offer", at.timestamp())
    book.note("c2", "purchased", at + timedelta(hours=73), 50.0)  # after the window: credited to nothing
    assert book.earned(at, at + timedelta(days=5)) == {"coupon:new-customer-10": {"orders": 1, "amount": 88.0}}
    assert book.earned(at, at + timedelta(hours=5)) == {}  # the end is exclusive


def test_coupon_and_purchase_of_a_channel_customer_through_the_real_path(sandbox, service, runtime):
    from bot.act.triggers import record_purchase
    from tests.support import kf_notice

    sync(runtime)
    scanned = sandbox.scan("live_0618", "wmLiveBuyer")
    service.post(kf_notice(scanned["token"]))
    drain(runtime.worker())
    token = sandbox.callback_token()
    sandbox.add_customer_text("wmLiveBuyer", "有优惠券吗")
    service.post(kf_notice(token))
    drain(runtime.worker())
    assert any("券码" in d["text"]["content"] for d in sandbox.delivered()
               if d["touser"] == "wmLiveBuyer" and d["msgtype"] == "text")
    now = datetime.now(runtime.settings.timezone)
    assert record_purchase(runtime.r, runtime.engine(), "wmLiveBuyer", "o-live-1", now, 129.0, runtime.outcomes)[0]
    assert not record_purchase(runtime.r, runtime.engine(), "wmLiveBuyer", "o-live-1", now, 129.0,
                               runtime.outcomes)[0]  # the same order again: nothing counted twice
    [s] = runtime.channel_book.stats(["live_0618"], now - timedelta(hours=1), now + timedelta(minutes=1))
    assert (s.added, s.replied, s.coupon, s.purchased, s.orders, s.amount) == (1, 1, 1, 1, 1, 129.0)
    earned = runtime.channel_book.earned(now - timedelta(hours=1), now + timedelta(minutes=1))
    assert [v for k, v in earned.items() if k.startswith("coupon:")] == [{"orders": 1, "amount": 129.0}]


def test_console_channel_page_in_a_browser(browser, sandbox, service, runtime, r):  # noqa: F811
    from bot.act.triggers import record_purchase
    from tests.scenarios.console_helpers import TOKEN, serve
    from tests.scenarios.test_console import login, shot, shown

    sync(runtime)
    for i, (state, staff) in enumerate((("store_sh01", "li.consultant"), ("store_sh01", "li.consultant"),
                                        ("insert_box", "wang.consultant"), ("mystery_qr", "li.consultant"))):
        service.post(contact_xml("add_external_contact", f"wmCh{i}", staff, state, f"WC-ch{i}"))
    drain(runtime.worker())
    now = datetime.now(runtime.settings.timezone)
    record_purchase(runtime.r, runtime.engine(), "wmCh2", "o-ch-1", now, 199.0, runtime.outcomes)
    svc = serve(runtime.settings, r, runtime.content, sandbox.url, TOKEN, runtime.coupons)
    try:
        text = shown(login(svc).get(svc.url + "/admin/channels?days=7").text)
        assert "门店海报-上海一店" in text and "未知渠道" in text and "199.00" in text
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(svc.url + f"/admin/login?token={TOKEN}")
        page.click("header nav >> text=渠道")
        page.wait_for_selector("#channel-stats")
        poster = page.inner_text("#channel-stats tr[data-channel=store_sh01]")
        assert poster.split()[:2] == ["门店海报-上海一店", "2"]
        assert page.locator("#chart-channels svg.chart rect.bar").count() >= 3
        assert page.locator("#chart-amount svg.chart rect.bar").count() == 1
        assert "https://" in page.inner_text("#channel-codes")
        shot(page, "channels")
    finally:
        svc.stop()


@pytest.mark.parametrize("channel,customer,welcome", [("live_0618", "wmChatLive", "欢迎从直播间过来"),
                                                      ("store_sh01", "wmChatStore", "欢迎来到上海一店")])
def test_chat_enters_through_a_channel_code(channel, customer, welcome, sandbox, service, runtime):
    import io
    import threading as th

    import requests

    from bot.ops import chat as chat_mod
    from tests.scenarios.test_cli_help import _info

    sync(runtime)
    out = io.StringIO()
    chat = chat_mod.ChatSession(_info(sandbox, service, runtime), customer, out, wait=0.2)
    stop = th.Event()
    worker = th.Thread(target=runtime.worker().run_forever, args=(stop,), daemon=True)
    worker.start()
    try:
        assert chat.enter(channel)
        def arrived() -> bool:
            try:
                chat.poll()
            except requests.RequestException:  # the Reader rides these out the same way
                return False
            return welcome in out.getvalue()

        assert sandbox.wait_for(arrived, timeout=10), out.getvalue()
        assert runtime.channel_book.channel_of(customer) == channel
        assert not chat.enter("no_such_code") and "channels sync" in out.getvalue()
    finally:
        stop.set()
        worker.join(5)


def test_sync_replaces_a_code_that_cannot_be_updated_or_was_deleted_on_wecom(sandbox, runtime, tmp_path, monkeypatch):
    first = {s.channel.id: s for s in sync(runtime)}
    edited = tmp_path / "channels.yaml"  # the one-member poster code gets a second consultant
    edited.write_text(CHANNELS.read_text(encoding="utf-8").replace("staff: [li.consultant]\n",
                                                                   "staff: [li.consultant, wang.consultant]\n", 1),
                      encoding="utf-8")
    monkeypatch.setattr(runtime.content, "get", lambda name, _get=runtime.content.get:
                        load_channels(edited) if name == "channels" else _get(name))
    second = {s.channel.id: s for s in sync(runtime)}
    poster = second["store_sh01"]
    assert poster.action == "replaced" and poster.url != first["store_sh01"].url  # type 1 cannot take two
    assert sandbox.requests("externalcontact/add_contact_way")[-1]["json"]["type"] == 2
    way = runtime.channel_book.way("insert_box")
    sandbox.contacts.delete({"config_id": way.config_id})  # someone deleted it in WeCom
    third = {s.channel.id: s for s in sync(runtime)}
    assert third["insert_box"].action == "replaced" and third["store_sh01"].action == "unchanged"
    assert {s.action for s in sync(runtime)} == {"unchanged"}


def test_kf_true_needs_exactly_one_kf_account(sandbox, runtime):
    sandbox.add_customer_text("wmOther", "你好", open_kfid="wkSecondAccount000000000000000002")
    done = {s.channel.id: s for s in sync(runtime)}
    assert done["live_0618"].action == "failed"
    assert done["live_0618"].error.startswith("kf: true needs exactly one kf account, 2 known")
    assert done["store_sh01"].action == "created"  # the others are not held up


def test_a_code_removed_from_yaml_still_attributes_without_tags(sandbox, service, runtime, tmp_path, monkeypatch):
    sync(runtime)
    trimmed = tmp_path / "channels.yaml"
    text = CHANNELS.read_text(encoding="utf-8")
    trimmed.write_text(text[:text.index("  - id: insert_box")], encoding="utf-8")
    monkeypatch.setattr(runtime.content, "get", lambda name, _get=runtime.content.get:
                        load_channels(trimmed) if name == "channels" else _get(name))
    service.post(contact_xml("add_external_contact", "wmOldCard", "wang.consultant", "insert_box", "WC-old"))
    drain(runtime.worker())
    assert runtime.channel_book.channel_of("wmOldCard") == "insert_box"
    assert "包裹卡" not in runtime.customers.get("wmOldCard").tags
    assert "insert_box" in runtime.channel_book.seen_channels()


def test_staff_deleting_a_customer_is_not_a_loss(sandbox, service, runtime):
    sync(runtime)
    service.post(contact_xml("add_external_contact", "wmKept", "li.consultant", "store_sh01", "WC-kept"))
    drain(runtime.worker())
    service.post(contact_xml("del_external_contact", "wmKept", "li.consultant", t=int(time.time()) + 3))
    drain(runtime.worker())
    now = datetime.now(runtime.settings.timezone)
    [s] = runtime.channel_book.stats(["store_sh01"], now - timedelta(hours=1), now + timedelta(minutes=1))
    assert s.added == 1 and s.lost == 0
    assert not [m for m in sandbox.staff_messages() if "流失提醒" in (m.get("text") or {}).get("content", "")]


def test_lost_notice_is_one_message_when_the_answer_was_lost(sandbox, service, runtime):
    sync(runtime)
    service.post(contact_xml("add_external_contact", "wmGone2", "li.consultant", "store_sh01", "WC-gone2"))
    drain(runtime.worker())
    sandbox.fault("message/send", "lost")  # WeCom sends it, the answer is lost: the entry is retried
    service.post(contact_xml("del_follow_user", "wmGone2", "li.consultant", t=int(time.time()) + 3))
    drain(runtime.worker())
    assert len(sandbox.requests("message/send")) == 2  # tried twice...
    notes = [m for m in sandbox.staff_messages() if "流失提醒" in (m.get("text") or {}).get("content", "")]
    assert len(notes) == 1  # ...one message: the same body, dropped by WeCom's duplicate check


def test_a_retried_entry_does_not_tag_or_enrol_twice(sandbox, service, runtime):
    sync(runtime)
    sandbox.fault("externalcontact/mark_tag", "lost")  # the tag call's answer is lost: the entry is retried
    service.post(contact_xml("add_external_contact", "wmRetry", "wang.consultant", "insert_box", "WC-retry"))
    drain(runtime.worker())
    assert len(sandbox.requests("externalcontact/mark_tag")) == 2  # the unknown step again (it is idempotent)
    assert runtime.store.counters().get("channel_arrived:insert_box") == 1
    assert len(sandbox.requests("externalcontact/send_welcome_msg")) == 1
    events = [e for e in runtime.store.events(200) if e["kind"] == "channel_arrived"]
    assert len(events) == 1


def test_a_second_scan_or_a_later_staff_code(sandbox, service, runtime):
    from tests.support import kf_notice

    sync(runtime)
    for _ in range(2):  # the live-stream link opened twice: tags and journey once
        scanned = sandbox.scan("live_0618", "wmTwice")
        service.post(kf_notice(scanned["token"]))
        drain(runtime.worker())
    assert runtime.store.counters().get("channel_arrived:live_0618") == 1
    # the same customer later adds a consultant through the store poster: that welcome goes with its code
    service.post(contact_xml("add_external_contact", "wmTwice", "li.consultant", "store_sh01", "WC-later"))
    drain(runtime.worker())
    welcomes = sandbox.requests("externalcontact/send_welcome_msg")
    assert len(welcomes) == 1 and welcomes[0]["json"]["text"]["content"].startswith("欢迎来到上海一店")
    assert runtime.channel_book.channel_of("wmTwice") == "live_0618"
    assert "门店客户" in runtime.customers.get("wmTwice").tags


def test_a_channels_customers_spread_over_shards(r):
    from zoneinfo import ZoneInfo

    from bot.records.channels import SHARDS

    r.set(SHARDS, 4)  # as a cluster (16) would have it, smaller
    tz = ZoneInfo("Asia/Shanghai")
    book = ChannelBook(r, tz, lambda: 72)
    at = datetime(2026, 11, 20, 12, 0, tzinfo=tz)
    for i in range(40):
        book.attribute(f"wmSpread{i:02d}", "store_sh01", at.timestamp() + i)
        book.attribute(f"wmSpread{i:02d}", "live_0618", at.timestamp() + 100 + i)
        book.touched(f"wmSpread{i:02d}", "coupon:x", at.timestamp())
        book.note(f"wmSpread{i:02d}", "purchased", at + timedelta(hours=1), 10.0)
    sizes = [r.zcard(k) for k in ["wecom:ch:members:{store_sh01}",
                                  *(f"wecom:ch:members:{{store_sh01:{i}}}" for i in range(1, 4))]]
    assert sum(sizes) == 40 and all(sizes), sizes
    [s] = book.stats(["store_sh01"], at - timedelta(hours=1), at + timedelta(hours=1))
    [live] = book.stats(["live_0618"], at - timedelta(hours=1), at + timedelta(hours=1))
    assert (s.added, s.orders, live.added, live.also) == (40, 40, 0, 40)
    assert book.earned(at, at + timedelta(days=1)) == {"coupon:x": {"orders": 40, "amount": 400.0}}
