"""Per-resource service limits (quotas), shared by the harness's quota-aware load and the simulator.

Voice Live enforces these per Azure resource (protocol reference §6a, Learn's quota page, 2026-01):
a Standard (S0) resource allows 30 new connections per minute, 120,000 tokens per minute and 60-minute
sessions. Audio costs about 10 input and 20 output tokens per second on OpenAI models. One dataclass
serves both sides so the harness plans against exactly what the simulator enforces.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Quotas of one resource; ``None`` means unlimited (not enforced, not planned for)."""

    connections_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_session_minutes: float | None = None
    window_s: float = 60.0  # length of the rolling "minute"; 60 on real services, shorter only in tests

    @property
    def unlimited(self) -> bool:
        return self.connections_per_minute is None and self.tokens_per_minute is None \
            and self.max_session_minutes is None


# Learn, speech-services-quotas-and-limits (2026-01-30): Standard (S0) resource.
AZURE_S0 = Limits(connections_per_minute=30, tokens_per_minute=120_000, max_session_minutes=60)
UNLIMITED = Limits()

# Learn, voice-live pricing (OpenAI models): tokens per second of audio.
INPUT_AUDIO_TOKENS_PER_S = 10.0
OUTPUT_AUDIO_TOKENS_PER_S = 20.0
#: Text costs about one token per four characters (OpenAI's rule of thumb; Voice Live bills text tokens
#: of the model behind it).
TEXT_CHARS_PER_TOKEN = 4.0


def text_tokens(text: str) -> int:
    """Tokens for a piece of text (about one per four characters, at least one for non-empty text)."""
    if not text:
        return 0
    return max(1, round(len(text) / TEXT_CHARS_PER_TOKEN))
