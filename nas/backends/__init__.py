"""Backends run trials against one study: ``local`` (one process) and, later, ``ray``."""
