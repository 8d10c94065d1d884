"""Intent detection: normalisation, classification tables, quality bars, YAML errors, CLI output."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bot.yamlfile import ConfigError
from intents.classify import Classifier, Intent, load_classifier
from intents.cli import classify_lines, eval_file
from intents.config import load_faq, load_keywords
from intents.evaluate import evaluate, read_examples
from intents.normalize import normalize

DEV = Path(__file__).resolve().parents[1] / "data" / "dev-utterances.tsv"  # a copy of shared/dev-utterances.tsv
EXTRA = Path(__file__).resolve().parents[1] / "data" / "extra-utterances.tsv"


@pytest.fixture(scope="module")
def clf() -> Classifier:
    """The classifier built from the shipped YAML files."""
    return load_classifier()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("價格", "价格"),
        ("這個多少錢", "这个多少钱"),
        ("ＴＤ！！！", "td!"),
        ("ＰＲＩＣＥ？", "price?"),
        ("多少钱？？？？💰💰", "多少钱?"),
        ("😡😡😡退钱！！！", "生气退钱!"),  # emoji that carry meaning are read as the word
        ("👍🏻❤️✨", "好的"),
        ("🍎✨", ""),
        ("  hello   world  ", "hello world"),
        ("价格：¥329", "价格:¥329"),
        ("\x00\x01abc\ud800\ufffd", "abc"),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_normalize_caps_long_input() -> None:
    assert len(normalize("好" * 10_000)) <= 500


CASES = [
    # simplified
    ("我要退款，东西坏了", "complaint", "handoff"),
    ("降价了给我补差价", "complaint", "handoff"),
    ("优惠券没抵扣", "complaint", "handoff"),
    ("再不处理我投诉了", "complaint", "handoff"),
    ("转人工", "human", "handoff"),
    ("我要找真人", "human", "handoff"),
    ("让顾问联系我", "human", "handoff"),
    ("这个多少钱", "price", "handoff"),
    ("太贵了吧", "price", "handoff"),
    ("两款差价多少", "price", "handoff"),
    ("有优惠吗", "discount", "coupon"),
    ("能便宜点吗", "discount", "coupon"),
    ("满减怎么算", "discount", "coupon"),
    ("退订", "unsubscribe", "optout"),
    ("TD", "unsubscribe", "optout"),
    ("td", "unsubscribe", "optout"),
    ("别再发了", "unsubscribe", "optout"),
    ("不要再给我推送优惠", "unsubscribe", "optout"),
    ("你好", "greeting", "bot"),
    ("在吗", "greeting", "bot"),
    ("好的 拜拜", "greeting", "bot"),
    ("什么时候发货", "other", "bot"),
    ("发票怎么开", "other", "bot"),
    # traditional
    ("這個多少錢", "price", "handoff"),
    ("我要投訴", "complaint", "handoff"),
    ("轉人工", "human", "handoff"),
    ("有沒有優惠", "discount", "coupon"),
    ("請取消訂閱", "unsubscribe", "optout"),
    # English and mixed
    ("price?", "price", "handoff"),
    ("How much is it", "price", "handoff"),
    ("any discount", "discount", "coupon"),
    ("有coupon吗", "discount", "coupon"),
    ("I want a refund", "complaint", "handoff"),
    ("can I talk to a human", "human", "handoff"),
    ("unsubscribe", "unsubscribe", "optout"),
    ("the std version price", "price", "handoff"),
    # typos
    ("转人公", "human", "handoff"),
    ("这个多少前", "price", "handoff"),
    ("我要退宽", "complaint", "handoff"),
    ("有卷吗", "discount", "coupon"),
    ("退定", "unsubscribe", "optout"),
    # negation
    ("不要优惠券了", "other", "bot"),
    ("不用转人工", "other", "bot"),
    ("不用转人工了，问题解决了，谢谢", "greeting", "bot"),
    ("不要优惠，直接告诉我原价多少", "price", "handoff"),
    ("不要机器人回复，我要人工", "human", "handoff"),
    ("不是要退货，就问问怎么用", "other", "bot"),
    ("没有优惠了吗", "discount", "coupon"),
    # boilerplate and look-alikes
    ("订单号：123 价格：¥329 请问什么时候发货", "other", "bot"),
    ("AI人工智能入门课什么时候开课", "other", "bot"),
    ("我要退出群聊", "unsubscribe", "optout"),
    # noise
    ("多少钱？？？？💰💰", "price", "handoff"),
    ("ＴＤ！！！", "unsubscribe", "optout"),
    ("😀😀😀", "greeting", "bot"),  # an emoji-only acknowledgement
]


@pytest.mark.parametrize(("text", "intent", "route"), CASES)
def test_classify(clf: Classifier, text: str, intent: str, route: str) -> None:
    result = clf.classify(text)
    assert (result.intent, result.route) == (intent, route), result


@pytest.mark.parametrize(("text", "negated"), [("不要优惠券了", True), ("不用转人工", True), ("有优惠吗", False)])
def test_negated_flag(clf: Classifier, text: str, negated: bool) -> None:
    assert clf.classify(text).negated is negated


@pytest.mark.parametrize(
    "text",
    ["", "   ", "\n\t", "\x00\x01\x02\xff", "\ud800\udfff", "".join(map(chr, range(1, 300))), b"\x00\xff".decode("latin-1")],
)
def test_odd_input_is_other(clf: Classifier, text: str) -> None:
    result = clf.classify(text)
    assert isinstance(result, Intent)
    assert result.intent == "other" and result.route == "bot"


def test_not_a_string_does_not_crash(clf: Classifier) -> None:
    assert clf.classify(None).intent == "other"  # type: ignore[arg-type]


def test_huge_message(clf: Classifier) -> None:
    text = "这个面霜多少钱" + "啊" * 10_000
    result = clf.classify(text)
    assert result.intent == "price"
    assert result.text == text


@pytest.mark.parametrize(
    ("text", "topic"),
    [("什么时候发货", "delivery"), ("发票怎么开", "invoice"), ("这个怎么用", "usage"), ("我想改一下收货地址", "address"),
     ("你好", "hello"), ("谢谢", "thanks"), ("好的 拜拜", "bye"), ("这个课是真人老师吗", None), ("多少钱", None)],
)
def test_topic(clf: Classifier, text: str, topic: str | None) -> None:
    assert clf.classify(text).topic == topic


def test_faq_answer(clf: Classifier) -> None:
    fallback = clf.faq_answer(None)
    assert "人工" in fallback
    assert clf.faq_answer("no-such-topic") == fallback
    assert "发票" in clf.faq_answer("invoice") and clf.faq_answer("invoice") != fallback


@pytest.mark.parametrize(("path", "bar"), [(DEV, 0.95), (EXTRA, 0.90)])
def test_quality_bar(clf: Classifier, path: Path, bar: float) -> None:
    if not path.exists():
        pytest.skip(f"{path} not present")
    report = evaluate(clf, read_examples(path))
    assert report.macro_f1 >= bar, report.errors
    leaks = [ex.text for ex, pred in report.errors if ex.label in ("price", "discount") and pred == "unsubscribe"]
    assert not leaks


def test_extra_set_covers_all_labels() -> None:
    labels = {ex.label for ex in read_examples(EXTRA)}
    assert labels == {"complaint", "human", "price", "discount", "unsubscribe", "greeting", "other"}
    assert len(read_examples(EXTRA)) >= 80


def test_classify_lines(clf: Classifier) -> None:
    out = io.StringIO()
    classify_lines(clf, ["這個多少錢\n", "不要优惠券了\n", "\n"], out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == 3
    for record in records:
        assert list(record) == ["text", "intent", "topic", "matched", "negated", "route", "confidence", "why"]
        assert 0.0 <= record["confidence"] <= 1.0 and isinstance(record["why"], list)
        assert isinstance(record["matched"], list)
    assert records[0]["text"] == "這個多少錢" and records[0]["intent"] == "price" and records[0]["route"] == "handoff"
    assert "這個多少錢" in out.getvalue()  # ensure_ascii=False
    assert records[1]["negated"] is True and records[1]["intent"] == "other"


def test_eval_file(clf: Classifier, tmp_path: Path) -> None:
    path = tmp_path / "set.tsv"
    path.write_text("text\tlabel\tkind\n多少钱\tprice\tplain\n退订\tunsubscribe\tplain\n你好\tother\tplain\n", encoding="utf-8")
    out = io.StringIO()
    assert eval_file(clf, path, True, out) == 0
    report = json.loads(out.getvalue())
    assert report["labels"]["price"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["confusion"]["other"]["greeting"] == 1
    assert {"macro_f1", "accuracy", "confusion", "labels"} <= set(report)
    text = io.StringIO()
    assert eval_file(clf, path, False, text) == 0
    assert "macro-F1" in text.getvalue() and "你好" in text.getvalue()


def test_eval_file_bad_label(clf: Classifier, tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("多少钱\tprice\n你好\thello\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.tsv:2:"):
        eval_file(clf, path, False, io.StringIO())


KEYWORDS_OK = """\
priority: [complaint, human, price, unsubscribe, discount, greeting]
negation:
  window: 4
  words: [不要]
