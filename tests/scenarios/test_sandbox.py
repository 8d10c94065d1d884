"""The fake WeCom server: tokens, kf sync/send rules, session states, scripting, control endpoints."""

from __future__ import annotations

import threading

import pytest
import requests

from bot.wecom.sandbox import Sandbox

KF = "wkSandboxKf0000000000000000000001"
USER = "wmCustomer0001"


@pytest.fixture()
def sb() -> Sandbox:
    """A started sandbox, stopped after the test."""
    box = Sandbox().start()
    yield box
    box.stop()


def token(sb: Sandbox) -> str:
    """A valid access_token from the sandbox."""
    r = requests.get(f"{sb.url}/cgi-bin/gettoken", params={"corpid": sb.corp_id, "corpsecret": sb.secret})
    return r.json()["access_token"]


def call(sb: Sandbox, path: str, body: dict | None = None, tok: str | None = None, **params: str) -> dict:
    """POST (or GET when body is None) an API path with an access_token."""
    params["access_token"] = tok or token(sb)
    url = f"{sb.url}/cgi-bin/{path}"
    r = requests.post(url, json=body, params=params) if body is not None else requests.get(url, params=params)
    assert r.status_code == 200
    return r.json()


def send_text(sb: Sandbox, text: str, tok: str, msgid: str | None = None, user: str = USER) -> dict:
    """kf/send_msg of a text to a customer."""
    body = {"touser": user, "open_kfid": KF, "msgtype": "text", "text": {"content": text}}
    if msgid:
        body["msgid"] = msgid
    return call(sb, "kf/send_msg", body, tok)


def test_gettoken_errors_and_success(sb: Sandbox) -> None:
    get = lambda **p: requests.get(f"{sb.url}/cgi-bin/gettoken", params=p).json()  # noqa: E731
    assert get(corpid="wrong", corpsecret=sb.secret)["errcode"] == 40013
    assert get(corpid=sb.corp_id, corpsecret="wrong")["errcode"] == 40001
    good = get(corpid=sb.corp_id, corpsecret=sb.secret)
    assert good["errcode"] == 0 and good["expires_in"] <= 7200 and good["access_token"]
    assert get(corpid=sb.corp_id, corpsecret=sb.secret)["access_token"] == good["access_token"]


def test_access_token_checks_and_expiry(sb: Sandbox) -> None:
    body = {"open_kfid": KF}
    assert requests.post(f"{sb.url}/cgi-bin/kf/sync_msg", json=body).json()["errcode"] == 41001
    assert call(sb, "kf/sync_msg", body, "bogus")["errcode"] == 40014
    tok = token(sb)
    assert call(sb, "kf/sync_msg", body, tok)["errcode"] == 0
    sb.expire_tokens()
    assert call(sb, "kf/sync_msg", body, tok)["errcode"] == 42001
    fresh = token(sb)
    assert fresh != tok and call(sb, "kf/sync_msg", body, fresh)["errcode"] == 0
    sb.advance(7201)
    assert call(sb, "kf/sync_msg", body, fresh)["errcode"] == 42001


def test_sync_msg_pages_and_shapes(sb: Sandbox) -> None:
    for i in range(1500):
        sb.add_customer_text(USER, f"m{i}")
    tok, cb = token(sb), sb.callback_token()
    first = call(sb, "kf/sync_msg", {"open_kfid": KF, "token": cb, "limit": 1000}, tok)
    assert first["has_more"] == 1 and len(first["msg_list"]) == 1000
    second = call(sb, "kf/sync_msg", {"open_kfid": KF, "token": cb, "cursor": first["next_cursor"]}, tok)
    assert second["has_more"] == 0 and len(second["msg_list"]) == 500
    assert second["msg_list"][-1]["text"] == {"content": "m1499"}
    m = first["msg_list"][0]
    assert set(m) == {"msgid", "open_kfid", "external_userid", "send_time", "origin", "msgtype", "text"}
    assert (m["origin"], m["msgtype"], m["open_kfid"], m["external_userid"]) == (3, "text", KF, USER)
    again = call(sb, "kf/sync_msg", {"open_kfid": KF, "cursor": second["next_cursor"]}, tok)
    assert again["msg_list"] == [] and again["has_more"] == 0


