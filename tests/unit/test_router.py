"""The hybrid router on the categories real customers write (messages written for these tests,
none of them in the training corpus), its confidence, explanations, bad input and broken files."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from bot.yamlfile import ConfigError
from intents.classify import Classifier, load_classifier
from intents.cli import classify_lines, eval_cv, explain
from intents.config import EXAMPLES_PATH, FAQ_PATH, KEYWORDS_PATH
from intents.examples import load_corpus

ROOT = Path(__file__).resolve().parent.parent.parent

CATEGORIES = {
    "implicit": [
        ("这种椅子拿六把总共要多少", "price"), ("两套一起算下来多钱", "price"), ("运费怎么要这么多", "price"),
        ("快递费也太高了吧", "price|complaint"), ("买三罐送不送东西", "discount"), ("满几件能包邮", "discount"),
        ("那个零头就算了吧", "discount"), ("八百五我就直接下单", "discount"), ("都十天了还没收到", "complaint"),
        ("拆开盒子玻璃就裂成两半了", "complaint"), ("你们这服务真是够了", "complaint"),
    ],
    "pinyin_homophone": [
        ("qing wen jiage duoshao", "price"), ("wo xiang tuihuo", "complaint"), ("最近有什么尤惠活动", "discount"),
        ("麻烦叫个顾文过来", "human"), ("转客福", "human"), ("zhe ge you zhekou ma", "discount"),
    ],
    "cantonese_taiwanese": [
        ("呢张凳几钱", "price"), ("有冇优惠", "discount"), ("你讲咩啊我要搵真人", "human"), ("請問這款運費怎麼算", "price"),
    ],
    "substring_false_positive": [
        ("贵宾厅在几楼", "other"), ("活动板房能做多大", "other"), ("券商的人推荐我来的", "other"),
        ("好的我再看看其他款式的尺寸", "other"), ("年卡会员的自动续费在哪里退订", "other"),
    ],
    "scope": [
        ("跟价格没关系，主要是颜色不喜欢想换", "complaint"), ("上回给的那张券已经用掉了 很划算 谢啦", "greeting"),
    ],
    "policy_questions": [
        ("你们的退换货规则是怎样的", "other"), ("退款一般几天能到账", "other"), ("价保怎么申请啊", "other"),
    ],
}
CASES = [(category, text, want) for category, rows in CATEGORIES.items() for text, want in rows]


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return load_classifier()


def test_cases_are_not_training_examples() -> None:
    corpus = {ex.text for ex in load_corpus(EXAMPLES_PATH)}
    assert not [text for _, text, _ in CASES if text in corpus]


@pytest.mark.parametrize(("category", "text", "want"), CASES)
def test_category(clf: Classifier, category: str, text: str, want: str) -> None:
    result = clf.classify(text)
    assert result.intent in want.split("|"), (category, result)


@pytest.mark.parametrize(("text", "topic"), [("退款一般几天能到账", "refund_time"), ("价保怎么申请啊", "price_protection"),
                                             ("床垫能不能翻面睡", "usage"), ("你们线下体验店在哪", "showroom"),
                                             ("能分期付吗", "payment")])
def test_faq_by_similarity(clf: Classifier, text: str, topic: str) -> None:
    assert clf.classify(text).topic == topic


def test_unrelated_words_find_no_faq_topic(clf: Classifier) -> None:
    for text in ("您好我想咨询一个事情", "这个问题你们能解决吗", "qwer"):
        assert clf.classify(text).topic is None, text


def test_context_from_the_previous_message(clf: Classifier) -> None:
    joined = clf.classify("这个呢", previous="最近有什么活动吗")
    assert joined.intent == "discount" and joined.why[0].startswith("context:"), joined
    assert clf.classify("这个呢", previous="那款沙发多少钱").intent == "price"
    # an acknowledgement never borrows the previous message
    assert clf.classify("好的", previous="那款沙发多少钱").intent == "greeting"


@pytest.mark.parametrize("text", ["😀", "👍", "👌👌", "🙏"])
def test_emoji_acknowledgement(clf: Classifier, text: str) -> None:
    result = clf.classify(text)
    assert result.intent == "greeting" and result.topic in ("ack", "thanks"), result


@pytest.mark.parametrize("text", ["", "\x00\x07\x1b", "🍎🍎", "a" * 600, "多少钱" + "啊" * 600, "ÿþ", "x\u202e\u200b退订",
                                  "订单 №12 ★ ①②③ Ω"])
def test_bad_input_gets_a_decision(clf: Classifier, text: str) -> None:
    result = clf.classify(text)
    assert result.intent in ("complaint", "human", "price", "discount", "unsubscribe", "greeting", "other")
    assert 0.0 <= result.confidence <= 1.0


def test_low_confidence_is_never_a_coupon_or_handoff() -> None:
    strict = load_classifier()
    strict.threshold = strict.threshold_model_only = 0.999
    unsure = [text for text in ("那个东西能不能再看看", "快递费也太高了吧", "买两件有赠品不", "这个呢", "都三天了",
                                "你们这服务真是够了", "八百五我就直接下单")
              if max((p, lab) for lab, p in strict.probabilities(text).items())[1] not in ("other", "greeting")
              and max(strict.probabilities(text).values()) < 0.999]
    assert unsure, "no message the model is unsure of"
    for text in unsure:
        result = strict.classify(text)
        assert result.route == "bot" and any("below" in w for w in result.why), result


def test_operator_force_keyword(tmp_path: Path) -> None:
    keywords = tmp_path / "keywords.yaml"
    text = KEYWORDS_PATH.read_text(encoding="utf-8").replace(
        "  discount:\n", "  discount:\n    force: [木里节]\n", 1)
    keywords.write_text(text, encoding="utf-8")
    forced = load_classifier(keywords)
    result = forced.classify("木里节是哪天")
    assert result.intent == "discount" and result.confidence == 1.0 and "forced" in result.why[0]


def test_classify_lines_adds_confidence_and_why(clf: Classifier) -> None:
    out = io.StringIO()
    classify_lines(clf, ["這個多少錢\n"], out)
    record = json.loads(out.getvalue())
    assert list(record)[:6] == ["text", "intent", "topic", "matched", "negated", "route"]
    assert record["intent"] == "price" and record["confidence"] > 0.9
    assert any("多少钱" in w for w in record["why"])


def test_explain(clf: Classifier) -> None:
    text = explain(clf, "有zhekou吗")
    assert "intent:     discount" in text and "折扣" in text and "confidence" in text
    assert "sounds like 折扣 -> discount" in text
    assert "tokens:     有 / zhekou / 吗" in text


def test_cross_validation_reports_every_label(clf: Classifier, tmp_path: Path) -> None:
    small = tmp_path / "examples"
    small.mkdir()
    rows = [line for line in (EXAMPLES_PATH / "furniture.tsv").read_text(encoding="utf-8").splitlines()[1:400]]
    (small / "a.tsv").write_text("text\tlabel\tkind\n" + "\n".join(rows[::2]) + "\n", encoding="utf-8")
    (small / "b.tsv").write_text("text\tlabel\tkind\n" + "\n".join(rows[1::2]) + "\n", encoding="utf-8")
    out = io.StringIO()
    eval_cv(clf, small, 2, True, True, out)
    report = json.loads(out.getvalue())
    assert report["total"] == len(rows)
    assert report["macro_f1"] > 0.6 and 0 < report["route_accuracy"] <= 1


def test_broken_examples_file_names_file_and_line(tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    shutil.copytree(EXAMPLES_PATH, examples)
    with (examples / "pet.tsv").open("a", encoding="utf-8") as f:
        f.write("猫砂多少钱\tpricey\tplain\n")
    lines = (examples / "pet.tsv").read_text(encoding="utf-8").count("\n")
    with pytest.raises(ConfigError, match=rf"pet\.tsv:{lines}: expected text<TAB>label"):
        load_classifier(KEYWORDS_PATH, FAQ_PATH, examples)


def test_examples_train_the_model(tmp_path: Path) -> None:
    """An operator's new examples change decisions: a brand word taught by examples alone."""
    examples = tmp_path / "examples"
    shutil.copytree(EXAMPLES_PATH, examples)
    before = load_classifier(KEYWORDS_PATH, FAQ_PATH, examples, use_cache=False).classify("开个喵喵通道")
    taught = "\n".join(f"{w}\thuman\tbrand" for w in
                       ("喵喵通道", "走喵喵通道", "喵喵通道在哪", "给我开喵喵通道", "我要喵喵通道", "帮我接喵喵通道",
                        "喵喵通道能开吗", "申请喵喵通道", "喵喵通道找谁", "快开喵喵通道"))
    (examples / "brand.tsv").write_text(f"text\tlabel\tkind\n{taught}\n", encoding="utf-8")
    after = load_classifier(KEYWORDS_PATH, FAQ_PATH, examples, use_cache=False).classify("开个喵喵通道")
    assert before.intent != "human" and after.intent == "human"


