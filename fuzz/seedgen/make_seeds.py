#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/<target>/ from the examples of the seed page
(/work/shared/seeds/001_*.txt: the CCS documentation's XML and JSON) and hand-written stream
transcripts of the ccs-proto tests. Run from fuzz/: python3 seedgen/make_seeds.py PAGE"""
import base64, glob, hashlib, html, json, os, re, sys

page = open(sys.argv[1], encoding="utf-8").read()
blocks = [html.unescape(re.sub(r"<[^>]+>", "", b)).strip()
          for b in re.findall(r"<pre[^>]*>(.*?)</pre>", page, re.S)]
xml = [b for b in blocks if b.startswith("<")]
js = []
for b in blocks:
    for t in ([b] if b.startswith("{") else re.findall(r"(\{.*\})\s*</gcm>", b, re.S)):
        js.append(t)

HEADER = (b"<stream:stream from='gcm.googleapis.com' id='A1' version='1.0' "
          b"xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>")
GCM = '<message><gcm xmlns="google:mobile:data">{}</gcm></message>'
ours = [
    '{"message_type":"ack","message_id":"m-0","from":"x"}',
    '{"message_type":"nack","message_id":"m-1","error":"BAD_REGISTRATION"}',
    '{"message_type":"control","control_type":"CONNECTION_DRAINING"}',
    '{"from":"d","message_id":"u","category":"c","data":{"a":"b"},"time_to_live":"86400"}',
    '{"message_type":"receipt","message_id":"dr2:m-0","from":"gcm.googleapis.com",'
    '"category":"c","data":{"message_status":"MESSAGE_SENT_TO_DEVICE",'
    '"original_message_id":"m-0","device_registration_id":"t"}}',
]
down = [
    '{"to":"t","message_id":"m-1","data":{"k":"v"},"time_to_live":600,"priority":"high",'
    '"delivery_receipt_requested":true}',
    '{"condition":"\'a\' in topics","message_id":"m-2","notification":{"title":"x"}}',
    '{"to":"d","message_id":"u","message_type":"ack"}',
]
stanzas = [GCM.format(j) for j in ours] + [
    "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    "<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    "<jid>123456789012@gcm.googleapis.com/r</jid></bind></iq>",
    "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
    "<mechanism>PLAIN</mechanism></mechanisms></stream:features>",
    "<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
    "<message id='x' type='error'><error type='cancel'><bad-request "
    "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
]
payload = base64.b64encode(b"\x00123456789012@gcm.googleapis.com\x00test-key").decode()
client_header = ('<stream:stream to="gcm.googleapis.com" version="1.0" '
                 'xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams">')
client_stream = (client_header
                 + '<auth mechanism="PLAIN" xmlns="urn:ietf:params:xml:ns:xmpp-sasl">'
                 + payload + "</auth>" + client_header
                 + '<iq type="set" id="b1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/></iq>')

def write(target, items):
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    for it in items:
        b = it.encode() if isinstance(it, str) else it
        open(os.path.join(d, "seed-" + hashlib.sha1(b).hexdigest()[:12]), "wb").write(b)

P = b"\x3f"  # piece size 64
write("framer", [P + HEADER + b"".join(s.encode() for s in stanzas[:3]) + b" </stream:stream>",
                 b"\x00" + HEADER + stanzas[5].encode(),
                 b"\x07<?xml version='1.0'?>" + HEADER + b"  " + stanzas[7].encode()]
      + [P + HEADER + x.encode() for x in xml[:4]])
write("stanza", stanzas + [x for x in xml if not x.startswith("<stream:stream")][:4])
write("incoming_json", ours + js[:6])
write("downstream_json", down + js[:3])
write("connection_input", [b"\x02\x3f" + "".join(stanzas[:5]).encode(),
                           b"\x01\x05" + stanzas[0].encode() + stanzas[5].encode(),
                           b"\x00\x3f" + stanzas[8].encode() + b"</stream:stream>"])
write("server_input", [P + client_stream.encode(),
                       b"\x03" + client_stream.encode() + GCM.format(down[0]).encode(),
                       P + client_stream.encode() + GCM.format(down[2]).encode()
                       + b"</stream:stream>"])
# client_ops: [shape] then ops (0 send n, 1 ack i, 2 nack i c, 3 inject c len bytes,
# 4 kill i, 5 drain i, 6 advance n, 7 drive).
inj = GCM.format(ours[3]).encode()
write("client_ops", [bytes([6, 0, 3, 7, 1, 0, 1, 1, 7]),
                     bytes([1, 0, 5, 7, 2, 0, 1, 4, 0, 7, 6, 40]),
                     bytes([7, 0, 7, 5, 0, 7, 6, 200, 1, 0, 7]),
                     bytes([2, 0, 2, 7, 3, 0, len(inj)]) + inj + bytes([7, 6, 255, 6, 255])])
print(len(xml), "xml and", len(js), "json examples on the page")
