"""Runs kosoku (PyPI) with one fix to its Python 3 port of Autobahn's cases 12 and 13.

Those cases hash every echoed message (`hashlib.sha1().update(msg)`) and then
`msg.decode('utf-8')` it: Autobahn ran on Python 2, where a text message was a byte
string. kosoku 0.1.0 hands an *uncompressed* message in a deflate session to the case as
a `str` of one code point per byte (text or binary; a compressed one comes as `bytes`),
so the case raises "Strings must be encoded before hashing" (ERROR), or, past that,
measures a mangled length (FAILED), whatever the server sent. An uncompressed message
is allowed in a deflate session (RFC 7692 §6: per message). This wrapper gives the cases such a `str`
message back as its bytes (what Python 2 had); nothing else changes: the verdicts are
the cases' own. Usage: python3 scripts/lib/kosoku-compat.py [kosoku arguments]
"""

import sys

import kosoku.cases  # noqa: F401  (puts the vendored cases on sys.path, imports them)
from kosoku._cli import main

# kosoku imports the vendored case files as top-level modules.
case12_x_x = sys.modules["case12_x_x"]


def _as_bytes(on_message):
    def wrapped(self, msg, binary):
        if isinstance(msg, str):
            # kosoku builds that str byte for byte (each byte one code point, as
            # latin-1 does), binary or text; latin-1 gives the bytes back. A str with a
            # code point past 0xFF was decoded properly: its UTF-8 is the message.
            try:
                msg = msg.encode("latin-1")
            except UnicodeEncodeError:
                msg = msg.encode("utf-8")
        return on_message(self, msg, binary)

    return wrapped


for case in case12_x_x.Case12_X_X + case12_x_x.Case13_X_X:
    case.onMessage = _as_bytes(case.onMessage)

sys.exit(main())
