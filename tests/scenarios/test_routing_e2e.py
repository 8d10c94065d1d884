"""Intents and routing end to end: webhook -> worker -> classify -> route -> act, against the sandbox."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests
import yaml

import handlers
from bot.records.customers import Customers
from bot.records.store import Store
from handlers.context import Ctx
from handlers.messages import KfMessage
from intents.classify import Intent
from tests.support import ROOT, answer, cli, drain, kf_notice

DEV_SET = ROOT / "tests" / "data" / "dev-utterances.tsv"  # a copy of shared/dev-utterances.tsv


def say(sandbox, service, runtime, text: str, customer: str = "wmRoute0001") -> list[str]:
    """The customer writes `text`; returns the texts the bot sent back for it."""
    before = len(sandbox.delivered())
    sandbox.add_customer_text(customer, text)
    assert service.post(kf_notice(sandbox.callback_token(), create_time=time.time_ns())).status_code == 200
    drain(runtime.worker())
    return [answer(d["text"]["content"]) for d in sandbox.delivered()[before:] if d["touser"] == customer]


def coupon_code(text: str) -> str:
    match = re.search(r"券码[:：]\s*([A-Z0-9]+)", text)
    assert match, text
    return match.group(1)


def test_discount_gets_a_coupon_and_asking_again_gets_the_same(sandbox, service, runtime):
    first = say(sandbox, service, runtime, "有优惠吗")
    assert len(first) == 1
    code = coupon_code(first[0])
    again = say(sandbox, service, runtime, "還有優惠券嗎？")
    assert coupon_code(again[0]) == code
    stats = runtime.coupons().stats(__import__("datetime").datetime.now(runtime.settings.timezone))
    assert sum(row["issued"] for row in stats) == 1
    assert "要优惠" in Customers(runtime.r).get("wmRoute0001").tags


def test_replayed_message_gets_one_coupon_and_one_reply(sandbox, service, runtime):
    say(sandbox, service, runtime, "有券吗", "wmReplay")
    # a lost cursor makes sync_msg return the same messages again
    runtime.r.delete(f"wecom:kf:{{{sandbox.open_kfid}}}:cursor")
    say(sandbox, service, runtime, "你好", "wmOther")
    assert len([d for d in sandbox.delivered() if d["touser"] == "wmReplay"]) == 1
    book = runtime.coupons()
    assert len(book.coupons_of("wmReplay")) == 1


@pytest.mark.parametrize("text,intent,tag", [
    ("這個多少錢", "price", "询价"),
    ("我要投诉，东西是坏的", "complaint", "投诉"),
    ("转人工", "human", "要人工"),
    ("price?", "price", "询价"),
])
def test_price_human_complaint_are_marked_for_a_human(sandbox, service, runtime, text, intent, tag):
    replies = say(sandbox, service, runtime, text)
    assert len(replies) == 1 and "顾问" in replies[0]
    events = [e for e in Store(runtime.r).events() if e["kind"] == "handoff_opened"]
    assert events and events[0]["intent"] == intent and events[0]["matched"]
    assert tag in Customers(runtime.r).get("wmRoute0001").tags


def test_unsubscribe_stops_touches(sandbox, service, runtime):
    replies = say(sandbox, service, runtime, "退订")
    assert replies == [runtime.settings.replies["unsubscribe"]]
    assert Customers(runtime.r).get("wmRoute0001").unsubscribed


def test_not_a_coupon_request(sandbox, service, runtime):
    replies = say(sandbox, service, runtime, "不要优惠券了，谢谢")
    assert not any("券码" in t for t in replies)


def test_image_sticker_empty_and_huge_messages_get_sensible_replies(sandbox, service, runtime):
    sandbox.add_customer_message("wmMedia", "image", {"media_id": "MEDIA1"})
    sandbox.add_customer_text("wmMedia", "   ")
    sandbox.add_customer_text("wmMedia", "价格" * 20000 + "\x00\x01")
    service.post(kf_notice(sandbox.callback_token()))
    drain(runtime.worker())
    texts = [answer(d["text"]["content"]) for d in sandbox.delivered() if d["touser"] == "wmMedia"]
    assert texts[0] == runtime.settings.replies["unsupported"]
    assert texts[1] == runtime.settings.replies["unsupported"]
    assert "顾问" in texts[2]


def test_route_order_complaint_beats_price():
    msg = KfMessage.from_api({"msgid": "m1", "open_kfid": "wk", "external_userid": "wm", "origin": 3,
                              "msgtype": "text", "text": {"content": "太贵了而且质量差我要投诉"}})
    names = [r.name for r in handlers.ROUTES]
    assert names.index("complaint") < names.index("human_or_price") < names.index("discount")
    both = Intent(msg.text, "complaint", None, ("投诉", "贵"), False, "handoff")
    name, actions = handlers.route(msg, both, Ctx(replies={"default": "d", "complaint": "c", "handoff": "h"}))
    assert name == "complaint"
    assert actions[-1].reply == "c"


def test_staff_reply_is_never_answered():
    msg = KfMessage.from_api({"msgid": "s1", "open_kfid": "wk", "external_userid": "wm", "origin": 5,
                              "servicer_userid": "li", "msgtype": "text", "text": {"content": "有优惠吗"}})
    name, actions = handlers.route(msg, None, Ctx(replies={"default": "d"}))
    assert name == "staff_reply"
    assert [type(a).__name__ for a in actions] == ["StaffReplied", "Record"]  # nothing sent to the customer


def test_reply_budget_five_per_customer_message(r):
    c = Customers(r)
    c.saw_message("wmB", time.time())
    assert [c.reserve_reply("wmB", time.time()) for _ in range(6)] == [None] * 5 + ["budget"]
    c.saw_message("wmB", time.time())
    assert c.reserve_reply("wmB", time.time()) is None
    assert c.reserve_reply("wmB", time.time() + 49 * 3600) == "window"


def test_msg_send_fail_stops_replies_until_the_customer_writes(sandbox, service, runtime):
    say(sandbox, service, runtime, "你好", "wmFail")
    sandbox.add_event({"event_type": "msg_send_fail", "open_kfid": sandbox.open_kfid,
                       "external_userid": "wmFail", "fail_msgid": "x", "fail_type": 6})
    service.post(kf_notice(sandbox.callback_token(), create_time=time.time_ns()))
    drain(runtime.worker())
    assert Customers(runtime.r).reserve_reply("wmFail", time.time()) == "budget"


def test_redeem_endpoint_authenticated_and_idempotent(sandbox, service, runtime, monkeypatch):
    code = coupon_code(say(sandbox, service, runtime, "有优惠吗", "wmRedeem")[0])
    url = service.url + "/api/coupons/redeem"
    assert requests.post(url, json={"code": code}, timeout=5).status_code in (401, 403)
    settings = runtime.settings
    import dataclasses

    from bot.app import create_app
    from tests.support import Service

    svc = Service(create_app(dataclasses.replace(settings, api_token="s3cret"), runtime.r, runtime.content,
                             coupons=runtime.coupons, engine=runtime.engine),
                  service.crypto, settings.callback_path)
    try:
        auth = {"Authorization": "Bearer s3cret"}
        assert requests.post(svc.url + "/api/coupons/redeem", json={"code": code}, timeout=5,
                             headers={"Authorization": "Bearer wrong"}).status_code == 401
        first = requests.post(svc.url + "/api/coupons/redeem", json={"code": code, "order_id": "O1"},
                              headers=auth, timeout=5)
        again = requests.post(svc.url + "/api/coupons/redeem", json={"code": code}, headers=auth, timeout=5)
        assert (first.status_code, first.json()["status"]) == (200, "redeemed")
        assert (again.status_code, again.json()["status"]) == (200, "already")
        unknown = requests.post(svc.url + "/api/coupons/redeem", json={"code": "NOPE2345"}, headers=auth, timeout=5)
        assert unknown.status_code == 404
    finally:
        svc.stop()


def test_broken_edit_keeps_the_running_version(tmp_path, settings, r):
    import dataclasses
    import shutil

    from bot.content import Content

    for name in settings.content:
        src = Path(settings.content[name])
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / src.name)
    paths = {name: tmp_path / Path(p).name for name, p in settings.content.items()}
    content = Content(dataclasses.replace(settings, content=paths), check_every=0)
    before = content.get("classifier")
    assert before.classify("有优惠吗").intent == "discount"
    paths["keywords"].write_text("labels: [unclosed\n")
    assert content.get("classifier") is before  # the reload runs off the message path
    content.wait_reload()
    assert content.get("classifier") is before
    assert content.error and f"{paths['keywords']}:" in content.error and "invalid YAML" in content.error
    text = (Path(settings.content["keywords"])).read_text()
    paths["keywords"].write_text(text + "\n")
    time.sleep(0.01)
    content.get("classifier")
    content.wait_reload()
    assert content.get("classifier") is not None and content.error is None


def test_cli_intents_classify_contract():
    out = cli("intents", "classify", stdin="有优惠吗\n這個多少錢\n退订\n")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [row["intent"] for row in rows] == ["discount", "price", "unsubscribe"]
    assert [row["route"] for row in rows] == ["coupon", "handoff", "optout"]
    assert all(set(row) == {"text", "intent", "topic", "matched", "negated", "route", "confidence", "why"}
               for row in rows)


def test_cli_intents_eval_meets_the_bar_on_the_dev_set():
    out = cli("intents", "eval", str(DEV_SET), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["macro_f1"] >= 0.95
    for label in ("price", "discount"):
        assert report["confusion"][label].get("unsubscribe", 0) == 0


def test_cli_coupons_stats_json(redis_url):
    out = cli("coupons", "stats", "--json", env={"REDIS_URL": redis_url})
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows and all(set(row) == {"campaign", "budget", "issued", "remaining", "redeemed", "expired"}
                        for row in rows)


def test_broken_yaml_stops_the_service_at_start_with_file_and_line(tmp_path, redis_url):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    bad = tmp_path / "coupons.yaml"
    bad.write_text("campaigns:\n  - name: x\n    shape: nonsense\n")
    cfg["content"] = {"keywords": str(ROOT / "intents/keywords.yaml"), "faq": str(ROOT / "intents/faq.yaml"),
                      "coupons": str(bad)}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    out = cli("serve", "--port", "0", "--sandbox-port", "0", env={"WECOM_BOT_CONFIG": str(tmp_path / "config.yaml"),
                                           "REDIS_URL": redis_url})
    assert out.returncode != 0
    assert f"{bad}:" in out.stderr and "shape" in out.stderr


def test_tags_mirror_to_wecom_corp_tags_where_configured(sandbox, service, runtime):
    import dataclasses

    from bot.records.customers import Customers

    runtime.settings = dataclasses.replace(runtime.settings, corp_tags={"询价": "etPRICE"})
    Customers(runtime.r).set_owner("wmTagged", "li.consultant")
    say(sandbox, service, runtime, "多少钱", "wmTagged")
    calls = sandbox.requests("externalcontact/mark_tag")
    assert [c["json"] for c in calls] == [{"userid": "li.consultant", "external_userid": "wmTagged",
                                            "add_tag": ["etPRICE"]}]


def test_a_journey_naming_an_unknown_coupon_campaign_is_a_config_error(tmp_path, settings, r):
    import dataclasses
    import shutil

    from bot.content import Content
    from bot.yamlfile import ConfigError

    journeys = tmp_path / "journeys"
    shutil.copytree(settings.content["journeys"], journeys)
    bday = journeys / "birthday.yaml"
    bday.write_text(bday.read_text().replace("campaign: birthday-80", "campaign: no-such-coupon"))
    with pytest.raises(ConfigError, match=r"birthday.yaml:\d+: .*no-such-coupon"):
        Content(dataclasses.replace(settings, content={**settings.content, "journeys": journeys}))
