"""Runs kosoku (PyPI) with one fix to its Python 3 port of Autobahn's cases 12 and 13.

Those cases hash every echoed message (`hashlib.sha1().update(msg)`) and then
`msg.decode('utf-8')` it: Autobahn ran on Python 2, where a text message was a byte
string. kosoku 0.1.0 hands an *uncompressed* text message to the case as `str` (a
compressed one as `bytes`), so the case raises "Strings must be encoded before hashing"
and is reported ERROR whatever the server sent. An uncompressed message is allowed in a
deflate session (RFC 7692 §6: per message). This wrapper gives the cases a `str`
message as its UTF-8 bytes (what Python 2 did); nothing else changes: the verdicts are
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
            msg = msg.encode("utf-8")
        return on_message(self, msg, binary)

    return wrapped


for case in case12_x_x.Case12_X_X + case12_x_x.Case13_X_X:
    case.onMessage = _as_bytes(case.onMessage)

sys.exit(main())
