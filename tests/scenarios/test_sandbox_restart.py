"""Issue 12.1: `serve` restarted with var/ kept answers the next message (the sandbox's state and cursors
survive with Redis); notices in a row that pull nothing are logged, flagged in Redis, /readyz, doctor, /metrics."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import requests

from bot.config import SANDBOX_CORP_ID, SANDBOX_OPEN_KFID
from bot.queue.kfsync import EMPTY_NOTICES_WARN, stall_reports
from bot.records.store import Store
from bot.web import metrics
from bot.web.envelope import CallbackCrypto, kf_notice_xml
from bot.wecom.sandbox_state import DurableSandbox
from tests.scenarios.test_slow_clients import sandbox_config, stop, wait_for_line


def _customer(sb: DurableSandbox, user: str, text: str) -> None:
    sb.handle("POST", "/sandbox/customer/text", json.dumps({"external_userid": user, "text": text}).encode())


def _sync(sb: DurableSandbox, cursor: str) -> dict:
    token = sb.handle("GET", f"/cgi-bin/gettoken?corpid={sb.corp_id}&corpsecret={sb.secret}", b"")[1]
    return sb.handle("POST", f"/cgi-bin/kf/sync_msg?access_token={token['access_token']}",
                     json.dumps({"open_kfid": sb.open_kfid, "cursor": cursor}).encode())[1]


def test_the_sandbox_state_and_its_cursors_survive_a_restart(tmp_path):
    state = tmp_path / "var" / "sandbox-state.json"
    first = DurableSandbox(SANDBOX_CORP_ID, "sandbox-secret", SANDBOX_OPEN_KFID, state_file=state).start()
    for i in range(3):
        _customer(first, "wmA", f"m{i}")
    page = _sync(first, "")
    assert [m["text"]["content"] for m in page["msg_list"]] == ["m0", "m1", "m2"]
    cursor = page["next_cursor"]
    _customer(first, "wmA", "sent before the restart, not yet pulled")
    first.stop()
    assert state.exists() and not list(state.parent.glob(".sandbox-state.*"))  # written atomically

    again = DurableSandbox(SANDBOX_CORP_ID, "sandbox-secret", SANDBOX_OPEN_KFID, state_file=state).start()
    try:
        assert again.restored and again.epoch == first.epoch
        _customer(again, "wmA", "after the restart")
        page = _sync(again, cursor)  # the old run's cursor is exact: nothing twice, nothing lost
        assert [m["text"]["content"] for m in page["msg_list"]] == ["sent before the restart, not yet pulled",
                                                                    "after the restart"]
        assert again.service_state("wmA") == 0 and again._sessions[(SANDBOX_OPEN_KFID, "wmA")]["last_customer"]
        # a cursor of another state (an old "sbx-49", or one from before a reset) reads from the start
        again.handle("POST", "/sandbox/reset", b"{}")
        assert again.epoch != first.epoch
        _customer(again, "wmB", "after a reset")
        for foreign in (cursor, "sbx-49"):
            assert [m["text"]["content"] for m in _sync(again, foreign)["msg_list"]] == ["after a reset"]
        assert _sync(again, "garbage")["errcode"] == 40058
    finally:
        again.stop()


def _stall(runtime, sandbox, notices: int, at: float) -> None:
    for _ in range(notices):
        runtime.worker().parts.kfsync.pull(sandbox.open_kfid, "", notice_at=at)


def test_notices_in_a_row_that_pull_nothing_are_flagged_logged_counted_and_shown(runtime, sandbox, r, caplog):
    store, kfid = Store(r), sandbox.open_kfid
    sandbox.add_customer_text("wmA", "你好")
    started = time.time()
    runtime.worker().parts.kfsync.pull(kfid, "", notice_at=started)
    assert store.kf_found_at(kfid) >= started - 1
    # a burst: notices sent before the pull that took their messages bring nothing, and that is normal
    _stall(runtime, sandbox, 5, started - 1)
    assert store.kf_stalled() == {} and metrics.readiness(r, runtime.settings)[1]["kf_pulls"] == "ok"
    # the cursor is past what WeCom holds (the sandbox restarted without its state): notices bring nothing
    store.save_cursor(kfid, "sbx-49")
    with caplog.at_level(logging.WARNING, logger="bot.queue.kfsync"):
        _stall(runtime, sandbox, EMPTY_NOTICES_WARN - 1, time.time() + 1)
        assert store.kf_stalled() == {} and not caplog.records
        _stall(runtime, sandbox, 2, time.time() + 1)
    assert "notices in a row pulled nothing new" in caplog.text and "sbx-49" in caplog.text
    stalled = store.kf_stalled()
    assert stalled[kfid]["empty_notices"] == EMPTY_NOTICES_WARN + 1 and stalled[kfid]["cursor"] == "sbx-49"
    ok, body = metrics.readiness(r, runtime.settings)
    assert body["kf_pulls"] == {"stalled": stalled}  # shown; readiness is still the workers' and scheduler's
    assert body["status"] == ("ok" if ok else "unavailable") and "none alive" in body["workers"]
    (what, fix), = stall_reports(store)  # what `doctor` fails on
    assert what.startswith(f"kf {kfid}: the last {EMPTY_NOTICES_WARN + 1} kf_msg_or_event") and "DEL" in fix
    families = {f.name: f for f in metrics.BotCollector(runtime.settings, r, None, lambda: None).collect()}
    assert [(s.labels, s.value) for s in families["wecom_kf_pull_stalls"].samples
            if s.name.endswith("_total")] == [({"open_kfid": kfid}, 1.0)]  # one stall, however long
    assert families["wecom_kf_accounts_stalled"].samples[0].value == 1
    # a pull that brings messages again ends it
    store.save_cursor(kfid, "")
    sandbox.add_customer_text("wmA", "还在吗")
    runtime.worker().parts.kfsync.pull(kfid, "", notice_at=time.time())
    assert store.kf_stalled() == {} and metrics.readiness(r, runtime.settings)[1]["kf_pulls"] == "ok"
    assert stall_reports(store) == [] and store.kf_stalls() == {kfid: 1}


# --- `serve` restarted with var/ kept ---------------------------------------------------------------

def _serve(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--port", "0", "--sandbox-port", "0"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_line(proc, r"health: http://127\.0\.0\.1:\d+/healthz")
    except AssertionError:
        stop(proc)
        raise
    return proc, json.loads((tmp_path / "var" / "sandbox.json").read_text())


def _say(info: dict[str, str], customer: str, text: str) -> None:
    """What `wecom-bot chat` does: the customer's text into the sandbox, then an encrypted kf callback."""
    said = requests.post(info["sandbox_url"] + "/sandbox/customer/text",
                         json={"external_userid": customer, "text": text}, timeout=5).json()
    crypto = CallbackCrypto(info["token"], info["aes_key"], info["corp_id"])
    query, body = crypto.encrypt(kf_notice_xml(info["corp_id"], said["token"], said["open_kfid"]))
    resp = requests.post(info["service_url"] + info["callback_path"], params=query, data=body.encode(), timeout=10)
    assert resp.status_code == 200


