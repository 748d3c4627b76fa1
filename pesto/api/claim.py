"""Claim codes, sealed tokens and the approval email for token requests.

A visitor who asks for a token gets a claim code C (256 random bits), shown
once. The database keeps only sha256(C) (to find the request) and an X25519
public key derived from C. When the operator approves, `pesto token approve`
makes a fresh token and seals it to that public key (ephemeral X25519 key
agreement + ChaCha20-Poly1305, the "sealed box" construction); the token's
own row keeps only its hash, as every token's does. Only someone holding C
can open the sealed copy, and the claim route drops it from the database as
it hands it over. So a copy of the database alone never yields a token or a
claim code.
"""

from __future__ import annotations

import email.message
import hashlib
import logging
import secrets
import smtplib
import ssl
import urllib.parse

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

log = logging.getLogger("pesto.api")

CLAIM_PREFIX = "claim_"
_RAW = (Encoding.Raw, PublicFormat.Raw)
# The key is used for exactly one message (fresh ephemeral key each time), so
# a fixed nonce is safe.
_NONCE = bytes(12)


def new_claim_code() -> str:
    return CLAIM_PREFIX + secrets.token_urlsafe(32)


def claim_hash(code: str) -> str:
    """What the store keeps of a claim code (and looks requests up by)."""
    return hashlib.sha256(b"pesto-claim-lookup\0" + code.encode("utf-8", "surrogateescape")).hexdigest()


def _private_key(code: str) -> X25519PrivateKey:
    # A different domain than claim_hash: the stored hash says nothing about the key.
    seed = hashlib.sha256(b"pesto-claim-key\0" + code.encode("utf-8", "surrogateescape")).digest()
    return X25519PrivateKey.from_private_bytes(seed)


def public_key(code: str) -> bytes:
    """The 32-byte public key stored with a request, to seal its token to."""
    return _private_key(code).public_key().public_bytes(*_RAW)


def _box_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return hashlib.sha256(b"pesto-claim-box\0" + shared + ephemeral + recipient).digest()


def seal(token: str, recipient: bytes) -> bytes:
    """Encrypt `token` so that only the holder of the claim code can read it."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(*_RAW)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    key = _box_key(shared, ephemeral_public, recipient)
    return ephemeral_public + ChaCha20Poly1305(key).encrypt(_NONCE, token.encode(), None)


def open_sealed(sealed: bytes, code: str) -> str:
    """The token sealed to `code`'s key. Raises cryptography's InvalidTag on a wrong code."""
    private = _private_key(code)
    recipient = private.public_key().public_bytes(*_RAW)
    ephemeral_public, box = sealed[:32], sealed[32:]
    shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    key = _box_key(shared, ephemeral_public, recipient)
    return ChaCha20Poly1305(key).decrypt(_NONCE, box, None).decode()


def send_token_email(smtp_url: str, sender: str, to: str, name: str, token: str) -> None:
    """Mail a newly issued token. Raises OSError / smtplib.SMTPException on failure.

    smtp_url: smtp://[user:password@]host[:port] (STARTTLS when the server
    offers it), smtps://... (TLS from the start).
    """
    url = urllib.parse.urlsplit(smtp_url)
    if url.scheme not in ("smtp", "smtps") or not url.hostname:
        raise ValueError("smtp_url must be smtp://host[:port] or smtps://host[:port]")
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Your Pesto API token"
    message.set_content(
        f"Hello {name},\n\nyour request for a Pesto API token was approved.\n"
        f"Send this token as the X-Pesto-Token header:\n\n{token}\n\n"
        "Keep it secret; it is not stored anywhere in readable form.\n")
    context = ssl.create_default_context()
    if url.scheme == "smtps":
        client: smtplib.SMTP = smtplib.SMTP_SSL(url.hostname, url.port or 465, timeout=30,
                                                context=context)
    else:
        client = smtplib.SMTP(url.hostname, url.port or 25, timeout=30)
    with client:
        if url.scheme == "smtp":
            client.ehlo()
            if client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
        if url.username:
            client.login(urllib.parse.unquote(url.username),
                         urllib.parse.unquote(url.password or ""))
        client.send_message(message)
