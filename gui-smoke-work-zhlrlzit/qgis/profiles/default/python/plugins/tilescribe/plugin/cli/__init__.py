"""Command line interface: `tilescribe <command>`; one module per command."""
