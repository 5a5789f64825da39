"""Sending mail over SMTP (the standard library's smtplib), from HUB_SMTP_URL.

    smtp://[user:password@]host[:port]           STARTTLS when the server offers it
    smtp+starttls://[user:password@]host[:port]  STARTTLS required (default port 587)
    smtps://[user:password@]host[:port]          TLS from the start (default port 465)
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import unquote, urlsplit


class Mailer(Protocol):
    """Sends one plain-text e-mail; raises OSError or smtplib.SMTPException on failure."""

    def send(self, to: str, subject: str, text: str) -> None:
        """Hand the e-mail to the mail server."""


class SmtpMailer:
    """A Mailer on the server of an SMTP URL (one connection per e-mail: notices are few)."""

    def __init__(self, url: str, *, sender: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtp+starttls", "smtps") or not parts.hostname:
            raise ValueError("HUB_SMTP_URL must be smtp://, smtp+starttls:// or smtps:// with "
                             "a host")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or {"smtps": 465, "smtp+starttls": 587}.get(parts.scheme, 25)
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout = timeout

    def send(self, to: str, subject: str, text: str) -> None:
        """Send one e-mail. Raises OSError or smtplib.SMTPException."""
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, to, subject
        message.set_content(text)
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.scheme == "smtps":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            smtp.ehlo()
            if self.scheme == "smtp+starttls" or (self.scheme == "smtp"
                                                 and smtp.has_extn("starttls")):
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.user:
                smtp.login(self.user, self.password or "")
            smtp.send_message(message)
