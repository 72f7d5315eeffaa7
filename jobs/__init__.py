"""Composition root: the typer CLI and the jobs it runs (Ray lives only here)."""
