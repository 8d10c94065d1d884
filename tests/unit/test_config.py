"""config.yaml's `sop:` section: the rules over all journeys, validated like the rest of the file."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.content import Content
from bot.runtime import Runtime
from bot.yamlfile import ConfigError
from sop.plan import Rules

ROOT = Path(__file__).resolve().parents[2]
SANDBOX_ENV: dict[str, str] = {}  # no WECOM_SECRET: sandbox credentials, nothing else needed


def config_with(tmp_path: Path, sop_section: str) -> Path:
    """The repo's config.yaml with its `sop:` section replaced (content paths made absolute)."""
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    start = text.index("\nsop:")
    end = text.index("\ncorp_tags:")
    text = text[:start] + "\n" + sop_section.strip("\n") + "\n" + text[end:]
    for name in ("intents/keywords.yaml", "intents/faq.yaml", "intents/examples", "intents/dialect.yaml",
                 "content/coupons.yaml", "content/consultants.yaml", "sop/journeys"):
        text = text.replace(f": {name}", f": {ROOT / name}")
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_section_states_the_defaults() -> None:
    rules = load_settings(ROOT / "config.yaml", SANDBOX_ENV).sop_rules
    assert rules == Rules()
    assert (rules.quiet_start, rules.quiet_end, rules.daily_cap, rules.ignored_limit) == (time(22), time(8), 3, 3)


def test_the_section_can_be_left_out(tmp_path: Path) -> None:
    assert load_settings(config_with(tmp_path, ""), SANDBOX_ENV).sop_rules == Rules()


def test_configured_rules_reach_the_engine(tmp_path: Path, r) -> None:
    path = config_with(tmp_path, 'sop:\n  quiet_hours: "21:30-09:00"\n  daily_cap: 1\n  ignored_limit: 5\n')
    settings = load_settings(path, SANDBOX_ENV)
    rules = settings.sop_rules
    assert (rules.quiet_start, rules.quiet_end, rules.daily_cap, rules.ignored_limit) == (time(21, 30), time(9), 1, 5)
    engine = Runtime(settings, r, content=Content(settings)).engine()
    assert engine is not None and engine.rules == rules


@pytest.mark.parametrize("section,key,message", [
    ('sop:\n  quiet_hours: "22:00"\n', "sop.quiet_hours", "22:00-08:00"),
    ('sop:\n  quiet_hours: "25:00-08:00"\n', "sop.quiet_hours", "22:00-08:00"),
    ("sop:\n  daily_cap: 0\n", "sop.daily_cap", ">= 1"),
    ("sop:\n  ignored_limit: 2.5\n", "sop.ignored_limit", "whole number"),
    ("sop:\n  quiet: true\n", "sop.quiet", "unknown key"),
])
def test_bad_rules_name_file_line_and_key(tmp_path: Path, section: str, key: str, message: str) -> None:
    path = config_with(tmp_path, section)
    with pytest.raises(ConfigError) as exc:
        load_settings(path, SANDBOX_ENV)
    text = str(exc.value)
    assert text.startswith(f"{path}:") and f": {key}: " in text and message in text
