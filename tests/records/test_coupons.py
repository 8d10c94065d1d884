"""Coupon campaigns and the coupon book, against a real Redis."""

from __future__ import annotations

import re
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.content.campaigns import DEFAULT_EXHAUSTED_REPLY, Campaign, describe_value, load_campaigns
from bot.records.coupons import CODE_ALPHABET, CouponBook
from bot.yamlfile import ConfigError

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2024, 12, 1, 10, 0, tzinfo=SH)
ROOT = Path(__file__).resolve().parents[2]


def camp(name: str = "c1", **kw) -> Campaign:
    """A campaign with test defaults."""
    base = dict(name=name, title="测试券", shape="amount", amount=10, budget=100, valid_for=timedelta(hours=24))
    return Campaign(**(base | kw))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "coupons.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# -- config ---------------------------------------------------------------------------------------


def test_shipped_file_loads() -> None:
    campaigns = load_campaigns(ROOT / "content" / "coupons.yaml")
    by_name = {c.name: c for c in campaigns}
    assert [c.eligible for c in campaigns] == ["new", "tag", "everyone", "everyone"]
    assert [c.in_chat for c in campaigns] == [True, True, True, False]
    assert by_name["new-customer-10"].valid_for == timedelta(hours=24)
    assert describe_value(by_name["spend199-save30"]) == "满199减30"
    assert describe_value(by_name["asked-discount-85"]) == "8.5折"


VALID = """\
campaigns:
  - name: gift
    title: 赠品券
    shape: gift
    gift: 保温杯
    budget: 5
    valid_days: 90
    ends_at: 2024-12-31 23:59
"""


def test_ends_at_naive_is_local_and_earlier_end_wins(tmp_path: Path) -> None:
    (c,) = load_campaigns(write(tmp_path, VALID))
    assert c.ends_at == datetime(2024, 12, 31, 23, 59, tzinfo=SH)
    assert c.expiry_for(NOW) == c.ends_at
    assert c.expiry_for(datetime(2024, 12, 1, tzinfo=SH) - timedelta(days=89)) < c.ends_at


@pytest.mark.parametrize(("bad", "line", "key", "words"), [
    ("    budget: many\n", 6, "campaigns[0].budget", "whole number"),
    ("    colour: red\n", 9, "campaigns[0].colour", "unknown key"),
    ("    amount: 3\n", 9, "campaigns[0].amount", "not used by shape 'gift'"),
    ("    eligible: vip\n", 9, "campaigns[0].eligible", "one of"),
    ("    eligible: tag\n", 2, "campaigns[0]", "'tags'"),
    ("    reply: '券码 {coupon}'\n", 9, "campaigns[0].reply", "unknown placeholder"),
    ("    reply: '欢迎'\n", 9, "campaigns[0].reply", "{code}"),
    ("    valid_hours: 24\n", 7, "campaigns[0].valid_days", "not both"),
    ("    on_exhausted: cry\n", 9, "campaigns[0].on_exhausted", "reply, handoff"),
])
def test_validation_names_file_line_key(tmp_path: Path, bad: str, line: int, key: str, words: str) -> None:
    text = VALID.replace("    budget: 5\n", bad) if bad.startswith("    budget") else VALID + bad
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_campaigns(path)
    assert str(info.value).startswith(f"{path}:{line}: {key}: "), str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize(("entry", "key", "words"), [
    ("shape: spend_save\n    threshold: 100\n    amount: 100", "amount", "less than threshold"),
    ("shape: spend_save\n    amount: 10", "campaigns[0]", "missing key 'threshold'"),
    ("shape: percent\n    pay_percent: 8", "pay_percent", "85 means 8.5折"),
    ("shape: bogo\n    amount: 1", "shape", "one of"),
    ("shape: amount\n    amount: -5", "amount", "positive"),
])
def test_bad_shapes(tmp_path: Path, entry: str, key: str, words: str) -> None:
    path = write(tmp_path, f"campaigns:\n  - name: x\n    title: 券\n    {entry}\n    budget: 5\n    valid_hours: 24\n")
    with pytest.raises(ConfigError, match=re.escape(words)) as info:
        load_campaigns(path)
    assert f"{path}:" in str(info.value) and key in str(info.value)


