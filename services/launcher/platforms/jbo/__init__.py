"""The jbo platform plugin."""
