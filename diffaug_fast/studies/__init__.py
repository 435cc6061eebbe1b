"""Declared studies: TOML-described experiments, their runs, verdicts and reports."""
