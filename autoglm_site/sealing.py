"""Secrets the server must read back (a webhook's signing secret, an answer kept for an
Idempotency-Key) are stored sealed: Fernet, under a key derived from SECRET_KEY and what the
secret is for, so a database or Redis dump alone reads nothing. Changing SECRET_KEY makes what
was sealed under the old one unreadable: webhook secrets must then be issued again."""

import base64
import hmac

from cryptography.fernet import Fernet
from django.conf import settings


def sealer(purpose: str) -> Fernet:
    material = hmac.new(settings.SECRET_KEY.encode(), purpose.encode(), "sha256")
    return Fernet(base64.urlsafe_b64encode(material.digest()))


def seal(purpose: str, text: str) -> str:
    return sealer(purpose).encrypt(text.encode()).decode()


def unseal(purpose: str, token: str) -> str:
    return sealer(purpose).decrypt(token.encode()).decode()
