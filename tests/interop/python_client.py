"""A client of the service written with Python's `websockets` library, as an application
would use it: its default permessage-deflate offer, messages compressed by the library.

Usage: python_client.py WS_URL ASSET_ID
Prints one JSON object: the negotiated extension, whether the history over the
compressed connection equals one received plain in the same second, and the live points.
"""

import json
import sys

from websockets.sync.client import connect


def subscribe(ws, asset_id):
    ws.send(json.dumps({"action": "subscribe", "message": {"assetId": asset_id}}))
    while True:
        reply = json.loads(ws.recv(timeout=10))
        if reply["action"] == "asset_history":
            return reply["message"]["points"]


def main():
    url, asset_id = sys.argv[1], int(sys.argv[2])
    with connect(url) as compressed, connect(url, compression=None) as plain:
        extension = compressed.response.headers.get("Sec-WebSocket-Extensions")
        # Both histories of one second: subscribe again if a tick fell between them.
        for _ in range(5):
            history = subscribe(compressed, asset_id)
            reference = subscribe(plain, asset_id)
            if history and reference and history[-1]["time"] == reference[-1]["time"]:
                break
        points = []
        while len(points) < 2:
            reply = json.loads(compressed.recv(timeout=10))
            if reply["action"] == "point":
                points.append(reply["message"])
    print(json.dumps({
        "extension": extension,
        "history_points": len(history),
        "history_equal": history == reference,
        "history_last": history[-1]["time"] if history else None,
        "live": [p["time"] for p in points],
        "asset": points[0]["assetId"],
    }))


main()
