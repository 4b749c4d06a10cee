"""Caption variants: the structured text a model writes for a tile, and the text we embed."""

from __future__ import annotations

from dataclasses import dataclass, asdict

FIELDS = ("one_sentence", "feature", "caption")


@dataclass(frozen=True)
class CaptionVariant:
    """One description of a tile.

    Structured variants (PAPER.md) fill all three fields; a plain-text caption
    (imported human captions, say) has only `caption`.
    """

    one_sentence: str = ""
    feature: str = ""
    caption: str = ""

    @classmethod
    def plain(cls, text: str) -> "CaptionVariant":
        return cls(caption=text.strip())

    @classmethod
    def from_mapping(cls, data: dict) -> "CaptionVariant":
        return cls(**{name: str(data.get(name) or "").strip() for name in FIELDS})

    @property
    def is_plain(self) -> bool:
        return not self.one_sentence and not self.feature

    def is_empty(self) -> bool:
        return not (self.one_sentence or self.feature or self.caption)

    def embedding_text(self) -> str:
        """The text embedded for this variant, as in the paper's reference code."""
        if self.is_plain:
            return self.caption
        return (
            f"ONE_SENTENCE: {self.one_sentence}\n"
            f"FEATURE: {self.feature}\n"
            f"CAPTION: {self.caption}"
        )

    def display_text(self) -> str:
        """The shortest text that still says what the tile shows (for result lists)."""
        return self.one_sentence or self.caption or self.feature

    def to_dict(self) -> dict:
        return asdict(self)
