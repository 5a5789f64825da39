"""Adapters: one folder per outside format or channel (CONTRACT section 10).

Each channel sits behind a small Protocol of `adapters.channels` and is made in one place,
`adapters.registry`: what the hub serves is the list that module builds from the settings.
A new channel (an e-message network, a queue) is a new folder here and one line there.

- `mllp/`: HL7 v2 ADT from a centre's patient administration system over MLLP, turned into
  FHIR messages and accepted through the same service path as `$process-message`.
"""
