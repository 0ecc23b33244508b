# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a compute host has of our volumes: the logic of the volume_host_info module.

The reservation store says what should be; this reads what is, so that the
roles and reconcile can compare: every domain's disks by serial, live and
persistent (libvirt), our libvirt secrets (usage ``openvolume/...``), and
the host's iSCSI sessions with their LUNs' disks and node records
(iscsiadm). Reads only, in check mode too.
"""

from __future__ import annotations

import typing as t

from ansible_collections.openvolume.compute.plugins.module_utils import _libvirt as lv
from ansible_collections.openvolume.compute.plugins.module_utils._iscsiadm import Iscsiadm
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_disk import domain_inventory
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_secret import list_secrets

SECRET_PREFIX = "openvolume/"


def argument_spec() -> dict[str, t.Any]:
    return {
        "domains": {"type": "list", "elements": "str"},
        "iscsi": {"type": "bool", "default": True},
    }


def iscsi_inventory(module: t.Any) -> dict[str, t.Any]:
    """Sessions (target, portal, iface, LUN -> disk) and node records; ``available: false`` without iscsiadm."""
    if not module.get_bin_path("iscsiadm"):
        return {"available": False, "sessions": [], "nodes": []}
    iscsiadm = Iscsiadm(module)
    # The persistent portal is the node record's (what a request names);
    # LUNs are the kernel's numbers (16684 for a flat-addressed LUN 300).
    sessions = [
        {"target": s.target, "portal": str(s.persistent_portal or s.portal) if (s.persistent_portal or s.portal)
         else None, "current_portal": str(s.portal) if s.portal else None, "iface": s.iface,
         "transport": s.transport, "sid": s.sid,
         "luns": [{"lun": lun, "device": dev} for lun, dev in sorted(s.disks.items())]}
        for s in iscsiadm.session_details()
    ]
    nodes = [{"target": n.target, "portal": str(n.portal), "tpgt": n.tpgt, "iface": n.iface} for n in iscsiadm.nodes()]
    return {"available": True, "sessions": sessions, "nodes": nodes}


def run(module: lv.LibvirtModule) -> None:
    """Entry point of the volume_host_info module."""
    params = module.params

    def handle() -> dict[str, t.Any]:
        domains, missing = domain_inventory(module.conn, params.get("domains"))
        iscsi = iscsi_inventory(module.module) if params["iscsi"] else {"available": False, "sessions": [], "nodes": []}
        return {
            "changed": False,
            "domains": domains,
            "missing_domains": missing,
            "secrets": list_secrets(module.conn, SECRET_PREFIX),
            "iscsi": iscsi,
        }

    module.run(handle)