def test_missing_field_duplicate_name_and_validity(tmp_path: Path) -> None:
    dup = VALID + VALID.split("\n", 1)[1]
    with pytest.raises(ConfigError, match=r":9: campaigns\[1\]\.name: duplicate campaign name 'gift' \(first on line 2\)"):
        load_campaigns(write(tmp_path, dup))
    with pytest.raises(ConfigError, match=r":2: campaigns\[0\]: missing key 'title'"):
        load_campaigns(write(tmp_path, VALID.replace("    title: 赠品券\n", "")))
    no_validity = VALID.replace("    valid_days: 90\n", "").replace("    ends_at: 2024-12-31 23:59\n", "")
    with pytest.raises(ConfigError, match="missing key 'valid_hours', 'valid_days' or 'ends_at'"):
        load_campaigns(write(tmp_path, no_validity))
    with pytest.raises(ConfigError, match=r":8: campaigns\[0\]\.ends_at: give a time too"):
        load_campaigns(write(tmp_path, VALID.replace("2024-12-31 23:59", "2024-12-31")))
    with pytest.raises(ConfigError, match=r":1: campaign: unknown key"):
        load_campaigns(write(tmp_path, "campaign: []\n"))
    with pytest.raises(ConfigError, match=r":2: campaigns\[0\]\.name: must be"):
        load_campaigns(write(tmp_path, VALID.replace("name: gift", "name: Gift Pack")))


# -- rendering ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "value"), [
    (dict(shape="amount", amount=10), "无门槛减10元"),
    (dict(shape="amount", amount=9.9), "无门槛减9.9元"),
    (dict(shape="spend_save", threshold=199, amount=30), "满199减30"),
    (dict(shape="percent", pay_percent=85, amount=None), "8.5折"),
    (dict(shape="percent", pay_percent=80, amount=None), "8折"),
    (dict(shape="percent", pay_percent=80, threshold=100, amount=None), "满100享8折"),
    (dict(shape="free_shipping", amount=None), "免运费"),
    (dict(shape="free_shipping", threshold=599, amount=None), "满599免运费"),
    (dict(shape="gift", gift="保温杯", amount=None), "赠品：保温杯"),
])
def test_shapes_render(r, kw: dict, value: str) -> None:
    book = CouponBook(r, [camp(**kw)], SH)
    assert describe_value(book.campaigns[0]) == value
    result = book.issue("u1", "m1", NOW)
    text = book.reply_text(result)
    assert value in text and result.coupon.code in text
    assert "12月2日 10:00 前有效" in text


def test_reply_uses_template_and_local_time(r) -> None:
    book = CouponBook(r, [camp(reply="{title}|{value}|{code}|{expires}")], SH)
    result = book.issue("u1", "m1", datetime(2024, 12, 1, 12, 0, tzinfo=UTC))
    assert book.reply_text(result) == f"测试券|无门槛减10元|{result.coupon.code}|12月2日 20:00"
    assert result.coupon.issued_at.tzinfo is not None and result.coupon.expires_at.utcoffset() == timedelta(hours=8)


# -- issuing --------------------------------------------------------------------------------------


def test_issue_then_ask_again_same_code(r) -> None:
    book = CouponBook(r, [camp()], SH)
    first = book.issue("u1", "m1", NOW)
    assert first.status == "issued" and first.campaign.name == "c1"
    assert re.fullmatch(f"[{CODE_ALPHABET}]{{8}}", first.coupon.code)
    again = book.issue("u1", "m2", NOW + timedelta(hours=1))
    assert again.status == "existing" and again.coupon.code == first.coupon.code
    assert book.reply_text(again).startswith("您已经领过") and first.coupon.code in book.reply_text(again)
    assert "欢迎" not in book.reply_text(again)
    assert book.stats(NOW)[0]["issued"] == 1
    assert [c.code for c in book.coupons_of("u1")] == [first.coupon.code]


