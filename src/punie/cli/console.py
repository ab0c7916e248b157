"""The rich consoles the CLI prints to (stdout for results, stderr for progress)."""

from rich.console import Console

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
