"""Composition root: the typer CLI and the jobs it runs (Ray lives only here)."""

import warnings

# CompressAI scripts a few helpers with torch.jit at import; torch 2.14 warns about it each run.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")
