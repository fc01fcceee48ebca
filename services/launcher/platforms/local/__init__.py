"""The local platform plugin."""
