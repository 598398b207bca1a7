#!/usr/bin/env bash
# Install the comparison peers' npm dependencies (lockfiles are committed: npm ci).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for peer in node-ws uws; do
  echo "== $peer"
  cd "$here/$peer"
  if [[ -f package-lock.json ]]; then
    npm ci --no-audit --no-fund
  else
    npm install --no-audit --no-fund
  fi
done
# The uWS peer must run on the native binary, never the package's pure-JS fallback.
cd "$here/uws"
node -e '
const dir = require("path").dirname(require.resolve("@trufflesuite/uws-js-unofficial/package.json"));
const f = `${dir}/binaries/uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
require(f);
console.log(`uws: native binary OK (${require("path").basename(f)}, Node ${process.version})`);
'