def test_replayed_msgid_same_result_no_extra_issue(r) -> None:
    book = CouponBook(r, [camp(budget=1)], SH)
    first = book.issue("u1", "m1", NOW)
    assert book.issue("u1", "m1", NOW) == first
    assert book.issue("u1", "m1", NOW + timedelta(minutes=5)).status == "issued"
    assert book.issue("u2", "m2", NOW).status == "exhausted"
    assert book.issue("u2", "m2", NOW).status == "exhausted"
    assert book.stats(NOW)[0]["issued"] == 1


def test_concurrent_replays_of_one_message(r) -> None:
    book = CouponBook(r, [camp()], SH)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: book.issue("u1", "m1", NOW), range(40)))
    assert {(x.status, x.coupon.code) for x in results} == {("issued", results[0].coupon.code)}
    assert book.stats(NOW)[0]["issued"] == 1


def test_budget_under_concurrency(r) -> None:
    book = CouponBook(r, [camp(budget=100)], SH)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda i: book.issue(f"u{i}", f"m{i}", NOW), range(300)))
    issued = [x for x in results if x.status == "issued"]
    assert len(issued) == 100
    assert sum(x.status == "exhausted" for x in results) == 200
    assert len({x.coupon.code for x in issued}) == 100
    assert len({x.coupon.customer for x in issued}) == 100
    assert book.stats(NOW) == [dict(campaign="c1", budget=100, issued=100, remaining=0, redeemed=0, expired=0)]
    assert book.reply_text(results[[x.status for x in results].index("exhausted")]) == DEFAULT_EXHAUSTED_REPLY


def test_same_customer_from_many_threads_gets_one(r) -> None:
    book = CouponBook(r, [camp(), camp("c2")], SH)
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: book.issue("u1", f"m{i}", NOW), range(20)))
    assert sorted(x.status for x in results) == ["existing"] * 19 + ["issued"]
    assert len({x.coupon.code for x in results}) == 1
    assert len(book.coupons_of("u1")) == 1


def test_order_eligibility_and_fallthrough(r) -> None:
    campaigns = [camp("new", eligible="new", budget=1), camp("vip", eligible="tag", tags=frozenset({"要优惠"})),
                 camp("all", on_exhausted="handoff", exhausted_reply="没了")]
    book = CouponBook(r, campaigns, SH)
    assert book.issue("n1", "m1", NOW, is_new=True).campaign.name == "new"
    assert book.issue("n2", "m2", NOW, is_new=True, tags=["要优惠"]).campaign.name == "vip"
    assert book.issue("n3", "m3", NOW, tags=["其他"]).campaign.name == "all"
    only_new = CouponBook(r, campaigns[:1], SH)
    assert only_new.issue("old", "m4", NOW).status == "ineligible"
    assert only_new.reply_text(only_new.issue("old", "m4", NOW)).startswith("暂时没有")
    assert only_new.issue("n4", "m5", NOW, is_new=True).status == "exhausted"


def test_exhausted_handoff_and_text(r) -> None:
    book = CouponBook(r, [camp(budget=1, on_exhausted="handoff", exhausted_reply="没了")], SH)
    book.issue("u1", "m1", NOW)
    result = book.issue("u2", "m2", NOW)
    assert result.status == "exhausted" and result.handoff and book.reply_text(result) == "没了"


def test_held_coupon_of_later_campaign_is_returned(r) -> None:
    book = CouponBook(r, [camp("vip", eligible="tag", tags=frozenset({"要优惠"})), camp("all")], SH)
    held = book.issue("u1", "m1", NOW).coupon
    assert held.campaign == "all"
    again = book.issue("u1", "m2", NOW, tags=["要优惠"])
    assert (again.status, again.coupon.code) == ("existing", held.code)


def test_expired_coupon_counts_and_limit_holds(r) -> None:
    book = CouponBook(r, [camp(per_customer=1)], SH)
    coupon = book.issue("u1", "m1", NOW).coupon
    later = NOW + timedelta(hours=25)
    assert book.get(coupon.code, now=later).status == "expired"
    assert book.stats(later)[0] == dict(campaign="c1", budget=100, issued=1, remaining=99, redeemed=0, expired=1)
    again = book.issue("u1", "m2", later)
    assert again.status == "ineligible" and again.campaign.name == "c1"
    assert "限领1张" in book.reply_text(again)
    assert book.redeem(coupon.code, later).status == "expired"


