"""tally: a tiny inventory tracker."""

__version__ = "0.3.1"
