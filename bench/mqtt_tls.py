"""paho-mqtt clients configured for the local mutual-TLS broker (used where many light clients
or a privileged watcher are needed; the baselines and the agent use AWSIoTPythonSDK)."""

from __future__ import annotations

import socket
import ssl

import paho.mqtt.client as mqtt

from bench.sdk import Connection


def _no_delay(_client: mqtt.Client, _userdata: object, sock: socket.socket) -> None:
    # A measuring instrument must not add Nagle's delay (up to 40 ms per exchange on loopback,
    # waiting for the peer's delayed ACK) to the figures it takes.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tls_client(connection: Connection, client_id: str) -> mqtt.Client:
    """A paho client (callback API 2, TCP_NODELAY) using the connection's CA, certificate, key."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.tls_set(ca_certs=connection.root_ca, certfile=connection.certificate,
                   keyfile=connection.private_key, tls_version=ssl.PROTOCOL_TLSv1_2)
    client.on_socket_open = _no_delay
    return client
