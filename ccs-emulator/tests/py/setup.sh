#!/usr/bin/env bash
# Installs the third-party XMPP clients (slixmpp, xmpppy) used by ccs-emulator's python_client test.
# Without them those tests print a note and pass without running the client.
set -euo pipefail
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check slixmpp xmpppy
python3 -c "import slixmpp, xmpp; print('slixmpp', slixmpp.__version__, 'and xmpppy installed')"
