"""Each default has one owner: the command line reads the captioner's from CaptionerSettings."""

from __future__ import annotations

import argparse

from tilescribe.plugin.cli.index_command import add_captioner_arguments
from tilescribe.plugin.core.captioning.factory import DEFAULT_CAPTIONER, CaptionerSettings
from tilescribe.plugin.core.captioning.llama_server import ServerOptions


def test_cli_captioner_defaults_are_the_settings_defaults():
    parser = argparse.ArgumentParser()
    add_captioner_arguments(parser)
    args = parser.parse_args([])
    assert DEFAULT_CAPTIONER == CaptionerSettings()
    assert (args.engine, args.slots, args.parallel, args.timeout, args.family, args.gpu_layers) == (
        DEFAULT_CAPTIONER.engine, DEFAULT_CAPTIONER.slots, DEFAULT_CAPTIONER.parallel_requests,
        DEFAULT_CAPTIONER.timeout_s, DEFAULT_CAPTIONER.family, DEFAULT_CAPTIONER.n_gpu_layers)
    assert f"(default {DEFAULT_CAPTIONER.slots})" in parser.format_help()


def test_llama_server_slots_default_is_the_settings_default():
    assert ServerOptions(model="m", mmproj="p").slots == DEFAULT_CAPTIONER.slots
