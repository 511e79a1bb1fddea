"""CLI commands beyond the core: each module does ``from nas.cli import app`` and registers
its commands with ``@app.command()``; nas/cli.py imports every module here."""
