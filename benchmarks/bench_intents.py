"""Time Classifier.classify() against a bare jieba.lcut over the dev-set messages (~20k)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jieba

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from intents.classify import load_classifier  # noqa: E402
from intents.evaluate import read_examples  # noqa: E402

DEV = Path(__file__).resolve().parent.parent / "tests" / "data" / "dev-utterances.tsv"
FALLBACK = ROOT / "tests" / "data" / "extra-utterances.tsv"
TARGET = 20_000
ROUNDS = 5


def once(func, messages: list[str]) -> float:
    """Seconds to run func over all messages."""
    start = time.perf_counter()
    for message in messages:
        func(message)
    return time.perf_counter() - start


def main() -> None:
    """Print messages/s of classify() and of jieba.lcut, and the cost ratio."""
    path = DEV if DEV.exists() else FALLBACK
    texts = [ex.text for ex in read_examples(path)]
    messages = (texts * (TARGET // len(texts) + 1))[:TARGET]
    classifier = load_classifier()  # also initialises jieba and registers the keywords
    classifier.classify(messages[0])
    # Alternate the two and keep the best of each, so a noisy machine affects both alike.
    lcut = classify = float("inf")
    for _ in range(ROUNDS):
        lcut = min(lcut, once(jieba.lcut, messages))
        classify = min(classify, once(classifier.classify, messages))
    print(f"messages:        {len(messages)} (from {path})")
    print(f"jieba.lcut:      {len(messages) / lcut:10.0f} msg/s  ({lcut * 1e6 / len(messages):.1f} us/msg)")
    print(f"classify():      {len(messages) / classify:10.0f} msg/s  ({classify * 1e6 / len(messages):.1f} us/msg)")
    print(f"ratio classify/lcut cost: {classify / lcut:.2f}x")


if __name__ == "__main__":
    main()
