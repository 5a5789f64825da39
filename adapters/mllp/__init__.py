"""HL7 v2 ADT over MLLP from the centre's patient administration system (CONTRACT section 10):
framing, parsing, mapping to FHIR messages, ACKs, the server and a PAS simulator."""
