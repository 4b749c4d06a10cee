"""The `tilescribe bench-*` commands, registered by the CLI only when devtools is present."""
