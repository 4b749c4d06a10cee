"""The index file: one object owns it; schema, reads, writes, locks and health checks live here."""