labels:
  complaint: {keywords: [退款]}
  human: {keywords: [人工]}
  price: {keywords: [多少钱]}
  unsubscribe: {keywords: [退订]}
  discount: {keywords: [优惠]}
  greeting: {keywords: [你好]}
"""


@pytest.mark.parametrize(
    ("broken", "line", "key"),
    [
        (KEYWORDS_OK.replace("  greeting: {keywords: [你好]}", "  greeting: {keywords: [你好]}\n  coupon: {keywords: [券]}"), 12, "labels.coupon"),
        (KEYWORDS_OK.replace("price: {keywords: [多少钱]}", "price: {keywords: 多少钱}"), 8, "labels.price.keywords"),
        (KEYWORDS_OK.replace("discount: {keywords: [优惠]}", "discount:\n    keywords:\n      - 优惠\n      - off"), 13, "labels.discount.keywords[1]"),
        (KEYWORDS_OK.replace("priority: [complaint,", "priority: [refund,"), 1, "priority[0]"),
        (KEYWORDS_OK.replace("window: 4", "window: many"), 3, "negation.window"),
        (KEYWORDS_OK.replace("labels:", "labels: [\n"), 8, "invalid YAML"),
    ],
)
def test_keywords_yaml_errors(tmp_path: Path, broken: str, line: int, key: str) -> None:
    assert_config_error(load_keywords, tmp_path / "keywords.yaml", broken, line, key)


def assert_config_error(load, path: Path, text: str, line: int, key: str) -> None:
    """Loading `text` from `path` fails with a message that starts with file:line and names `key`."""
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert key in message


FAQ_OK = """\
fallback: "回复「人工」为您转接顾问"
topics:
  delivery:
    keywords: [发货]
    answer: "48 小时内发货"