@pytest.mark.parametrize(("text", "not_this"), [
    ("我克服了很多困难才买到", "human"), ("受到了伤害", "greeting"), ("这个太主观了吧", "human"),  # real words, not slips
    ("I need a new curtain pole", "complaint"), ("is this sofa for sale", "discount"),  # English, not pinyin
    ("I can't stop loving it", "unsubscribe"),
])
def test_sound_alikes_and_english_do_not_fire(clf: Classifier, text: str, not_this: str) -> None:
    assert clf.classify(text).intent != not_this


def test_polyphonic_keywords_match_every_reading(clf: Classifier) -> None:
    assert clf.classify("pianyi dian").intent == "discount"  # 便宜 read pian yi


@pytest.mark.parametrize(("previous", "text", "not_this"), [("转人工", "不用了", "human"),
                                                            ("能便宜点吗", "那我再看看", "discount")])
def test_a_decline_never_borrows_the_previous_request(clf: Classifier, previous: str, text: str,
                                                       not_this: str) -> None:
    assert clf.classify(text, previous=previous).intent != not_this


def test_the_end_of_a_long_message_counts(clf: Classifier) -> None:
    story = "我上个月在你们店里买了一张沙发，" + "当时导购说了很多，" * 80 + "我要投诉，马上给我退款！"
    assert len(story) > 600 and clf.classify(story).intent == "complaint"


