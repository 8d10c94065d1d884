"""The router in the running service: webhook -> worker -> classify -> route, with the sandbox as WeCom."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time

from bot.content import Content
from bot.records.store import Store
from bot.runtime import Runtime
from bot.web.envelope import CallbackCrypto
from intents.config import EXAMPLES_PATH, load_faq
from tests.support import Service, answer, drain, kf_notice


def say(sandbox, service, runtime, text: str, customer: str) -> list[str]:
    """The customer writes `text`; returns the texts the bot sent back for it."""
    before = len(sandbox.delivered())
    sandbox.add_customer_text(customer, text)
    assert service.post(kf_notice(sandbox.callback_token(), create_time=time.time_ns())).status_code == 200
    drain(runtime.worker())
    return [answer(d["text"]["content"]) for d in sandbox.delivered()[before:] if d["touser"] == customer
            and "text" in d]


def test_third_fallback_offers_a_person_instead(sandbox, service, runtime):
    faq = load_faq()
    assert faq.repeat is not None and faq.repeat.after == 2
    customer = "wmFallback01"
    unknown = ["我家猫昨天生了三只小猫", "今天天气真不错呀适合出门", "我在想周末去哪里爬山"]
    replies = [say(sandbox, service, runtime, text, customer) for text in unknown]
    assert replies[0] == [faq.fallback] and replies[1] == [faq.fallback]
    assert replies[2] == [faq.repeat.text]
    # an answered question starts the count again
    assert say(sandbox, service, runtime, "发票怎么开", customer) != [faq.fallback]
    assert say(sandbox, service, runtime, "我在想晚饭吃点什么好", customer) == [faq.fallback]
    kinds = [e["kind"] for e in Store(runtime.r).events(50) if e.get("customer") == customer]
    assert kinds.count("fallback_repeated") == 1


def test_a_retried_third_fallback_still_offers_once(sandbox, service, runtime):
    faq = load_faq()
    customer = "wmFallback02"
    for text in ["随便说点什么吧一", "随便说点什么吧二"]:
        say(sandbox, service, runtime, text, customer)
    say(sandbox, service, runtime, "随便说点什么吧三", customer)
    # the kf cursor is lost: WeCom hands the same three messages out again
    runtime.r.delete(f"wecom:kf:{{{sandbox.open_kfid}}}:cursor")
    say(sandbox, service, runtime, "你好", "wmSomeoneElse")
    texts = [answer(d["text"]["content"]) for d in sandbox.delivered() if d["touser"] == customer and "text" in d]
    assert texts == [faq.fallback, faq.fallback, faq.repeat.text]


def test_an_edited_examples_file_changes_the_running_router(sandbox, settings, r, tmp_path):
    """An operator adds examples while the service runs: the next messages use the retrained model."""
    examples = tmp_path / "examples"
    shutil.copytree(EXAMPLES_PATH, examples)
    content = dict(settings.content, examples=examples)
    settings = dataclasses.replace(settings, content=content)
    rt = Runtime(settings, r, content=Content(settings, check_every=0.0))
    service = Service(rt.app(), CallbackCrypto(settings.token, settings.aes_key, settings.corp_id),
                      settings.callback_path)
    try:
        assert say(sandbox, service, rt, "开个喵喵通道", "wmReload01") == [load_faq().fallback]
        taught = "\n".join(f"{w}\thuman\tbrand" for w in
                           ("喵喵通道", "走喵喵通道", "喵喵通道在哪", "给我开喵喵通道", "我要喵喵通道", "帮我接喵喵通道",
                            "喵喵通道能开吗", "申请喵喵通道", "喵喵通道找谁", "快开喵喵通道"))
        (examples / "brand.tsv").write_text(f"text\tlabel\tkind\n{taught}\n", encoding="utf-8")
        later = time.time() + 5
        os.utime(examples, (later, later))
        version = rt.content.version
        rt.content.get("classifier")  # the edit is noticed; the model retrains in the background
        rt.content.wait_reload()
        assert rt.content.version == version + 1
        say(sandbox, service, rt, "开个喵喵通道", "wmReload02")
        assert sandbox.requests("kf/service_state/trans"), "the taught message was not handed to a person"
        # a broken edit is reported with file and line, and the running model stays
        (examples / "broken.tsv").write_text("text\tlabel\n喵喵通道\tnot-a-label\n", encoding="utf-8")
        later += 5
        os.utime(examples, (later, later))
        rt.content.get("classifier")
        rt.content.wait_reload()
        before = len(sandbox.requests("kf/service_state/trans"))
        say(sandbox, service, rt, "我要喵喵通道", "wmReload03")
        assert rt.content.error and "broken.tsv:2:" in rt.content.error
        assert len(sandbox.requests("kf/service_state/trans")) > before
    finally:
        service.stop()


def test_service_answers_pinyin_and_cantonese(sandbox, service, runtime):
    """The same router the CLI shows, in the service: pinyin and Cantonese customers are understood."""
    coupon = say(sandbox, service, runtime, "you meiyou zhekou a", "wmPinyin01")
    assert coupon and "券码" in coupon[0]
    say(sandbox, service, runtime, "呢张凳几钱", "wmCanto01")
    trans = [c["json"] for c in sandbox.requests("kf/service_state/trans")]
    assert any(t["external_userid"] == "wmCanto01" for t in trans)
