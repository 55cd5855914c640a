"""The stages of a run, each reusing its artifacts when its inputs are unchanged."""
