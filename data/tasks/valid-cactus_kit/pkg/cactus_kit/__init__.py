"""cactus_kit: small tools for mole records."""
