"""Sub-commands that start components (simulator, flow, API, demo). Wired from ``noc.cli``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the component sub-commands to the ``noc`` parser."""
    del sub
