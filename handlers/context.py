"""What handlers may consult: reply texts and the FAQ; nothing that does I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from intents.config import RepeatRule


@dataclass(frozen=True, slots=True)
class Ctx:
    """Read-only context for handlers."""

    replies: Mapping[str, str] = field(default_factory=dict)
    faq_answer: Callable[[str | None], str] | None = None
    fallbacks: int = 0  # fallbacks in a row the bot gave this customer before this message
    repeat: RepeatRule | None = None  # what to do instead of yet another fallback
    human_holds: bool = False  # a consultant holds this customer's chat (an open handoff this message did not open)
    welcomed: bool = False  # a first contact: the welcome goes out just before the answer to this message

    def reply(self, name: str) -> str:
        """A configured reply text (config.yaml `replies`)."""
        return self.replies.get(name) or self.replies["default"]
