"""What keeps Docker staging from touching production, beyond Docker's internal network.

1. Fast-failing DNS. On an internal network Docker's embedded resolver does not answer names it
   does not know: every outside lookup stalls (10 s with glibc's defaults, measured on Engine
   20.10), which is how a restored WordPress spent its HTTP timeout asking for api.wordpress.org.
   Staging containers get a read-only /etc/resolv.conf naming only their own loopback (nothing
   listens there: the lookup fails at once, measured < 10 ms) and an /etc/hosts entry for every
   staging service, at static addresses on the run's network.
2. The backup host's own addresses. Packets from a container to the host are INPUT, not FORWARD,
   traffic, so Docker's internal network does not stop them: staging could open connections to a
   production database or web server listening on the host. Where backupctl runs as root with
   iptables, it inserts one INPUT rule per run rejecting new connections that arrive from the
   run's bridge (replies to the host's own connections, e.g. HTTP checks, still pass) and
   removes it on teardown or `drill cleanup`. Elsewhere it says so, loudly, in the drill output.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

from docker.errors import APIError
from docker.types import IPAMConfig, IPAMPool

from backupctl.core import runner
from backupctl.errors import JobFailed

log = logging.getLogger("backupctl.staging.isolation")

RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
RULE_COMMENT = "backupctl-staging:"  # + run id: how teardown and cleanup find a run's rule
FIRST_HOST = 10  # service addresses start here in the run's subnet (.1 is the host's bridge)


def create_network(client: Any, name: str, labels: dict[str, str], bridge: str) -> tuple[Any, Any]:
    """An internal bridge network with a subnet of its own, so services get static addresses.

    Docker picks a free subnet for a first network, which is then recreated with that subnet
    declared (static addresses need a declared one). Returns (network, IPv4Network).
    """
    options = {"com.docker.network.bridge.name": bridge}
    try:
        probe = client.networks.create(name, driver="bridge", internal=True, labels=labels, options=options)
        probe.reload()
        subnet = ipaddress.ip_network(probe.attrs["IPAM"]["Config"][0]["Subnet"])
        probe.remove()
        pool = IPAMPool(subnet=str(subnet), gateway=str(subnet.network_address + 1))
        network = client.networks.create(
            name,
            driver="bridge",
            internal=True,  # no route off the bridge: staging never talks to the real world
            labels=labels,
            options=options,
            ipam=IPAMConfig(pool_configs=[pool]),
            check_duplicate=True,
        )
    except (APIError, KeyError, IndexError, ValueError) as error:
        explanation = getattr(error, "explanation", None) or error
        raise JobFailed(f"cannot create network {name}: {explanation}") from None
    return network, subnet


def resolv_conf(run_id: str) -> Path:
    """Write this run's resolv.conf (world-readable, mounted read-only) and return its path."""
    path = Path(tempfile.gettempdir()) / f"backupctl-staging-{run_id}-resolv.conf"
    path.write_text(RESOLV_CONF)
    path.chmod(0o644)
    return path


def remove_resolv_conf(run_id: str | None) -> None:
    """Remove one run's resolv.conf, or every run's when `run_id` is None."""
    directory = Path(tempfile.gettempdir())
    pattern = f"backupctl-staging-{run_id or '*'}-resolv.conf"
    for path in directory.glob(pattern):
        path.unlink(missing_ok=True)


def close_host(run_id: str, bridge: str) -> str | None:
    """Reject new connections from the run's bridge to this host. None when the rule is in
    place, else the warning to show (not root, no iptables, the rule refused)."""
    iptables = shutil.which("iptables")
    if os.geteuid() != 0 or iptables is None:
        why = "not running as root" if os.geteuid() != 0 else "iptables is not installed"
        return (
            f"STAGING CAN REACH SERVICES ON THIS HOST'S OWN ADDRESSES ({why}): a restored app could "
            f"connect to a production database or web server listening here. Close it with: iptables -I "
            f"INPUT -i bctl-+ -m conntrack ! --ctstate ESTABLISHED,RELATED -j REJECT (see docs/drills.md)"
        )
    done = runner.run([iptables, "-w", "-I", "INPUT", *_rule(run_id, bridge)], check=False)
    if done.returncode != 0:
        return f"STAGING CAN REACH THIS HOST: the INPUT rule was refused: {done.stderr.strip()[:200]}"
    log.debug("INPUT rule for %s in place", bridge)
    return None


def _rule(run_id: str, bridge: str) -> list[str]:
    return [
        "-i", bridge, "-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED",
        "-m", "comment", "--comment", RULE_COMMENT + run_id, "-j", "REJECT",
    ]  # fmt: skip


def open_host(run_id: str | None) -> list[str]:
    """Remove the INPUT rules of one run (every run's when None); what was removed."""
    iptables = shutil.which("iptables")
    if os.geteuid() != 0 or iptables is None:
        return []
    listed = runner.run([iptables, "-w", "-S", "INPUT"], check=False)
    removed = []
    for line in listed.stdout.splitlines():
        words = shlex.split(line)
        comment = next((w for w in words if w.startswith(RULE_COMMENT)), None)
        if comment is None or (run_id is not None and comment != RULE_COMMENT + run_id):
            continue
        delete = [iptables, "-w", "-D", *words[1:]]  # "-A INPUT ..." -> "-D INPUT ..."
        if runner.run(delete, check=False).returncode == 0:
            removed.append(f"iptables rule {comment}")
    return removed
