"""Fuzz tests: property-based (hypothesis) here, coverage-guided (atheris) in bench/fuzz.py."""
