#!/usr/bin/env python3
"""An unmodified third-party XMPP client (slixmpp) speaking CCS to the emulator.

Connects with direct TLS (no STARTTLS), trusting only the given CA file, authenticates with
SASL PLAIN as SENDER@gcm.googleapis.com, sends one downstream message as Google's samples
did (<message><gcm xmlns="google:mobile:data">{json}</gcm></message>) and waits for CCS's
ack. Exit status: 0 acked, 1 nacked or other failure, 2 authentication failed, 3 timed out.

The server key is read from the environment (CCS_SERVER_KEY), never from the command line.
"""

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from xml.sax.saxutils import escape

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

GCM = "google:mobile:data"


class GcmClient(slixmpp.ClientXMPP):
    def __init__(self, jid, key, to, message_id):
        super().__init__(jid, key, sasl_mech="PLAIN")
        self.to = to
        self.message_id = message_id
        self.outcome = None
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("failed_all_auth", self.on_failed_auth)
        self.register_handler(
            Callback("gcm", MatchXPath("{jabber:client}message/{%s}gcm" % GCM), self.on_gcm)
        )

    async def on_session_start(self, _event):
        payload = json.dumps(
            {"to": self.to, "message_id": self.message_id, "data": {"hello": "world"}}
        )
        self.send_raw(
            '<message id="%s"><gcm xmlns="%s">%s</gcm></message>'
            % (escape(self.message_id, {'"': "&quot;"}), GCM, escape(payload))
        )

    def on_failed_auth(self, _event):
        self.outcome = ("auth", None)
        self.disconnect()

    def on_gcm(self, msg):
        gcm = msg.xml.find("{%s}gcm" % GCM)
        body = json.loads(gcm.text or "{}")
        if body.get("message_id") != self.message_id:
            return
        if body.get("message_type") in ("ack", "nack"):
            self.outcome = (body["message_type"], body)
            self.disconnect()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True, help="PEM file of the certificate to trust")
    parser.add_argument("--sender", required=True)
    parser.add_argument("--to", default="python-device")
    parser.add_argument("--message-id", default="py-1")
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()
    key = os.environ.get("CCS_SERVER_KEY")
    if not key:
        print("CCS_SERVER_KEY is not set", file=sys.stderr)
        return 1

    client = GcmClient(f"{args.sender}@gcm.googleapis.com", key, args.to, args.message_id)
    client.enable_direct_tls = True
    client.enable_starttls = False
    client.enable_plaintext = False
    client.ca_certs = Path(args.ca)
    client.connect(args.host, args.port)
    loop = asyncio.get_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(client.disconnected, args.timeout))
    except asyncio.TimeoutError:
        print("timed out waiting for the ack", file=sys.stderr)
        return 3
    kind, body = client.outcome or (None, None)
    if kind == "ack":
        print(json.dumps(body))
        return 0
    if kind == "auth":
        print("authentication failed", file=sys.stderr)
        return 2
    print(f"no ack: {kind} {body}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
