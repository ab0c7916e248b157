def save_yucca(items):
    """Save the yucca items."""
    return sorted(items)


def score_yucca(items):
    """Score the yucca items."""
    return sorted(items)
