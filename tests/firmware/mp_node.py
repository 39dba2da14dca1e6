# Runs under the MicroPython unix port (see test_mqtt.py): a node that takes a reading every 50 ms and sends
# it through the store-and-forward sender; it prints what it did, one line per event.
import sys

import hal
from mqtt import MQTTClient
from ringfile import RingFile
from sender import Sender

host, port, state, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
client = MQTTClient("node-7", host, port, keepalive=10)
client.set_last_will("ce/v1/riverside/node-7/state", b'{"status":"offline"}', retain=True)
sender = Sender(client, RingFile(state + "/ring", slots=64, slot=128), backoff_ms=(100, 400))
i = 0
next_reading = hal.ticks_ms()
while i < n or len(sender.ring):
    if i < n and hal.ticks_diff(hal.ticks_ms(), next_reading) >= 0:
        sender.send("ce/v1/riverside/node-7/tele", '{"n":%d}' % i)
        print("reading", i, "connected" if client.connected else "offline")
        i += 1
        next_reading = hal.ticks_add(next_reading, 50)
    sender.service(5)
print("done sent", sender.sent, "reconnects", sender.reconnects, "dropped", sender.ring.dropped)
client.disconnect()
