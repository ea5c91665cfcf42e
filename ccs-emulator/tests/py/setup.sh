#!/usr/bin/env bash
# Installs the third-party XMPP client (slixmpp) used by ccs-emulator's python_client test.
# Without it that test prints a note and passes without running the client.
set -euo pipefail
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check slixmpp
python3 -c "import slixmpp; print('slixmpp', slixmpp.__version__)"
