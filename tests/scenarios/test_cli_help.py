"""A CLI that helps: every command explains itself, tables have headers, a stopped service is one line,
and `chat` prints what the bot and the staff get when it arrives."""

from __future__ import annotations

import argparse
import io
import json
import os
import threading
import time
from datetime import datetime, timedelta

import pytest

from bot.config import SANDBOX_OPEN_KFID
from bot.ops import chat as chat_mod
from bot.ops.cli import build_parser, walk
from bot.records.handoffs import Handoffs
from tests.scenarios import test_handoff_e2e as e2e
from tests.support import cli, drain

clock, desk_env = e2e.clock, e2e.desk_env  # Monday 10:00 with the consultants on duty: the card goes out now

COMMANDS = [path for path, _ in walk(build_parser())]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c or "wecom-bot")
def test_every_command_has_a_help_with_a_description(command):
    out = cli(*command.split(), "--help")
    assert out.returncode == 0, out.stderr
    usage, _, rest = out.stdout.partition("\n\n")
    assert usage.startswith("usage: wecom-bot")
    description = rest.split("\n\n")[0].strip()
    assert description and not description.startswith(("positional arguments", "options")), out.stdout
    assert "examples:\n  uv run wecom-bot " in out.stdout


def test_every_option_has_a_help_and_shows_its_default():
    for command, parser in walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue  # each of its commands is checked itself
            assert action.help, f"wecom-bot {command}: {action.dest} has no help"
    out = cli("serve", "--help")
    assert "(default: 8000)" in out.stdout and "(default: 127.0.0.1)" in out.stdout


def test_chat_without_the_service_is_one_line(tmp_path):
    missing = cli("chat", "--info", str(tmp_path / "sandbox.json"))
    closed = tmp_path / "closed.json"
    closed.write_text(json.dumps({"service_url": "http://127.0.0.1:9", "sandbox_url": "http://127.0.0.1:9",
                                  "callback_path": "/wecom/callback", "corp_id": "x", "token": "t",
                                  "aes_key": "a" * 43, "open_kfid": SANDBOX_OPEN_KFID}))
    stale = cli("chat", "--info", str(closed), stdin="你好\n")
    for out in (missing, stale):
        assert out.returncode == 1
        lines = (out.stdout + out.stderr).strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
        assert lines[0].startswith("the service is not running: start it with `uv run wecom-bot serve`")


def test_handoffs_list_has_a_header_and_stats_reads_as_a_table(r, redis_url):
    book = Handoffs(r)
    now = datetime.now(book.tz)
    book.open("wmHeader01", SANDBOX_OPEN_KFID, "price", ["多少钱"], "这个多少钱", "li.consultant", 600,
              now - timedelta(minutes=5), "msg-header-1")
    out = cli("handoffs", "list", env={"REDIS_URL": redis_url})
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split()[:5] == ["no", "id", "state", "intent", "customer"] and "waited" in header
    assert "wmHeader01" in row and "5 min" in row and "等待中" in row and "询价" in row and row.startswith("#")
    rows = cli("handoffs", "list", "--json", env={"REDIS_URL": redis_url}).stdout.splitlines()
    assert [json.loads(line)["customer"] for line in rows] == ["wmHeader01"]
    stats = cli("handoffs", "stats", env={"REDIS_URL": redis_url})
    assert stats.returncode == 0 and "count" in stats.stdout.splitlines()[1]
    assert stats.stdout.splitlines()[2].split()[:3] == ["all", "1", "1"]
    numbers = json.loads(cli("handoffs", "stats", "--json", env={"REDIS_URL": redis_url}).stdout)
    assert numbers["total"]["count"] == 1 and numbers["total"]["open"] == 1


def test_redis_down_is_one_line_saying_what_to_start():
    out = cli("handoffs", "list", env={"REDIS_URL": "redis://127.0.0.1:9/0"})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "start that Redis" in out.stderr


def _info(sandbox, service, runtime) -> dict:
    s = runtime.settings
    return {"service_url": service.url, "sandbox_url": sandbox.url, "callback_path": s.callback_path,
            "corp_id": s.corp_id, "token": s.token, "aes_key": s.aes_key, "open_kfid": SANDBOX_OPEN_KFID}


def _until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_chat_reader_prints_what_arrives_later_with_the_staff_card(desk_env, sandbox, service, runtime):
    out = io.StringIO()
    chat = chat_mod.ChatSession(_info(sandbox, service, runtime), "wmChatReader01", out, wait=0.2)
    reader = chat_mod.Reader(chat, interval=0.05)
    reader.start()
    try:
        chat.say("这个多少钱")
        time.sleep(0.3)
        assert "机器人 -> 客户" not in out.getvalue()  # nothing processed yet: no worker ran
        drain(runtime.worker())  # the answer comes later, with no line typed meanwhile
        assert _until(lambda: "按钮：[我来接待] [转给同事]" in out.getvalue()), out.getvalue()
        text = out.getvalue()
        assert "  机器人 -> 客户: " in text
        card = next(line for line in text.splitlines() if "[卡片]" in line)
        assert card.startswith("  -> 员工 ") and "客户说：这个多少钱" in text
        assert "客户：" in text and "原因：" in text  # the card's key/value rows
        chat.command("/reply li.consultant 您好，我来为您报价")
        chat.command("/end")
        lines = out.getvalue().splitlines()
        assert "  ✓ li.consultant 在微信客服里回复了客户：您好，我来为您报价" in lines
        assert any(line.startswith("  ✓ 会话已结束") for line in lines)
    finally:
        reader.stop()


def test_a_chat_left_open_when_the_service_stops_does_not_crash(sandbox, service, runtime, tmp_path):
    info = tmp_path / "sandbox.json"
    info.write_text(json.dumps(_info(sandbox, service, runtime)))
    read_fd, write_fd = os.pipe()
    inp, typing = os.fdopen(read_fd, "r"), os.fdopen(write_fd, "w")
    out, err = io.StringIO(), io.StringIO()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(
        chat_mod.run_chat(str(info), "wmChatStops01", inp, out, wait=0.2, err=err)))
    t.start()
    try:
        typing.write("你好\n")
        typing.flush()
        assert _until(lambda: "(no reply)" in out.getvalue() or "机器人" in out.getvalue())
        service.stop()
        sandbox.stop()
        assert _until(lambda: chat_mod.SERVICE_DOWN in out.getvalue())
        typing.write("还在吗\n")
        typing.flush()
        assert _until(lambda: "(not sent: " in out.getvalue())
    finally:
        typing.close()
        t.join(timeout=10)
    assert result == [0] and not err.getvalue()
    assert out.getvalue().count(f"  ({chat_mod.SERVICE_DOWN})") == 1
    assert "Traceback" not in out.getvalue()


def test_chat_tells_a_slow_service_from_a_stopped_one():
    import requests

    assert chat_mod._not_sent(requests.ReadTimeout()) == chat_mod.SERVICE_SLOW
    assert chat_mod._not_sent(requests.ConnectionError()) == chat_mod.SERVICE_DOWN