def _answers(info: dict[str, str], customer: str) -> list[dict]:
    items = requests.get(info["sandbox_url"] + "/sandbox/outbox", timeout=5).json()["items"]
    return [i for i in items if i.get("kind") == "customer" and i.get("touser") == customer]


def _wait_answers(info: dict[str, str], customer: str, n: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = _answers(info, customer)
        if len(got) >= n:
            time.sleep(1.0)  # the rest of that answer, and anything sent twice
            return _answers(info, customer)
        time.sleep(0.1)
    raise AssertionError(f"{customer}: {len(_answers(info, customer))} answers, not {n}")


def test_serve_restarted_with_var_kept_answers_the_next_message_and_not_the_first_twice(tmp_path):
    env = sandbox_config(tmp_path)
    proc, info = _serve(tmp_path, env)
    try:
        _say(info, "wmRestart01", "有优惠吗")
        first = _wait_answers(info, "wmRestart01", 1)
    finally:
        stop(proc)
    assert proc.returncode == 0 and (tmp_path / "var" / "sandbox-state.json").exists()

    proc, info = _serve(tmp_path, env)
    try:
        assert _answers(info, "wmRestart01") == first  # the outbox was kept too (chat's `since` stays valid)
        _say(info, "wmRestart01", "这个多少钱")
        answers = _wait_answers(info, "wmRestart01", len(first) + 1)
        assert answers[:len(first)] == first  # the first message was not answered again
        later = answers[len(first):]
        assert later and not {a["msgid"] for a in later} & {a["msgid"] for a in first}
        assert requests.get(info["service_url"] + "/healthz", timeout=5).status_code == 200
    finally:
        stop(proc)
