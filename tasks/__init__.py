"""Tasks, one module each, registered with ``@harness.task.register("name")``."""