def test_sync_msg_small_page_size_events_and_errors() -> None:
    with Sandbox(page_size=2) as sb:
        sb.add_customer_text(USER, "hi")
        sb.add_event({"event_type": "enter_session", "external_userid": USER, "welcome_code": "WC1"})
        sb.add_staff_text(USER, "li.consultant", "hello")
        tok = token(sb)
        page = call(sb, "kf/sync_msg", {"open_kfid": KF, "limit": 50}, tok)
        assert len(page["msg_list"]) == 2 and page["has_more"] == 1
        event = page["msg_list"][1]
        assert event["origin"] == 4 and "open_kfid" not in event and event["event"]["open_kfid"] == KF
        rest = call(sb, "kf/sync_msg", {"open_kfid": KF, "cursor": page["next_cursor"]}, tok)
        assert rest["msg_list"][0]["origin"] == 5 and rest["msg_list"][0]["servicer_userid"] == "li.consultant"
        assert call(sb, "kf/sync_msg", {"open_kfid": KF, "token": "stale"}, tok)["errcode"] == 95007
        assert call(sb, "kf/sync_msg", {}, tok)["errcode"] == 95000
        cb = sb.callback_token()
        sb.advance(601)
        assert call(sb, "kf/sync_msg", {"open_kfid": KF, "token": cb}, tok)["errcode"] == 95007


def test_sent_messages_not_returned_by_sync(sb: Sandbox) -> None:
    sb.add_customer_text(USER, "price?")
    tok = token(sb)
    assert send_text(sb, "100 yuan", tok)["errcode"] == 0
    msgs = call(sb, "kf/sync_msg", {"open_kfid": KF}, tok)["msg_list"]
    assert [m["text"]["content"] for m in msgs] == ["price?"]


def test_send_msg_refuses_a_reused_msgid_and_msgid_rules(sb: Sandbox) -> None:
    sb.add_customer_text(USER, "hi")
    tok = token(sb)
    first = send_text(sb, "hello", tok, msgid="reply_0001")
    assert first == {"errcode": 0, "errmsg": "ok", "msgid": "reply_0001"}
    again = send_text(sb, "hello", tok, msgid="reply_0001")
    assert again["errcode"] == 40058 and "msgid" in again["errmsg"]
    assert [d["msgid"] for d in sb.delivered()] == ["reply_0001"]
    d = sb.delivered()[0]
    assert (d["touser"], d["open_kfid"], d["msgtype"], d["text"]) == (USER, KF, "text", {"content": "hello"})
    assert send_text(sb, "x", tok, msgid="bad id!")["errcode"] == 40058
    assert send_text(sb, "x", tok, msgid="a" * 33)["errcode"] == 40058
    generated = send_text(sb, "auto", tok)
    assert generated["errcode"] == 0 and len(generated["msgid"]) <= 32


def test_five_message_cap_and_reset_by_customer(sb: Sandbox) -> None:
    sb.add_customer_text(USER, "hi")
    tok = token(sb)
    assert [send_text(sb, f"r{i}", tok)["errcode"] for i in range(6)] == [0, 0, 0, 0, 0, 95001]
    sb.add_customer_text(USER, "more?")
    assert send_text(sb, "r6", tok)["errcode"] == 0
    assert len(sb.delivered()) == 6


def test_send_window_48h_and_no_customer_message(sb: Sandbox) -> None:
    tok = token(sb)
    assert send_text(sb, "cold", tok, user="wmNobody")["errcode"] == 95002
    sb.add_customer_text(USER, "hi")
    sb.advance(48 * 3600 + 1)
    assert send_text(sb, "late", token(sb))["errcode"] == 95002


