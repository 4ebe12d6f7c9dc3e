"""paho-mqtt clients configured for the local mutual-TLS broker (used where many light clients
or a privileged watcher are needed; the baselines and the agent use AWSIoTPythonSDK)."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt

from bench.sdk import Connection


def tls_client(connection: Connection, client_id: str) -> mqtt.Client:
    """A paho client (callback API 2) using the connection's CA, certificate and key."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.tls_set(ca_certs=connection.root_ca, certfile=connection.certificate,
                   keyfile=connection.private_key, tls_version=ssl.PROTOCOL_TLSv1_2)
    return client
