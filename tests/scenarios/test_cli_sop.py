"""`wecom-bot sop ...`, `purchase` and `birthday` subcommands, parsed as bot/ops/cli.py would after register()."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from bot.ops import cli_sop
from bot.records.customers import Customers
from sop import journeys
from sop.engine import HIST
from tests.support import run_command, sop_due

ROOT = Path(__file__).resolve().parents[2]
PLAN_KEYS = {"journey", "step", "at", "due", "channel", "decision", "reason"}


def run(argv: list[str]) -> int:
    """Parse and run like `wecom-bot` does."""
    return run_command(argv)


@pytest.fixture()
def env(monkeypatch, redis_url, r):
    """The CLI's environment: the repo's config.yaml and the test Redis; no WeCom secret."""
    monkeypatch.setenv("WECOM_BOT_CONFIG", str(ROOT / "config.yaml"))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("WECOM_SECRET", raising=False)
    return r


def test_validate_shipped_journeys_ok(capsys):
    assert run(["sop", "validate"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_validate_broken_copy_names_file_and_line(tmp_path, capsys):
    copy = tmp_path / "journeys"
    shutil.copytree(journeys.DEFAULT_DIR, copy)
    path = copy / "purchase_guide.yaml"
    lines = path.read_text().splitlines()
    lineno = next(i for i, line in enumerate(lines, 1) if "wait: 3d" in line)
    lines[lineno - 1] = lines[lineno - 1].replace("3d", "3 fortnights")
    path.write_text("\n".join(lines) + "\n")
    assert run(["sop", "validate", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"purchase_guide.yaml:{lineno}:" in out and "wait" in out


def test_plan_json_keys_for_existing_and_new_customer(env, capsys):
    Customers(env).saw_message("c-plan", time.time() - 86400, open_kfid="wk1")
    for who, start in (("c-plan", []), ("c-nobody", ["--start", "2024-12-02T09:00:00+08:00"])):
        assert run(["sop", "plan", "--customer", who, *start, "--days", "14", "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert rows and all(set(row) == PLAN_KEYS for row in rows)
        assert {row["decision"] for row in rows} <= {"send", "defer", "skip", "remind"}
        assert {row["channel"] for row in rows} <= {"kf", "mass_task", "staff", "welcome"}


def test_plan_text_for_a_segment(env, capsys):
    Customers(env).saw_message("c-seg", time.time(), open_kfid="wk1")
    assert run(["sop", "plan", "--segment", "new", "--start", "2024-12-02T09:00:00+08:00", "--days", "3"]) == 0
    assert capsys.readouterr().out.startswith("1 customers")


def test_reload_sets_key_or_refuses(env, tmp_path, capsys):
    assert run(["sop", "reload"]) == 0
    assert float(env.get(cli_sop.RELOAD_KEY)) > 0
    env.delete(cli_sop.RELOAD_KEY)
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\ntrigger: nope\nsteps: []\n")
    with pytest.raises(SystemExit) as exc:
        run(["sop", "reload", "--path", str(bad)])
    assert exc.value.code == 1 and env.get(cli_sop.RELOAD_KEY) is None
    assert "bad.yaml:" in capsys.readouterr().err


def test_purchase_and_birthday_commands(env, capsys):
    Customers(env).saw_message("c-cli", time.time(), open_kfid="wk1")
    argv = ["purchase", "c-cli", "O-9", "--amount", "99", "--at", "2024-12-02T15:00:00+08:00"]
    assert run(argv) == 0 and run(argv) == 0
    out = capsys.readouterr().out
    assert "recorded, 1 journey(s) enrolled" in out and "already recorded" in out
    assert len(sop_due(env)) == 1 and env.hexists(HIST % "c-cli", "purchased")
    assert run(["birthday", "c-cli", "07-15"]) == 0
    assert env.sismember("wecom:sop:bday:07-15", "c-cli")


@pytest.fixture()
def elsewhere(env, tmp_path, monkeypatch):
    """A config.yaml whose content.journeys is not the package's sop/journeys: one journey of its own."""
    journeys_dir = tmp_path / "my-journeys"
    journeys_dir.mkdir()
    guide = (journeys.DEFAULT_DIR / "purchase_guide.yaml").read_text(encoding="utf-8")
    (journeys_dir / "guide.yaml").write_text(guide.replace("id: purchase_guide", "id: my_guide"), encoding="utf-8")
    config = (ROOT / "config.yaml").read_text(encoding="utf-8")
    for name in ("intents/keywords.yaml", "intents/faq.yaml", "intents/examples", "intents/dialect.yaml",
                 "content/coupons.yaml", "content/consultants.yaml"):
        config = config.replace(f": {name}", f": {ROOT / name}")
    config = config.replace("journeys: sop/journeys", f"journeys: {journeys_dir}")
    # the shipped channels enrol journeys this config does not have
    config = "".join(line for line in config.splitlines(keepends=True) if not line.lstrip().startswith("channels:"))
    (tmp_path / "config.yaml").write_text(config, encoding="utf-8")
    monkeypatch.setenv("WECOM_BOT_CONFIG", str(tmp_path / "config.yaml"))
    return journeys_dir


def test_sop_commands_use_the_configured_journeys(env, elsewhere, capsys):
    assert run(["sop", "validate"]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 journeys")
    assert run(["sop", "plan", "--customer", "c-new", "--start", "2024-12-02T09:00:00+08:00", "--json"]) == 0
    assert {json.loads(line)["journey"] for line in capsys.readouterr().out.splitlines()} <= {"my_guide"}
    assert run(["sop", "reload"]) == 0
    assert str(elsewhere) in capsys.readouterr().out
    Customers(env).saw_message("c-cfg", time.time(), open_kfid="wk1")
    assert run(["purchase", "c-cfg", "O-cfg", "--at", "2024-12-02T15:00:00+08:00"]) == 0
    assert "1 journey(s) enrolled" in capsys.readouterr().out
    assert [m.split("|")[0] for m in sop_due(env)] == ["my_guide"]


def test_reload_refuses_a_path_the_scheduler_does_not_load(env, elsewhere, capsys):
    with pytest.raises(SystemExit) as exc:
        run(["sop", "reload", "--path", str(journeys.DEFAULT_DIR)])
    assert exc.value.code == 1 and env.get(cli_sop.RELOAD_KEY) is None
    assert "content.journeys" in capsys.readouterr().err
