"""IVOA, pure: the broker as a service (its identifier, VOSI and VOResource documents), and finding
other services through a registry (resource-caps, VOSI capabilities).
"""
