"""The web UI for people: coordinators, auditors and admins, under /ui."""
