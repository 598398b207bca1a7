#!/usr/bin/env bash
# Install the comparison peers: the Node.js peers' npm dependencies (lockfiles are committed:
# npm ci), and for the nchan peer Debian's libnginx-mod-nchan (with nginx) when missing.
# `install.sh nchan` installs only that one.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
install_nchan() {
  if [[ -x /usr/sbin/nginx && -f /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
    echo "nchan: $(/usr/sbin/nginx -v 2>&1), libnginx-mod-nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?') already installed"
    return
  fi
  echo "== nchan (apt-get install -y libnginx-mod-nchan)"
  local sudo=()
  [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get install -y libnginx-mod-nchan
}
if [[ "${1:-}" == nchan ]]; then
  install_nchan
  exit 0
fi
install_nchan
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
