"""Benchmarks of search and indexing (the bench-search and bench-index commands)."""

# What a real answer costs per caption variant asked for: 5 variants x 3 real fields came to about
# 800 tokens (SmolLM2/Llama BPE, RECIPES.md). bench-caption's default answer length; light enough
# for the command line to import.
TOKENS_PER_VARIANT = 160
