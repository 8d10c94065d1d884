"""The WeCom client against the sandbox: token sharing, one refresh, backoff, configuration errors."""

from __future__ import annotations

import pytest

from bot.config import SANDBOX_CORP_ID
from bot.wecom import WeComConfigError, WeComError, WeComRateLimited
from bot.wecom.client import WechatpyWeCom


def client(sandbox, r, secret="sandbox-secret", corp=SANDBOX_CORP_ID, sleeps=None):
    return WechatpyWeCom(corp, secret, 1000002, f"{sandbox.url}/cgi-bin/", r, timeout=5,
                         sleep=(sleeps.append if sleeps is not None else lambda s: None))


def test_token_is_shared_through_redis(sandbox, r):
    client(sandbox, r).servicers(sandbox.open_kfid)
    client(sandbox, r).servicers(sandbox.open_kfid)
    assert len(sandbox.requests("gettoken")) == 1


def test_one_refresh_on_expired_token_then_error_is_raised(sandbox, r):
    c = client(sandbox, r)
    c.servicers(sandbox.open_kfid)
    sandbox.queue("kf/servicer/list", {"errcode": 42001, "errmsg": "expired"}, times=1)
    c.servicers(sandbox.open_kfid)
    assert len(sandbox.requests("gettoken")) == 2
    sandbox.queue("kf/servicer/list", {"errcode": 40014, "errmsg": "invalid"}, times=2)
    with pytest.raises(WeComError) as err:
        c.servicers(sandbox.open_kfid)
    assert err.value.errcode == 40014
    assert len(sandbox.requests("gettoken")) == 3  # one refresh, no spin


def test_backoff_on_rate_limit_then_success(sandbox, r):
    sleeps: list[float] = []
    sandbox.queue("kf/servicer/list", {"errcode": 45009, "errmsg": "freq"}, times=2)
    assert client(sandbox, r, sleeps=sleeps).servicers(sandbox.open_kfid) == {}
    assert len(sleeps) == 2 and sleeps[0] < sleeps[1]


def test_rate_limit_that_persists_is_raised(sandbox, r):
    sandbox.queue("kf/servicer/list", {"errcode": 45009, "errmsg": "freq"}, times=10)
    with pytest.raises(WeComRateLimited):
        client(sandbox, r).servicers(sandbox.open_kfid)


@pytest.mark.parametrize("secret,corp,code,hint", [
    ("wrong-secret", SANDBOX_CORP_ID, 40001, "WECOM_SECRET"),
    ("sandbox-secret", "wwWrongCorp", 40013, "WECOM_CORP_ID"),
])
def test_gettoken_errors_are_configuration_errors_with_a_fix(sandbox, r, secret, corp, code, hint):
    with pytest.raises(WeComConfigError) as err:
        client(sandbox, r, secret=secret, corp=corp).servicers(sandbox.open_kfid)
    assert err.value.errcode == code and hint in str(err.value)


def test_untrusted_ip_is_explained(sandbox, r):
    sandbox.queue("gettoken", {"errcode": 60020, "errmsg": "not allow to access from your ip"})
    with pytest.raises(WeComConfigError) as err:
        client(sandbox, r).servicers(sandbox.open_kfid)
    assert "企业可信IP" in str(err.value)


def test_unreachable_wecom_is_a_wecom_error(r):
    from bot.redis_server import free_port

    c = WechatpyWeCom(SANDBOX_CORP_ID, "s", 1, f"http://127.0.0.1:{free_port()}/cgi-bin/", r, timeout=1,
                      sleep=lambda s: None)
    with pytest.raises(WeComError):
        c.servicers("wk")


def test_a_502_is_retried_for_a_repeatable_call(sandbox, r):
    sleeps: list[float] = []
    sandbox.fault("kf/servicer/list", "http_502")
    assert client(sandbox, r, sleeps=sleeps).servicers(sandbox.open_kfid) == {}
    assert len(sandbox.requests("kf/servicer/list")) == 2 and len(sleeps) == 1


def test_a_502_on_an_alert_is_not_repeated(sandbox, r):
    sandbox.fault("message/send", "http_502")
    with pytest.raises(WeComError) as err:
        client(sandbox, r).send_app_message({"touser": "zhangsan", "msgtype": "text", "text": {"content": "新客户"}})
    assert err.value.errcode is None and len(sandbox.requests("message/send")) == 1


def test_a_timeout_is_a_network_error_and_an_alert_is_not_sent_twice(sandbox, r):
    c = WechatpyWeCom(SANDBOX_CORP_ID, "sandbox-secret", 1000002, f"{sandbox.url}/cgi-bin/", r, timeout=0.3,
                      sleep=lambda s: None)
    c.servicers(sandbox.open_kfid)  # the token first
    sandbox.fault("message/send", "slow", seconds=1.0)
    with pytest.raises(WeComError) as err:
        c.send_app_message({"touser": "zhangsan", "msgtype": "text", "text": {"content": "新客户"}})
    assert "network: ReadTimeout" in str(err.value)
    assert len(sandbox.requests("message/send")) == 1


def test_the_group_robot_posts_json(sandbox, r):
    client(sandbox, r).send_robot("robot-key", {"msgtype": "text", "text": {"content": "待接待 3 位"}})
    sent = sandbox.requests("webhook/send")
    assert len(sent) == 1 and sent[0]["json"]["text"]["content"] == "待接待 3 位" and sent[0]["query"]["key"] == "robot-key"


def test_an_answer_that_breaks_off_is_not_a_reason_to_send_an_alert_again(sandbox, r):
    sandbox.fault("message/send", "broken")
    with pytest.raises(WeComError) as err:
        client(sandbox, r).send_app_message({"touser": "zhangsan", "msgtype": "text", "text": {"content": "新客户"}})
    assert "network: ChunkedEncodingError" in str(err.value)
    assert len(sandbox.requests("message/send")) == 1  # it may have been sent: not repeated


def test_an_answer_cut_short_on_gettoken_is_a_wecom_error(sandbox, r):
    sandbox.fault("gettoken", "broken")
    with pytest.raises(WeComError):
        client(sandbox, r).servicers(sandbox.open_kfid)


def test_a_page_that_is_not_json_fails_like_requests_does():
    import requests

    from bot.wecom.http import Response

    page = Response(403, b"<html>Forbidden</html>", {}, "http://proxy/cgi-bin/gettoken")
    with pytest.raises(requests.RequestException):  # what bot/wecom/client.py turns into a WeComError
        page.json()
