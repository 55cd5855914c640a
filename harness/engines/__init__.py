"""Generation engines, one module each, registered with ``@harness.registry.engines.register``."""