def test_state_3_blocks_send(sb: Sandbox) -> None:
    sb.add_customer_text(USER, "hi")
    sb.set_service_state(USER, 3, "li.consultant")
    assert send_text(sb, "bot", token(sb))["errcode"] == 95018
    assert sb.delivered() == []


def test_trans_table_servicers_and_msg_code(sb: Sandbox) -> None:
    sb.set_servicers({"li": 0, "wang": 1, "zhao": 0})
    tok = token(sb)
    trans = lambda state, servicer="": call(  # noqa: E731
        sb, "kf/service_state/trans",
        {"open_kfid": KF, "external_userid": USER, "service_state": state, "servicer_userid": servicer}, tok)
    assert trans(1) == {"errcode": 0, "errmsg": "ok"}
    assert trans(0)["errcode"] == 95016
    assert trans(3, "wang")["errcode"] == 95019
    assert trans(3, "ghost")["errcode"] == 95014
    assert trans(2)["msg_code"].startswith("MSGCODE")
    assert trans(1)["errcode"] == 95016
    assert trans(3, "li")["msg_code"]
    assert trans(3, "li")["errcode"] == 95016
    assert "msg_code" not in trans(3, "zhao")
    got = call(sb, "kf/service_state/get", {"open_kfid": KF, "external_userid": USER}, tok)
    assert (got["service_state"], got["servicer_userid"]) == (3, "zhao")
    end = trans(4)
    assert end["msg_code"] and trans(3, "li")["errcode"] == 95016 and trans(0)["errcode"] == 95016
    reply = {"code": end["msg_code"], "msgtype": "text", "text": {"content": "rate us"}}
    assert call(sb, "kf/send_msg_on_event", reply, tok)["errcode"] == 0
    assert sb.delivered()[-1]["code"] == end["msg_code"] and sb.delivered()[-1]["touser"] == USER
    sb.add_customer_text(USER, "back again")
    assert sb.service_state(USER) == 0
    listed = call(sb, "kf/servicer/list", None, tok, open_kfid=KF)["servicer_list"]
    assert {"userid": "wang", "status": 1} in listed and len(listed) == 3


def test_scripted_queue_and_http_status(sb: Sandbox) -> None:
    sb.add_customer_text(USER, "hi")
    tok = token(sb)
    sb.queue("kf/send_msg", {"errcode": -1, "errmsg": "system busy"}, times=2)
    sb.queue("/cgi-bin/message/send", {"_http_status": 502, "errcode": -1})
    assert send_text(sb, "a", tok)["errcode"] == -1
    assert send_text(sb, "b", tok)["errcode"] == -1
    assert send_text(sb, "c", tok)["errcode"] == 0
    r = requests.post(f"{sb.url}/cgi-bin/message/send", params={"access_token": tok}, json={})
    assert r.status_code == 502 and r.json() == {"errcode": -1}
    assert [d["text"]["content"] for d in sb.delivered()] == ["c"]
    assert len(sb.requests("kf/send_msg")) == 3


def test_staff_messages_robot_and_misc(sb: Sandbox) -> None:
    tok = token(sb)
    card = {"touser": "li", "agentid": 1000002, "msgtype": "template_card",
            "template_card": {"card_type": "button_interaction", "task_id": "t1"}}
    sent = call(sb, "message/send", card, tok)
    assert sent["errcode"] == 0 and sent["response_code"]
    text = call(sb, "message/send", {"touser": "li", "msgtype": "text", "text": {"content": "x"}}, tok)
    assert "response_code" not in text
    robot = requests.post(f"{sb.url}/cgi-bin/webhook/send", params={"key": "K"},
                          json={"msgtype": "markdown", "markdown": {"content": "**alert**"}}).json()
    assert robot["errcode"] == 0
    assert [m["msgtype"] for m in sb.staff_messages()] == ["template_card", "text", "markdown"]
    upd = {"userids": ["li"], "agentid": 1, "response_code": sent["response_code"], "button": {"replace_name": "ok"}}
    assert call(sb, "message/update_template_card", upd, tok)["errcode"] == 0
    assert call(sb, "externalcontact/add_msg_template", {"chat_type": "single"}, tok)["fail_list"] == []
    assert call(sb, "externalcontact/nope", {}, tok)["errcode"] == 99999
    bad = requests.post(f"{sb.url}/cgi-bin/kf/sync_msg", params={"access_token": tok}, data=b"{not json")
    assert bad.json()["errcode"] == 47001
    rec = sb.requests("message/update_template_card")[0]
    assert rec["method"] == "POST" and rec["json"] == upd and rec["query"] == {"access_token": tok}


