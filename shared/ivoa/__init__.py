"""The broker as an IVOA service: its identifier, and its VOSI and VOResource documents (pure)."""