def test_per_customer_two_issues_second_after_expiry(r) -> None:
    book = CouponBook(r, [camp(per_customer=2), camp("next")], SH)
    first = book.issue("u1", "m1", NOW).coupon
    second = book.issue("u1", "m2", NOW + timedelta(hours=25))
    assert second.status == "issued" and second.campaign.name == "c1" and second.coupon.code != first.code
    third = book.issue("u1", "m3", NOW + timedelta(hours=50))
    assert third.campaign.name == "next"


def test_campaign_past_ends_at_issues_nothing(r) -> None:
    book = CouponBook(r, [camp(valid_for=None, ends_at=NOW + timedelta(hours=2))], SH)
    assert book.issue("u1", "m1", NOW).coupon.expires_at == NOW + timedelta(hours=2)
    assert book.issue("u2", "m2", NOW + timedelta(hours=2)).status == "ineligible"


# -- redeeming and reading ------------------------------------------------------------------------


def test_redeem_idempotent(r) -> None:
    book = CouponBook(r, [camp()], SH)
    code = book.issue("u1", "m1", NOW).coupon.code
    first = book.redeem(code.lower(), NOW + timedelta(hours=1), order_id="o1")
    assert first.status == "redeemed" and first.redeemed_at == NOW + timedelta(hours=1)
    second = book.redeem(code, NOW + timedelta(hours=2), order_id="o2")
    assert second.status == "already" and second.redeemed_at == NOW + timedelta(hours=1)
    assert second.coupon.order_id == "o1" and second.coupon.status == "redeemed"
    assert book.redeem("ZZZZZZZZ", NOW).status == "unknown"
    assert book.stats(NOW + timedelta(days=9))[0]["redeemed"] == 1
    assert book.stats(NOW + timedelta(days=9))[0]["expired"] == 0
    # After redeeming, asking again issues nothing more (per_customer 1).
    assert book.issue("u1", "m2", NOW + timedelta(hours=3)).status == "ineligible"


def test_expiring_between_and_coupons_of(r) -> None:
    book = CouponBook(r, [camp("day", valid_for=timedelta(days=1)), camp("week", valid_for=timedelta(days=7))], SH)
    a = book.issue("u1", "m1", NOW).coupon  # day
    book.redeem(book.issue("u2", "m2", NOW).coupon.code, NOW)  # redeemed: never reminded
    b = CouponBook(r, [camp("week", valid_for=timedelta(days=7))], SH).issue("u3", "m3", NOW).coupon
    window = book.expiring_between(NOW + timedelta(hours=20), NOW + timedelta(days=8))
    assert [c.code for c in window] == [a.code, b.code]
    assert book.expiring_between(NOW + timedelta(days=2), NOW + timedelta(days=6)) == []
    assert [c.code for c in book.coupons_of("u1", now=NOW)] == [a.code]
    assert book.get(a.code).customer == "u1" and book.get("nope") is None


def test_naive_datetimes_rejected(r) -> None:
    book = CouponBook(r, [camp()], SH)
    with pytest.raises(ValueError, match="timezone-aware"):
        book.issue("u1", "m1", datetime(2024, 12, 1, 10, 0))


def test_msgid_is_scoped_to_customer(r) -> None:
    book = CouponBook(r, [camp()], SH)
    a, b = book.issue("u1", "same", NOW), book.issue("u2", "same", NOW)
    assert a.status == b.status == "issued" and a.coupon.code != b.coupon.code


def test_a_journey_names_its_campaign_and_chat_never_offers_journey_only_ones(r):
    from bot.content.campaigns import load_campaigns
    from bot.records.coupons import CouponBook

    book = CouponBook(r, load_campaigns(ROOT / "content" / "coupons.yaml"))
    now = datetime(2026, 12, 1, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    chat = book.issue("wmBday", "m1", now, is_new=False)
    assert chat.campaign is None or chat.campaign.name != "birthday-80"
    bday = book.issue("wmBday", "touch-1", now, campaign="birthday-80")
    assert bday.status == "issued" and bday.coupon.campaign == "birthday-80"
