"""sorrelly: small tools for yucca records."""
