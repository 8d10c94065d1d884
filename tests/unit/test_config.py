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
                 "content/coupons.yaml", "content/consultants.yaml", "content/channels.yaml", "sop/journeys"):
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


def test_a_bad_aes_key_names_the_character_in_every_mode(tmp_path: Path) -> None:
    cfg = ROOT / "config.yaml"
    bang = "a" * 42 + "!"
    with pytest.raises(ConfigError, match=r"WECOM_AES_KEY \(environment\): .*'!' at position 43"):
        load_settings(cfg, {"WECOM_SECRET": "s", "WECOM_CORP_ID": "ww1", "WECOM_TOKEN": "t1", "WECOM_AES_KEY": bang,
                            "WECOM_AGENT_ID": "1"})
    with pytest.raises(ConfigError, match="sandbox mode"):  # no WECOM_SECRET: still checked, never ignored
        load_settings(cfg, {"WECOM_AES_KEY": "tooshort"})


@pytest.mark.parametrize(("text", "line", "words"), [
    ('a: "unclosed\nb: 1\n', 1, "not closed"),
    ("a:\n  b: 1\n c: 2\n", 3, "indentation"),
    ("a: 1\nb c\nd: 2\n", 2, "not `key: value`"),
    ("a: b: c\n", 1, "put the value in quotes"),
    ("a:\n\t- 1\n", 2, "indent with spaces"),
])
def test_yaml_syntax_errors_give_the_line_of_the_mistake_in_plain_words(tmp_path: Path, text: str, line: int,
                                                                       words: str) -> None:
    from bot import yamlfile

    path = tmp_path / "f.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        yamlfile.load(path)
    assert str(err.value).startswith(f"{path}:{line}: invalid YAML: ") and words in str(err.value)


def test_an_unquoted_impossible_time_is_explained(tmp_path: Path) -> None:
    from sop import journeys

    src = (Path(__file__).parents[2] / "sop" / "journeys" / "price_followup.yaml").read_text(encoding="utf-8")
    broken = src.replace('window: "10:00-20:00"', "at: 25:00", 1)
    assert broken != src
    (tmp_path / "j.yaml").write_text(broken, encoding="utf-8")
    found, errors = journeys.load_dir(tmp_path)
    assert any("25:00 is not a time of day" in e and "quotes" in e and "j.yaml:" in e for e in map(str, errors))