def test_one_word_finds_no_faq_topic_by_similarity(clf: Classifier) -> None:
    assert clf.classify("沙发").topic is None


def test_rebuilding_the_classifier_keeps_the_tokens(clf: Classifier) -> None:
    texts = [ex.text for ex in load_corpus(EXAMPLES_PATH)][::7]
    before = [clf.parse(t).tokens for t in texts]
    load_classifier()
    load_classifier()
    assert [clf.parse(t).tokens for t in texts] == before


def test_a_damaged_model_cache_is_retrained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECOM_BOT_CACHE", str(tmp_path))
    load_classifier()
    (cached,) = tmp_path.glob("intents-*.npz")
    cached.write_bytes(b"not a zip file")
    assert load_classifier().classify("多少钱").intent == "price"


def test_examples_of_one_label_are_a_config_error(tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "only.tsv").write_text("text\tlabel\n多少钱\tprice\n几钱\tprice\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"only\.tsv:1: the examples must cover at least two labels"):
        load_classifier(KEYWORDS_PATH, FAQ_PATH, examples)


@pytest.mark.parametrize(("loader", "source", "old", "new", "key"), [
    ("keywords", KEYWORDS_PATH, "  threshold: 0.45\n", "  threshold: 1.5\n", "model.threshold: expected a number from 0 to 1"),
    ("faq", FAQ_PATH, "  then: offer\n", "  then: maybe\n", "after_fallbacks.then: expected one of offer"),
])
def test_router_settings_are_checked_with_file_and_line(tmp_path: Path, loader: str, source: Path, old: str,
                                                        new: str, key: str) -> None:
    from intents.config import load_faq, load_keywords

    text = source.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / source.name
    path.write_text(text.replace(old, new), encoding="utf-8")
    line = text[:text.index(old)].count("\n") + 1
    with pytest.raises(ConfigError) as err:
        (load_keywords if loader == "keywords" else load_faq)(path)
    assert str(err.value).startswith(f"{path}:{line}: {key}"), str(err.value)


def test_yaml_aliases_and_huge_files_are_refused_with_file_and_line(tmp_path: Path) -> None:
    from bot import yamlfile
    from intents.config import load_faq

    bomb = tmp_path / "faq.yaml"
    bomb.write_text('fallback: "x"\na: &a ["lol", "lol", "lol"]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n',
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{bomb}:2: YAML anchors and aliases"):
        load_faq(bomb)
    huge = tmp_path / "keywords.yaml"
    huge.write_text("# " + "x" * (yamlfile.MAX_BYTES + 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{huge}:1: file too large"):
        yamlfile.load(huge)


def test_commands_that_never_classify_do_not_load_jieba_or_the_model() -> None:
    import subprocess
    import sys

    code = ("import sys; import bot.ops.cli, bot.runtime, bot.pipeline, handlers; "
            "print(sorted(m for m in ('jieba', 'sklearn', 'pypinyin', 'intents.classify') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("text", ["嗯", "好的", "了解", "好的呢", "okk", "👌", "👍", "😀", "收到啦", "行"])
def test_an_acknowledgement_never_gets_the_fallback(clf: Classifier, text: str) -> None:
    result = clf.classify(text)
    assert result.intent == "greeting", result
    answer = clf.faq_answer(result.topic)
    assert answer != clf.faq_answer(None) and "答不上来" not in answer and "不客气" not in answer