greetings:
  hello:
    keywords: [你好]
    answer: "您好"
"""


@pytest.mark.parametrize(
    ("broken", "line", "key"),
    [
        (FAQ_OK.replace('answer: "48 小时内发货"', 'answer: ""'), 5, "topics.delivery.answer"),
        (FAQ_OK.replace("keywords: [发货]", "keywords: 发货"), 4, "topics.delivery.keywords"),
        (FAQ_OK.replace('fallback: "回复「人工」为您转接顾问"', "fallback:"), 1, "fallback"),
        (FAQ_OK.replace("    answer: \"您好\"\n", ""), 7, "greetings.hello: missing key: answer"),
    ],
)
def test_faq_yaml_errors(tmp_path: Path, broken: str, line: int, key: str) -> None:
    assert_config_error(load_faq, tmp_path / "faq.yaml", broken, line, key)


def test_custom_yaml_files(tmp_path: Path) -> None:
    keywords, faq = tmp_path / "k.yaml", tmp_path / "f.yaml"
    keywords.write_text(KEYWORDS_OK, encoding="utf-8")
    faq.write_text(FAQ_OK, encoding="utf-8")
    clf = load_classifier(keywords, faq)
    assert clf.classify("不要优惠").intent == "other"
    assert clf.classify("有优惠").route == "coupon"
    assert clf.classify("什么时候发货").topic == "delivery"


def test_every_greeting_keyword_has_a_reply() -> None:
    greeting_words = set(load_keywords().labels["greeting"].words)
    replied = {w for topic in load_faq().topics if topic.greeting for w in topic.words}
    assert greeting_words <= replied


def test_shipped_yaml_loads() -> None:
    rules = load_keywords()
    assert rules.priority[0] == "complaint"
    assert load_faq().fallback
