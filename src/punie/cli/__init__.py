"""The ``punie`` command line: one module per command group; parse, call core, render."""