def test_welcome_code_on_event(sb: Sandbox) -> None:
    sb.add_event({"event_type": "enter_session", "external_userid": USER, "welcome_code": "WC42"})
    body = {"code": "WC42", "msgid": "welcome_1", "msgtype": "msgmenu",
            "msgmenu": {"head_content": "hi", "list": [{"type": "click", "click": {"id": "1", "content": "A"}}]}}
    assert call(sb, "kf/send_msg_on_event", body, token(sb))["msgid"] == "welcome_1"
    d = sb.delivered()[0]
    assert (d["touser"], d["code"], d["msgtype"]) == (USER, "WC42", "msgmenu")


def test_control_endpoints(sb: Sandbox) -> None:
    ctl = f"{sb.url}/sandbox"
    got = requests.post(f"{ctl}/customer/text", json={"external_userid": USER, "text": "coupon?"}).json()
    assert got["open_kfid"] == KF and got["corp_id"] == sb.corp_id and got["msgid"] and got["token"]
    tok = token(sb)
    synced = call(sb, "kf/sync_msg", {"open_kfid": KF, "token": got["token"]}, tok)
    assert synced["msg_list"][0]["msgid"] == got["msgid"]
    send_text(sb, "here is 10% off", tok)
    call(sb, "message/send", {"touser": "li", "msgtype": "text", "text": {"content": "lead"}}, tok)
    out = requests.get(f"{ctl}/outbox", params={"since": 0}).json()
    assert [(i["seq"], i["kind"]) for i in out["items"]] == [(1, "customer"), (2, "staff")] and out["next"] == 2
    assert requests.get(f"{ctl}/outbox", params={"since": 2}).json() == {"next": 2, "items": []}
    staff = requests.post(f"{ctl}/staff/text", json={"external_userid": USER, "servicer_userid": "li",
                                                     "text": "hi"}).json()
    assert staff["msgid"].startswith("servicer_msgid_")
    requests.post(f"{ctl}/script", json={"path": "kf/send_msg", "response": {"errcode": 95018}})
    assert send_text(sb, "blocked", tok)["errcode"] == 95018
    state = requests.get(f"{ctl}/state").json()
    assert state["messages"] == 2 and state["delivered"] == 1 and state["staff_messages"] == 1
    assert requests.post(f"{ctl}/customer/text", json={}).status_code == 400
    assert requests.post(f"{ctl}/reset").json() == {"ok": True}
    assert sb.requests() == [] and sb.delivered() == [] and requests.get(f"{ctl}/state").json()["messages"] == 0
    assert call(sb, "kf/sync_msg", {"open_kfid": KF}, tok)["errcode"] == 40014


def test_concurrent_sends_respect_cap(sb: Sandbox) -> None:
    sb.add_customer_text(USER, "hi")
    tok = token(sb)
    codes: list[int] = []
    threads = [threading.Thread(target=lambda i=i: codes.append(send_text(sb, f"r{i}", tok)["errcode"]))
               for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [0] * 5 + [95001] * 7
    assert sb.wait_for(lambda: len(sb.delivered()) == 5, timeout=1)
    assert not sb.wait_for(lambda: len(sb.delivered()) > 5, timeout=0.1)
