"""`wecom-bot doctor` against the sandbox: wrong secret, corp id, trusted IP, unreachable Redis, servicers, all good."""

from __future__ import annotations

import dataclasses
import io

from bot.ops.doctor import run_doctor


def doctor(settings, **kw) -> tuple[int, str]:
    out = io.StringIO()
    rc = run_doctor(settings, out, **kw)
    return rc, out.getvalue()


def test_all_good_exits_zero(settings, sandbox):
    sandbox.set_servicers({"li.consultant": 0, "wang.consultant": 0, "zhao.supervisor": 0})
    rc, text = doctor(settings)
    assert rc == 0, text
    assert "access token: gettoken accepted" in text and "receiving servicers: li.consultant" in text
    assert "all checks passed" in text and "timezone Asia/Shanghai" in text
    assert settings.secret not in text and settings.aes_key not in text


def test_wrong_secret_is_explained(settings, sandbox):
    rc, text = doctor(dataclasses.replace(settings, secret="not-the-secret"))
    assert rc == 1
    assert "errcode 40001" in text and "WECOM_SECRET" in text and "应用管理" in text
    assert "not-the-secret" not in text


def test_wrong_corp_id_and_untrusted_ip_are_explained(settings, sandbox):
    rc, text = doctor(dataclasses.replace(settings, corp_id="wwWrongCorp"))
    assert rc == 1 and "errcode 40013" in text and "WECOM_CORP_ID" in text
    sandbox.queue("gettoken", {"errcode": 60020, "errmsg": "not allow to access from your ip, from ip: 1.2.3.4"})
    rc, text = doctor(settings)
    assert rc == 1 and "errcode 60020" in text and "企业可信IP" in text and "1.2.3.4" in text


def test_unreachable_redis_is_explained(settings, sandbox):
    sandbox.set_servicers({"li.consultant": 0})
    rc, text = doctor(dataclasses.replace(settings, redis_url="redis://:hunter2@127.0.0.1:1/0"))
    assert rc == 1
    assert "Redis at redis://:***@127.0.0.1:1/0 is unreachable" in text and "REDIS_URL" in text
    assert "hunter2" not in text


def test_no_receiving_servicer_and_unbound_kf(settings, sandbox):
    sandbox.set_servicers({"li.consultant": 1})
    rc, text = doctor(settings)
    assert rc == 1 and "no servicer is receiving (接待中)" in text and "接待人员" in text
    sandbox.queue("kf/account/list", {"errcode": 48002, "errmsg": "api forbidden"})
    rc, text = doctor(settings)
    assert rc == 1 and "可调用接口的应用" in text


def test_unreachable_wecom_is_explained(settings):
    rc, text = doctor(settings.with_api_base("http://127.0.0.1:1/cgi-bin/"))
    assert rc == 1 and "cannot reach http://127.0.0.1:1/cgi-bin/" in text and "WECOM_API_BASE_URL" in text


def test_a_broken_faq_file_is_named_as_such(settings, sandbox, tmp_path):
    """An error in faq.yaml names faq.yaml (it used to be reported as keywords.yaml); every router file is listed."""
    sandbox.set_servicers({"li.consultant": 0, "wang.consultant": 0, "zhao.supervisor": 0})
    faq = tmp_path / "faq.yaml"
    faq.write_text('fallback: "回复人工"\ntopics:\n  delivery:\n    keywords: 发货\n    answer: "48 小时内发货"\n',
                   encoding="utf-8")
    rc, text = doctor(dataclasses.replace(settings, content={**settings.content, "faq": faq}))
    assert rc == 1
    assert f"content faq: {faq}:4: topics.delivery.keywords" in text and f"edit {faq}" in text
    assert "content keywords: " in text and "content examples: " in text and "content dialect: " in text


def test_a_team_that_could_leave_a_chat_unannounced_is_reported(settings, sandbox, tmp_path, monkeypatch):
    monkeypatch.delenv("WECOM_ROBOT_KEY", raising=False)
    source = settings.content["consultants"].read_text(encoding="utf-8")
    lonely = tmp_path / "consultants.yaml"
    lonely.write_text("\n".join(line for line in source.splitlines() if "supervisor:" not in line) + "\n",
                      encoding="utf-8")
    rc, text = doctor(dataclasses.replace(settings, content={**settings.content, "consultants": lonely}))
    assert "could reach nobody" in text and f"edit {lonely}" in text


def test_a_redis_password_is_never_printed():
    import pytest

    from bot.redis_server import RedisUnavailable, connect

    with pytest.raises(RedisUnavailable) as err:
        connect("redis://:s3cret-pass@127.0.0.1:1/0", timeout=0.2)
    assert "s3cret-pass" not in str(err.value) and ":***@127.0.0.1:1" in str(err.value)


def test_doctor_and_readyz_name_the_active_scheduler(settings, sandbox, runtime, r):
    import os
    import threading
    import time

    from bot import observe
    from bot.web import metrics

    sandbox.set_servicers({"li.consultant": 0})
    rc, text = doctor(settings)
    assert "scheduler: none is active" in text  # a warning: nothing is failed for it
    scheduler = runtime.scheduler(threading.Event())
    epoch = scheduler.leader()
    assert epoch > 0
    rc, text = doctor(settings)
    line = next(x for x in text.splitlines() if "scheduler:" in x)
    assert f"{scheduler.me} is active (epoch {epoch}, since " in line
    assert f"-{os.getpid()}-" in scheduler.me  # the holder names host and pid
    observe.heartbeat_worker(r, "w1")
    r.set(observe.HEARTBEAT_SCHEDULER, f"{time.time():.0f}", ex=50)
    ok, body = metrics.readiness(r, settings)
    assert body["scheduler"]["active"] == scheduler.me and body["scheduler"]["epoch"] == epoch
    assert body["scheduler"]["last_takeover"]["holder"] == scheduler.me
