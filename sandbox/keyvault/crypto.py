"""Key Vault data plane: the cryptographic operations (wrap/unwrap, encrypt/decrypt) on a key version."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from sandbox.keyvault.common import (
    _N,
    _V,
    ROUTER,
    _b64url,
    _bad,
    _forbidden,
    _live_key,
    _unb64url,
    _vault,
    _version,
    key_id,
)
from sandbox.wire import Request, Response, json_response

if TYPE_CHECKING:
    from sandbox.world import World

# ---- cryptographic operations ----------------------------------------------------------------

def _oaep_sha1() -> padding.AsymmetricPadding:
    # RSA-OAEP is defined by JWA (RFC 7518) with SHA-1; the sandbox must match what clients send.
    sha1 = hashes.SHA1()  # noqa: S303 - RSA-OAEP is SHA-1 by definition; nothing here protects data
    return padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None)


def _oaep_sha256() -> padding.AsymmetricPadding:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


_PADDINGS: dict[str, Callable[[], padding.AsymmetricPadding]] = {
    "RSA-OAEP": _oaep_sha1,
    "RSA-OAEP-256": _oaep_sha256,
    "RSA1_5": padding.PKCS1v15,
}
# The public half of each pair is refused outside the nbf/exp window; the private half still
# works there so data protected while the key was valid stays recoverable (Key Vault docs).
_OPS = {
    "wrapkey": ("wrapKey", True),
    "encrypt": ("encrypt", True),
    "unwrapkey": ("unwrapKey", False),
    "decrypt": ("decrypt", False),
}


@ROUTER.route("POST", rf"/keys/{_N}/{_V}/(?P<op>wrapkey|unwrapkey|encrypt|decrypt)")
def _crypto(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    name = m["name"]
    key = _live_key(vault, name)
    kv = _version(key, m["version"], name)
    op, public = _OPS[m["op"].lower()]
    body = req.json_object()
    alg = body.get("alg")
    if alg not in _PADDINGS:
        raise _bad(f"Invalid algorithm: {alg}. Use RSA-OAEP, RSA-OAEP-256 or RSA1_5.")
    value = _unb64url(body.get("value"), "value")
    if not kv.enabled:
        raise _forbidden(f"Operation {op} is not allowed on a disabled key.", "KeyDisabled")
    if op not in kv.key_ops:
        raise _forbidden(f"Operation {op} is not permitted on this key.", "KeyOperationForbidden")
    now = world.now_ts()
    if public and kv.nbf is not None and now < kv.nbf:
        raise _forbidden(f"Operation {op} is not allowed before the key's activation date.", "KeyNotYetValid")
    if public and kv.exp is not None and now >= kv.exp:
        raise _forbidden(f"Operation {op} is not allowed on an expired key.", "KeyExpired")
    pad = _PADDINGS[str(alg)]()
    if public:
        try:
            result = kv.private_key.public_key().encrypt(value, pad)
        except ValueError as err:
            raise _bad(f"The value is too long for {alg} with a {kv.size}-bit key.") from err
    else:
        try:
            result = kv.private_key.decrypt(value, pad)
        except ValueError as err:
            raise _bad(f"Operation {op} failed: the value could not be decrypted with {alg}.") from err
    kid = key_id(world, vault.name, key.name, kv.version)
    return json_response(200, {"kid": kid, "value": _b64url(result)})


