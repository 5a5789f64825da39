"""The tamper-evident audit trail: AuditEvents in a hash chain, each link signed with Ed25519.

`chain.append` writes one record in the caller's transaction, `chain.verify` checks the whole
trail, `signing` holds the key; `hub audit verify` (cli.py) is the operator's check.
"""
