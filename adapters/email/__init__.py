"""E-mail notices without health information (CONTRACT section 10): coordinators with an
e-mail address learn that something is pending for their organisation, with counts and a
link to /ui, never a name, fødselsnummer, diagnosis or free text."""
