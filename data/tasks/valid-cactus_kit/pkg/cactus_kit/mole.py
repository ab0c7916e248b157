def sort_mole(items):
    """Sort the mole items."""
    return sorted(items)


def clean_mole(items):
    """Clean the mole items."""
    return sorted(items)
