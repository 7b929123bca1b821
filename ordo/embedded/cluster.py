"""A JetStream cluster of embedded nats-servers on loopback (`ordo up --cluster N`, fault tests).

Ports are chosen once and kept in `<data_dir>/cluster.json`, so a node restarted later (or a whole
restart of `ordo up`) rejoins the same routes with its own store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ordo.embedded.nats import EmbeddedNats, NatsServerConfig
from ordo.embedded.processes import free_port

CLUSTER_NAME = "ordo"


@dataclass(frozen=True)
class NodePorts:
    client: int
    cluster: int


def _load_ports(data_dir: Path, size: int) -> list[NodePorts]:
    path = data_dir / "cluster.json"
    if path.exists():
        saved = [NodePorts(**p) for p in json.loads(path.read_text())]
        if len(saved) == size:
            return saved
    ports = [NodePorts(free_port(), free_port()) for _ in range(size)]
    path.write_text(json.dumps([p.__dict__ for p in ports]))
    return ports


class EmbeddedCluster:
    """`size` nats-servers forming one JetStream cluster; node i is named `n<i+1>`.

    By default every node listens on loopback. `hosts[i]` makes node i listen (clients and routes) on
    that address instead, and `netns[i]` runs it inside that network namespace (the partition test);
    routes use each node's own address.
    """

    def __init__(
        self,
        data_dir: Path,
        size: int = 3,
        sync_always: bool = False,
        authorization: str = "",
        hosts: Sequence[str] | None = None,
        netns: Sequence[str | None] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("cluster size must be >= 1")
        hosts = list(hosts) if hosts is not None else ["127.0.0.1"] * size
        namespaces = list(netns) if netns is not None else [None] * size
        if len(hosts) != size or len(namespaces) != size:
            raise ValueError("hosts and netns need one entry per node")
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        ports = _load_ports(data_dir, size)
        routes = tuple(f"nats-route://{h}:{p.cluster}" for h, p in zip(hosts, ports, strict=True))
        self.nodes = [
            EmbeddedNats(
                NatsServerConfig(
                    data_dir=data_dir / f"n{i + 1}",
                    host=hosts[i],
                    port=p.client,
                    sync_always=sync_always,
                    cluster_name=CLUSTER_NAME,
                    cluster_port=p.cluster,
                    routes=tuple(r for j, r in enumerate(routes) if j != i),
                    server_name=f"n{i + 1}",
                    authorization=authorization,
                    netns=namespaces[i],
                )
            )
            for i, p in enumerate(ports)
        ]

    @property
    def url(self) -> str:
        """All client URLs, comma-separated (the form ORDO_NATS_URL accepts)."""
        return ",".join(node.url for node in self.nodes)

    def node(self, server_name: str) -> EmbeddedNats:
        return next(n for n in self.nodes if n.config.server_name == server_name)

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
