"""One-off helper kept for maintainers: the bokmål texts of hub/ui, merged into
hub/ui/locale/nb/LC_MESSAGES/messages.po by scripts/i18n.sh (texts already in the .po win)."""

NB = {
    "Read": "Lest", "Read an earlier version": "Lest en tidligere versjon",
    "Read the history": "Lest historikken", "Search": "Søk", "Operation": "Operasjon",
    "Transaction": "Transaksjon", "Batch": "Samlet forespørsel", "Message": "Melding",
    "in force": "gjelder", "withdrawn": "trukket tilbake", "draft": "utkast",
    "proposed": "foreslått", "rejected": "avvist", "entered in error": "registrert ved en feil",
    "Wrong username or password, or the account is paused.":
        "Feil brukernavn eller passord, eller kontoen er satt på pause.",
    "coordinator": "koordinator", "auditor": "revisor", "admin": "administrator",
    "within the hour": "innen en time",
    "Asked, not answered yet": "Spurt, ikke besvart ennå", "Received": "Mottatt",
    "Accepted": "Godtatt", "Turned down": "Avslått", "Cancelled": "Avlyst",
    "In progress": "Pågår", "Done": "Utført", "On hold": "På vent", "Ready": "Klar",
    "Draft": "Utkast", "Failed": "Mislyktes", "the person": "personen selv",
    "Individual plan": "Individuell plan", "Network meeting": "Nettverksmøte",
    "Cooperation meeting": "Samarbeidsmøte", "Responsibility meeting": "Ansvarsgruppemøte",
    "Will come": "Kommer", "Will not come": "Kommer ikke", "Might come": "Kommer kanskje",
    "Not answered yet": "Har ikke svart ennå",
    "Consent changed": "Samtykke endret", "Individual plan shared": "Individuell plan delt",
    "Admission notice": "Innleggelsesmelding",
    "Self-admission agreement": "Avtale om brukerstyrt innleggelse",
    "Self-admission request": "Forespørsel om brukerstyrt innleggelse",
    "Answer to a self-admission request": "Svar på forespørsel om brukerstyrt innleggelse",
    "Meeting invitation": "Møteinnkalling", "Answer to a meeting": "Svar på møteinnkalling",
    "Ready for discharge": "Utskrivningsklar pasient",
    "Ready for discharge withdrawn": "Utskrivningsklar melding trukket tilbake",
    "Answer to ready for discharge": "Svar på utskrivningsklar melding",
    "Discharge notice": "Utskrivningsmelding", "Follow-up contact": "Oppfølgingskontakt",
    "Follow-up check overdue": "Oppfølgingskontroll forsinket",
    "Ready for discharge unanswered": "Utskrivningsklar melding ubesvart",
    "Meeting reminder": "Møtepåminnelse", "Consent expiring": "Samtykke går ut",
    "Delivery not acknowledged": "Levering ikke kvittert",
    "Follow-up check after discharge": "Oppfølgingskontroll etter utskrivning",
    "A patient not shown to you": "En pasient som ikke vises for deg", "Meeting": "Møte",
    "Audit trail": "Revisjonslogg",
    "Find a person's disclosure log by fødselsnummer":
        "Finn en persons utleveringslogg med fødselsnummer",
    "Find records": "Finn oppføringer", "Patient": "Pasient", "From (date)": "Fra (dato)",
    "To (date, included)": "Til (dato, medregnet)", "Records, oldest first":
        "Oppføringer, eldste først", "Recorded": "Registrert", "What": "Hva",
    "Agent": "Aktør", "Outcome": "Utfall", "Later records": "Senere oppføringer",
    "No records match.": "Ingen oppføringer passer.",
    "Skip to the content": "Hopp til innholdet", "Language": "Språk",
    "Signed in as": "Innlogget som", "Sign out": "Logg ut",
    "Disclosure log": "Utleveringslogg", "Consent": "Samtykke", "version": "versjon",
    "Legal basis": "Hjemmel", "none": "ingen", "Withheld": "Holdt tilbake",
    "Shared in part": "Delvis delt", "Shared": "Delt", "The person": "Personen",
    "Name": "Navn", "Born": "Født", "Number": "Nummer",
    "Copy for the person (innsyn, in bokmål)": "Kopi til personen (innsyn, på bokmål)",
    "Export as CSV": "Eksporter som CSV", "Export as FHIR Bundle": "Eksporter som FHIR Bundle",
    "State of the audit trail": "Revisjonsloggens tilstand",
    "%(n)d of this person's %(m)d records fail the check: they were changed after they were "
    "written.": "%(n)d av personens %(m)d oppføringer består ikke kontrollen: de er endret "
    "etter at de ble skrevet.",
    "All %(m)d of this person's disclosure records are intact: hash and signature checked.":
        "Alle %(m)d utleveringsoppføringer om personen er uendret: hash og signatur er "
        "kontrollert.",
    "Checked": "Kontrollert",
    "The trail holds %(n)d records in all.": "Loggen har %(n)d oppføringer i alt.",
    "The whole trail was last verified": "Hele loggen ble sist kontrollert",
    "%(n)d records intact.": "%(n)d oppføringer uendret.", "broken": "brutt",
    "The whole trail has never been verified: run `hub audit verify`.":
        "Hele loggen er aldri kontrollert: kjør `hub audit verify`.",
    "The trail holds %(n)d records in all; `hub audit verify` checks the whole chain.":
        "Loggen har %(n)d oppføringer i alt; `hub audit verify` kontrollerer hele kjeden.",
    "Filter": "Filtrer", "Organisation": "Virksomhet", "All": "Alle", "Decision": "Beslutning",
    "Show": "Vis", "Messages about the person, newest first":
        "Meldinger om personen, nyeste først", "When": "Når",
    "Receiving organisation": "Mottakende virksomhet", "Event": "Hendelse",
    "Resource types": "Ressurstyper", "Basis": "Grunnlag", "Reason": "Begrunnelse",
    "No messages about the person match.": "Ingen meldinger om personen passer.",
    "Reads by other organisations, newest first":
        "Oppslag fra andre virksomheter, nyeste først", "How": "Hvordan",
    "Asked by": "Spurt av",
    "No other organisation has read the person's records.":
        "Ingen annen virksomhet har lest personens opplysninger.",
    "Consents over time, newest first": "Samtykker over tid, nyeste først",
    "version %(v)d, recorded by %(org)s": "versjon %(v)d, registrert av %(org)s",
    "not given": "ikke oppgitt",
    "Consent to making an individual plan.": "Samtykke til å lage individuell plan.",
    "Names as recipients:": "Mottakere:", "Excludes:": "Unntatt:", "Only:": "Bare:",
    "Valid %(start)s to %(end)s.": "Gjelder %(start)s til %(end)s.",
    "The person has no recorded consents.": "Personen har ingen registrerte samtykker.",
    "Not allowed": "Ikke tillatt", "Not signed in": "Ikke innlogget",
    "Something went wrong": "Noe gikk galt", "Cannot do that": "Det går ikke",
    "Back to CareHub": "Tilbake til CareHub", "Find a person": "Finn en person",
    "Whose disclosure log": "Hvem sin utleveringslogg",
    "Fødselsnummer or D-nummer": "Fødselsnummer eller D-nummer",
    "Or, without the number, a name and a birth date:":
        "Eller, uten nummeret, navn og fødselsdato:",
    "Birth date": "Fødselsdato", "Find the person": "Finn personen",
    "People found": "Personer funnet", "born": "født",
    "The hub keeps no person with these details.":
        "Huben har ingen person med disse opplysningene.",
    "Give a fødselsnummer or D-nummer, or a name and a birth date.":
        "Oppgi fødselsnummer eller D-nummer, eller navn og fødselsdato.",
    "Give the birth date as a date.": "Oppgi fødselsdatoen som en dato.",
    "Give the period as dates.": "Oppgi perioden som datoer.",
    "Choose a decision from the list.": "Velg en avgjørelse fra listen.",
    "Home": "Hjem", "Welcome, %(name)s": "Velkommen, %(name)s", "You": "Deg",
    "Username": "Brukernavn", "Role": "Rolle", "(not registered)": "(ikke registrert)",
    "Who received or read what about a person":
        "Hvem har fått eller lest hva om en person",
    "Find the person by fødselsnummer or D-nummer (or name and birth date) to see every "
    "disclosure and read of their records, on what basis, their consents over time, and a "
    "copy they can be given.": "Finn personen med fødselsnummer eller D-nummer (eller navn og "
    "fødselsdato) for å se hver utlevering og hvert oppslag i opplysningene, på hvilket "
    "grunnlag, samtykkene over tid, og en kopi personen kan få.",
    "Search the whole audit trail": "Søk i hele revisjonsloggen",
    "by patient and date.": "etter pasient og dato.", "Organisations": "Virksomheter",
    "Id": "Id", "Identifiers": "Identifikatorer", "Active": "Aktiv", "yes": "ja", "no": "nei",
    "More organisations exist than are shown here.":
        "Det finnes flere virksomheter enn de som vises her.",
    "No organisations yet (hub org add).": "Ingen virksomheter ennå (hub org add).",
    "Clients": "Klienter", "Client id": "Klient-id",
    "No clients yet (hub client add).": "Ingen klienter ennå (hub client add).",
    "Users": "Brukere",
    "Who has received and read what about you": "Hvem har fått og lest hva om deg",
    "About this copy": "Om denne kopien",
    "This is a copy of what CareHub has recorded about who has received or read information "
    "about you, when, and on what basis. CareHub passes messages between Jæren DPS and the "
    "municipalities; every time information about you is shared or held back, it is written "
    "down in a log that cannot be changed afterwards.": "Dette er en kopi av det CareHub har "
    "registrert om hvem som har fått eller lest opplysninger om deg, når, og på hvilket "
    "grunnlag. CareHub formidler meldinger mellom Jæren DPS og kommunene; hver gang "
    "opplysninger om deg blir delt eller holdt tilbake, skrives det i en logg som ikke kan "
    "endres i ettertid.",
    "Made": "Laget",
    "Print this page from the browser's menu (Ctrl+P) and give it to the person.":
        "Skriv ut siden fra nettleserens meny (Ctrl+P) og gi den til personen.",
    "Information about you that was shared or held back":
        "Opplysninger om deg som ble delt eller holdt tilbake",
    "Who": "Hvem", "Shared?": "Delt?", "Why": "Hvorfor",
    "They read your records": "De leste opplysningene dine", "No, held back": "Nei, holdt tilbake",
    "Partly": "Delvis", "Yes": "Ja", "Your consent": "Ditt samtykke",
    "The law allows it": "Loven gir adgang", "No consent or law allows it":
        "Verken samtykke eller lov gir adgang",
    "They asked to read your records": "De ba om å lese opplysningene dine",
    "They hold records about you, so they may see who you are":
        "De har opplysninger om deg, og kan derfor se hvem du er",
    "They take part in the task": "De er part i oppgaven",
    "An answer to what they sent": "Et svar på noe de sendte",
    "It was their own information": "Det var deres egne opplysninger",
    "No basis was recorded": "Intet grunnlag er registrert",
    "Holds records about the person": "Har opplysninger om personen",
    "A party to the task": "Part i oppgaven",
    "An answer to what the recipient sent": "Et svar på det mottakeren sendte",
    "The recipient's own records": "Mottakerens egne opplysninger",
    "No basis recorded": "Grunnlag ikke registrert",
    "%(n)d of the newest %(m)d of this person's %(total)d records fail the check: they were "
    "changed after they were written.":
        "%(n)d av de nyeste %(m)d av personens %(total)d oppføringer består ikke kontrollen: "
        "de er endret etter at de ble skrevet.",
    "The newest %(m)d of this person's %(total)d disclosure records are intact: hash and "
    "signature checked.":
        "De nyeste %(m)d av personens %(total)d utleveringsoppføringer er uendret: hash og "
        "signatur er kontrollert.",
    "The older ones are not checked here: `hub audit verify` checks the whole trail.":
        "De eldre er ikke kontrollert her: `hub audit verify` kontrollerer hele loggen.",
    "Only the newest %(n)d matching records are shown below; older ones are left out (the "
    "person has %(total)d disclosure records in all). The CSV and FHIR Bundle exports hold "
    "every record.":
        "Bare de nyeste %(n)d oppføringene som passer, vises nedenfor; eldre er utelatt "
        "(personen har %(total)d utleveringsoppføringer i alt). CSV- og FHIR Bundle-eksporten "
        "har alle oppføringene.",
    "This copy shows only the newest %(n)d of the %(total)d entries about you; the older ones "
    "are left out. Ask for them, and you will get them all.":
        "Denne kopien viser bare de nyeste %(n)d av de %(total)d oppføringene om deg; de eldre "
        "er utelatt. Spør etter dem, så får du alle.",
    "The CSV export of the disclosure log holds every entry.":
        "CSV-eksporten av utleveringsloggen har alle oppføringene.",
    "Nothing about you has been shared with anyone through CareHub.":
        "Ingenting om deg er delt med noen gjennom CareHub.",
    "Your consents": "Dine samtykker",
    "You consented to sharing with": "Du samtykket til deling med",
    "No longer valid: sharing with": "Gjelder ikke lenger: deling med", "nobody": "ingen",
    "recorded by %(org)s": "registrert av %(org)s",
    "You have not given any consent through CareHub.":
        "Du har ikke gitt noe samtykke gjennom CareHub.",
    "You can withdraw a consent at any time by telling your coordinator. If you think "
    "information about you has been shared wrongly, you may ask for it to be corrected and "
    "complain to the Norwegian Board of Health Supervision (Statsforvalteren).":
        "Du kan når som helst trekke tilbake et samtykke ved å si fra til koordinatoren din. "
        "Mener du at opplysninger om deg er delt feil, kan du be om retting og klage til "
        "Statsforvalteren.",
    "Pending transitions": "Overganger som venter",
    "The pending transitions of your patients: what your organisation has to answer or "
    "follow up. You see only patients who have consented to sharing with your organisation, "
    "or whom your organisation sent messages about. Open a patient's name for their page.":
        "Overgangene som venter for pasientene dine: det virksomheten din må svare på eller "
        "følge opp. Du ser bare pasienter som har samtykket til deling med virksomheten din, "
        "eller som virksomheten din har sendt meldinger om. Åpne et navn for pasientens side.",
    "Show only patients named": "Vis bare pasienter som heter",
    "Show all": "Vis alle",
    "Contact the patient and report the contact.":
        "Kontakt pasienten og meld fra om kontakten.",
    "The pending transitions of your patients appear here once your organisation is set.":
        "Overgangene for pasientene dine vises her når virksomheten din er satt.",
    "Follow-up after discharge": "Oppfølging etter utskrivning",
    "Overdue checks first, then those due next.":
        "Forsinkede kontroller først, deretter de som forfaller snart.",
    "Check": "Kontroll", "Due": "Frist", "Responsible": "Ansvarlig", "State": "Status",
    "Overdue": "Forsinket", "Open": "Åpen",
    "No open follow-up checks.": "Ingen åpne oppfølgingskontroller.",
    "Discharges being planned": "Utskrivninger som planlegges",
    "Planned discharge": "Planlagt utskrivning", "From": "Fra", "To": "Til",
    "Answer": "Svar", "Waiting for %(org)s to answer": "Venter på svar fra %(org)s",
    "The message never reached them:": "Meldingen kom aldri fram:",
    "see messages that could not be delivered": "se meldinger som ikke kunne leveres",
    "Accepted: can receive from": "Godtatt: kan ta imot fra",
    "No discharges are being planned.": "Ingen utskrivninger planlegges.",
    "Self-admission requests waiting for an answer":
        "Forespørsler om brukerstyrt innleggelse som venter på svar",
    "Stay from": "Opphold fra", "Stay to": "Opphold til", "Asked": "Spurt",
    "No self-admission requests are waiting.":
        "Ingen forespørsler om brukerstyrt innleggelse venter.",
    "Meetings ahead": "Kommende møter", "Patient's answer": "Pasientens svar",
    "What the patient wants raised": "Hva pasienten vil ta opp",
    "No meetings are booked ahead.": "Ingen møter er avtalt framover.",
    "Flags on your patients": "Varsler på pasientene dine", "Newest first.": "Nyeste først.",
    "Flag": "Varsel", "Since": "Siden", "Set by": "Satt av",
    "CareHub, automatically": "CareHub, automatisk", "No active flags.": "Ingen aktive varsler.",
    "Messages that could not be delivered": "Meldinger som ikke kunne leveres",
    "The message is queued again; the hub sends it shortly.":
        "Meldingen står i kø igjen; huben sender den snart.",
    "The hub stopped trying to deliver these messages, newest first. Once the receiving "
    "system works again, send them again.": "Huben har sluttet å prøve å levere disse "
    "meldingene, nyeste først. Send dem på nytt når mottakersystemet virker igjen.",
    "Attempts": "Forsøk", "Last error": "Siste feil", "Queued": "Satt i kø",
    "Action": "Handling", "what it holds up": "hva den holder igjen",
    "Send again: %(event)s to %(receiver)s": "Send på nytt: %(event)s til %(receiver)s",
    "Send again": "Send på nytt",
    "Every message has been delivered or is on its way.":
        "Alle meldinger er levert eller på vei.",
    "Not shown to you": "Vises ikke for deg",
    "This person is not shown to you: there is no consent to share with your organisation, "
    "and your organisation has sent nothing about them.": "Denne personen vises ikke for "
    "deg: det finnes ikke samtykke til deling med virksomheten din, og virksomheten din har "
    "ikke sendt noe om personen.",
    "Go through this page together with the person. It shows only what your organisation "
    "may see.": "Gå gjennom siden sammen med personen. Den viser bare det virksomheten din "
    "har lov til å se.",
    "The person took part in making the plan.": "Personen var med på å lage planen.",
    "The plan does not record that the person took part.":
        "Planen viser ikke at personen var med.",
    "Goals": "Mål", "in the person's own words": "med personens egne ord",
    "Who works with the person": "Hvem som arbeider med personen",
    "No individual plan is shared with your organisation.":
        "Ingen individuell plan er delt med virksomheten din.",
    "The person's answer": "Personens svar",
    "What the person wants raised": "Hva personen vil ta opp",
    "Who may receive what": "Hvem som kan få hva",
    "The person consents to": "Personen samtykker til",
    "No longer valid: the person consented to": "Gjelder ikke lenger: personen samtykket til",
    "making an individual plan, shared with": "å lage individuell plan, delt med",
    "sharing information with": "å dele opplysninger med", "only": "bare",
    "but not with": "men ikke med", "with no end date": "uten sluttdato",
    "from": "fra", "to": "til",
    "Recorded by %(org)s.": "Registrert av %(org)s.",
    "No consents that name your organisation.": "Ingen samtykker som nevner virksomheten din.",
    "Self-admission stays and requests": "Brukerstyrte innleggelser og forespørsler",
    "Note": "Merknad", "No self-admission stays or requests.":
        "Ingen brukerstyrte innleggelser eller forespørsler.",
    "No follow-up checks.": "Ingen oppfølgingskontroller.", "Sign in": "Logg inn",
    "Password": "Passord",
    "Record %(seq)d cannot be read: it was changed after it was written.":
        "Oppføring %(seq)d kan ikke leses: den er endret etter at den ble skrevet.",
    "This entry cannot be read: it was changed after it was written.":
        "Denne oppføringen kan ikke leses: den er endret etter at den ble skrevet.",
}
PLURALS = {
    ("%(num)d follow-up check is overdue.", "%(num)d follow-up checks are overdue."):
        ("%(num)d oppfølgingskontroll er forsinket.", "%(num)d oppfølgingskontroller er "
         "forsinket."),
}
