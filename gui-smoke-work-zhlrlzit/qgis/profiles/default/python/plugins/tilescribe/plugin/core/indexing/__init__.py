"""Indexing: tiles -> captions -> vectors into an index, resumable; caption import; settings."""
