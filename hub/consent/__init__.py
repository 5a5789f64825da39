"""Consent and legal basis: the pure disclosure policy (policy.py) and consent periods."""
