"""Judges, one module (or folder) each, registered with ``@harness.registry.judges.register``."""
