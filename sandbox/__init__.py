"""A local Azure for development and tests: Key Vault, ARM and Event Grid, wire-compatible
with the official SDKs. Never deployed (see ``.funcignore``)."""
