#!/usr/bin/env python3
"""Google's 2014 Python CCS sample (xmpppy), ported to Python 3 and pointed at the emulator.

The connection code is the sample's own: xmpp.Client('gcm.googleapis.com'), connect with
secure=1 (direct TLS; xmpppy does not check the certificate), client.auth(USERNAME, PASSWORD)
(xmpppy sends SASL PLAIN as authzid SENDER@gcm.googleapis.com, authcid SENDER), a 'message'
handler that acks upstream messages and counts acks and nacks, and client.Process(1) in a
loop. It sends one message, acks every upstream message it gets, and exits 0 once its
message is acked and --upstream upstream messages have arrived (1 on failure, 3 on timeout).

The server key is read from the environment (CCS_SERVER_KEY), never from the command line.
"""

import argparse
import json
import os
import sys
import time

import xmpp

acked = []
upstream = []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sender", required=True)
    parser.add_argument("--message-id", default="sample-1")
    parser.add_argument("--upstream", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()
    password = os.environ.get("CCS_SERVER_KEY")
    if not password:
        print("CCS_SERVER_KEY is not set", file=sys.stderr)
        return 1

    def send(json_dict):
        template = "<message><gcm xmlns='google:mobile:data'>{1}</gcm></message>"
        client.send(xmpp.protocol.Message(
            node=template.format(client.Bind.bound[0], json.dumps(json_dict))))

    def message_callback(session, message):
        gcm = message.getTags('gcm')
        if gcm:
            msg = json.loads(gcm[0].getData())
            if 'message_type' not in msg:
                send({'to': msg['from'], 'message_type': 'ack', 'message_id': msg['message_id']})
                upstream.append(msg['message_id'])
            elif msg['message_type'] == 'ack':
                acked.append(msg['message_id'])
            elif msg['message_type'] == 'nack':
                print("nacked: %s" % msg, file=sys.stderr)
                sys.exit(1)

    client = xmpp.Client('gcm.googleapis.com', debug=[])
    if not client.connect(server=('127.0.0.1', args.port), secure=1, use_srv=False):
        print("connect failed", file=sys.stderr)
        return 1
    if not client.auth(args.sender, password):
        print("Authentication failed!", file=sys.stderr)
        return 1
    client.RegisterHandler('message', message_callback)
    send({'to': 'sample-device', 'message_id': args.message_id, 'data': {'hello': 'world'}})
    deadline = time.monotonic() + args.timeout
    while args.message_id not in acked or len(upstream) < args.upstream:
        if time.monotonic() > deadline:
            print("timed out: acked %s, upstream %s" % (acked, upstream), file=sys.stderr)
            return 3
        client.Process(1)
    # Let the last ack leave, then close the stream.
    client.Process(0)
    client.disconnect()
    print(json.dumps({"acked": acked, "upstream": upstream}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
