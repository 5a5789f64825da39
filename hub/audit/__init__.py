"""The tamper-evident audit trail: AuditEvents appended by plain inserts (records.py), sealed
in the background into an RFC 9162 Merkle tree (merkle.py, seal.py) with Ed25519-signed
checkpoints (checkpoint.py), proofs from the stored tree (tree.py), and `verify` of it all
(verify.py); `hub audit ...` (cli.py) is the operator's and the witness's tool.
"""
