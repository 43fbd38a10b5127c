"""The key bundle of the off-site copy: every repository's Borg key in one object, sealed
with the Borg passphrase (issue 18, decision 0028).

With ``repokey`` a repository holds its own key (protected by the passphrase), so its copy
opens with the passphrase alone, until that one file is damaged; with ``keyfile`` the key
lives only on the backup host. The bundle is what a new backup host needs besides the
passphrase and the copy: ``{name: "BORG_KEY <repository id>\\n..."}``.

Format (bytes)::

    backupd-key-bundle 1\\n
    {"kdf": "scrypt", "n": 131072, "r": 8, "p": 1, "salt": B64, "nonce": B64, "made": ISO}\\n
    AES-256-GCM(JSON {"keys": {...}}), the two lines above as associated data

The key is scrypt(passphrase, salt): without the passphrase the bundle is noise, and any
change to it (a byte, the header, a truncation) fails to open rather than giving a wrong
key.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from backupd.errors import OffsiteError

MAGIC = b"backupd-key-bundle 1\n"
SCRYPT = {"n": 2**17, "r": 8, "p": 1}  # 128 MiB, ~0.3 s: once per copy and per restore
MAX_HEADER = 4096


# cryptography is imported where it is used: the resident daemon loads the jobs' modules
# but runs them in workers, and stays without it (tests/unit/test_layers.py)


def _key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def seal(keys: dict[str, str], passphrase: str, made: str) -> bytes:
    """The bundle of ``keys`` (name → the text of ``borg key export``), made at ``made``
    (ISO time, told again when it is opened)."""
    salt, nonce = os.urandom(16), os.urandom(12)
    header = {"kdf": "scrypt", **SCRYPT, "made": made}
    header |= {"salt": base64.b64encode(salt).decode(), "nonce": base64.b64encode(nonce).decode()}
    head = MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n"
    body = json.dumps({"keys": keys}, sort_keys=True).encode()
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return head + AESGCM(_key(passphrase, salt, **SCRYPT)).encrypt(nonce, body, head)


def made_at(blob: bytes) -> str:
    """When the bundle was made (its header, readable without the passphrase)."""
    return str(_header(blob)[0].get("made", "?"))


def unseal(blob: bytes, passphrase: str) -> dict[str, str]:
    """The keys in the bundle; OffsiteError if it is no bundle, was changed, or the
    passphrase is not the one it was sealed with."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header, head = _header(blob)
    try:
        salt = base64.b64decode(header["salt"])
        nonce = base64.b64decode(header["nonce"])
        params = {k: int(header[k]) for k in ("n", "r", "p")}
        if header["kdf"] != "scrypt" or params["n"] > 2**20 or params["r"] * params["p"] > 64:
            raise ValueError("unknown key derivation")
        body = AESGCM(_key(passphrase, salt, **params)).decrypt(nonce, blob[len(head) :], head)
        keys = json.loads(body)["keys"]
    except InvalidTag:
        raise OffsiteError(
            "the key bundle does not open with this passphrase (or was changed)"
        ) from None
    except (KeyError, ValueError, TypeError) as e:
        raise OffsiteError(f"the key bundle is damaged: {e}") from None
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise OffsiteError("the key bundle is damaged: no keys in it")
    return {str(k): v for k, v in keys.items()}


def _header(blob: bytes) -> tuple[dict[str, Any], bytes]:
    end = blob.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER)
    if not blob.startswith(MAGIC) or end < 0:
        raise OffsiteError("not a backupd key bundle")
    head = blob[: end + 1]
    try:
        header = json.loads(head[len(MAGIC) :])
    except ValueError:
        raise OffsiteError("the key bundle is damaged: its header is not JSON") from None
    if not isinstance(header, dict):
        raise OffsiteError("the key bundle is damaged: its header is not an object")
    return header, head
