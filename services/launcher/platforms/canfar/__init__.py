"""The canfar platform plugin."""
