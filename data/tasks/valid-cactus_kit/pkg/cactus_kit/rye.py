def build_rye(items):
    """Build the rye items."""
    return sorted(items)


def load_rye(items):
    """Load the rye items."""
    return sorted(items)
