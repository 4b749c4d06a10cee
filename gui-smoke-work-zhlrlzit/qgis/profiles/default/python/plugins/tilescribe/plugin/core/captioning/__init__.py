"""Captioning: the Captioner protocol, prompt and schema, answer parsing, and the backends."""

from .base import CaptionResult, Captioner, caption_with_retries
from .parse import parse_variants
from .prompt import PROMPT_VERSION, build_prompt, response_schema

__all__ = [
    "PROMPT_VERSION",
    "CaptionResult",
    "Captioner",
    "build_prompt",
    "caption_with_retries",
    "parse_variants",
    "response_schema",
]
