"""The user's door: the `advisor` CLI."""
