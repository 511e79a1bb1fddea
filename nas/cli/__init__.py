"""The `nas` command line: the typer app, its global options and error handling (:mod:`nas.cli.base`), and
one module per group of commands, each registering on :data:`nas.cli.base.app`. This package imports every
command module, explicitly (no discovery, and no command module imports this package back), and exposes
``main`` (the console script ``nas``)."""

from nas.cli import (  # noqa: F401  (each registers its commands)
    confirm,
    fidelity,
    latency_tables,
    results,
    search,
    studies,
    train,
    viz,
)
from nas.cli.base import app, main

__all__ = ["app", "main"]

# `nas --help` lists the commands in this order: searching, reading a study, then the rest (as before the
# commands were split into modules)
_ORDER = ["spaces", "search", "resume", "confirm", "status", "pareto", "export", "show", "fidelity", "profile", "studies", "delete",
          "train", "export-model", "plot", "report", "compare"]
app.registered_commands.sort(key=lambda c: _ORDER.index(c.name or c.callback.__name__.replace("_", "-")))
