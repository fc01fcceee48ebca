"""The dirac platform plugin."""
