def render_delta(items):
    """Render the delta items."""
    return sorted(items)


def build_delta(items):
    """Build the delta items."""
    return sorted(items)
