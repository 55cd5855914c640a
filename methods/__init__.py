"""Preference methods, one module each. A module defines a dataclass subclass of
``harness.method.Method`` decorated with ``@register("name")``; nothing else needs editing."""
