"""Detaching several disks: all removals asked for first, then waited for together.

A fake domain stands in for libvirt: the persistent config drops a disk at
once, the live domain only ``delay`` seconds after the first request (the
guest acking the unplug), or never.
"""

from __future__ import annotations

import time
from unittest import mock

import libvirt
import pytest
from lxml import etree

from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtError
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_disk import DiskSpec, LibvirtDisks, apply_all

NEVER = None


def _disk_xml(target: str) -> str:
    return (f"<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none'/>"
            f"<source dev='/dev/fake-{target}'/><target dev='{target}' bus='virtio'/>"
            f"<serial>vol-{target}</serial></disk>")


class FakeDomain:
    """A running, persistent domain whose guest releases each disk after its delay."""

    def __init__(self, name: str, delays: dict[str, float | None]) -> None:
        self._name = name
        self.delays = delays
        self.live = set(delays)
        self.config = set(delays)
        self.asked: dict[str, float] = {}
        self.calls: list[tuple[float, str, int]] = []
        self.refuse: set[str] = set()

    def name(self) -> str:
        return self._name

    def isActive(self) -> int:  # noqa: N802 (libvirt's name)
        return 1

    def isPersistent(self) -> int:  # noqa: N802
        return 1

    def _release(self) -> None:
        now = time.monotonic()
        for target, asked in self.asked.items():
            delay = self.delays[target]
            if delay is not NEVER and now >= asked + delay:
                self.live.discard(target)

    def XMLDesc(self, flags: int) -> str:  # noqa: N802
        self._release()
        disks = self.config if flags & libvirt.VIR_DOMAIN_XML_INACTIVE else self.live
        return f"<domain type='qemu'><name>{self._name}</name><devices>{''.join(_disk_xml(d) for d in sorted(disks))}" \
               "</devices></domain>"

    def detachDeviceFlags(self, xml: str, flags: int) -> None:  # noqa: N802
        target = etree.fromstring(xml.encode()).find("target").get("dev")
        self.calls.append((time.monotonic(), target, flags))
        if flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG:
            self.config.discard(target)
        if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
            if target in self.refuse:
                raise libvirt.libvirtError("internal error: unable to execute QEMU command 'device_del'")
            self.asked.setdefault(target, time.monotonic())


def _disks(domains: list[FakeDomain], check_mode: bool = False) -> LibvirtDisks:
    conn = mock.MagicMock()
    conn.lookupByName.side_effect = {d.name(): d for d in domains}.__getitem__
    module = mock.MagicMock(conn=conn, check_mode=check_mode)
    # No events: the live XML tells (the fallback for connections without them).
    module.device_removals.return_value = None
    return LibvirtDisks(module)


def _absent(domain: str, target: str) -> DiskSpec:
    return DiskSpec.from_params({"domain": domain, "state": "absent", "serial": f"vol-{target}", "target_dev": target})


def test_removals_are_asked_for_at_once_and_waited_for_together() -> None:
    vm1 = FakeDomain("vm1", {"vdb": 0.6, "vdc": 0.6})
    vm2 = FakeDomain("vm2", {"vdb": 0.6})
    specs = [_absent("vm1", "vdb"), _absent("vm1", "vdc"), _absent("vm2", "vdb")]
    began = time.monotonic()
    outcomes = apply_all(_disks([vm1, vm2]), specs, timeout=10)
    took = time.monotonic() - began
    # One after the other this takes at least 1.8 s.
    assert took < 1.5, took
    first_asked = [d.asked[target] for d in (vm1, vm2) for target in d.delays]
    assert len(first_asked) == 3
    assert max(first_asked) - began < 0.3  # all asked for before the first was released
    for o in outcomes:
        assert o["changed"] is True
        assert 0.5 <= o["disk"]["waited"] < 1.5
    assert not vm1.live and not vm1.config and not vm2.live and not vm2.config


def test_a_disk_already_gone_from_the_live_domain_waits_nothing() -> None:
    vm = FakeDomain("vm3", {"vdb": 0.0})
    vm.live.clear()  # only in the persistent config (e.g. a shut-off-then-started mismatch)
    outcome = apply_all(_disks([vm]), [_absent("vm3", "vdb")], timeout=5)[0]
    assert outcome["changed"] is True and outcome["applied_to"] == ["config"]
    assert outcome["disk"]["waited"] == 0.0
    assert not vm.config


def test_a_disk_the_guest_keeps_fails_after_the_others_are_done() -> None:
    vm = FakeDomain("vm4", {"vdb": 0.2, "vdc": NEVER})
    with pytest.raises(LibvirtError) as err:
        apply_all(_disks([vm]), [_absent("vm4", "vdb"), _absent("vm4", "vdc")], timeout=1)
    assert "detach_timeout" in err.value.msg and "(vdc)" in err.value.msg
    assert err.value.details["still_attached"] is True and err.value.details["target_dev"] == "vdc"
    assert err.value.details["stuck"][0]["waited"] >= 1.0
    # The released disk left the persistent config too; the kept one is still attached everywhere.
    assert vm.live == {"vdc"} and vm.config == {"vdc"}


def test_check_mode_asks_nothing_and_waits_nothing() -> None:
    vm = FakeDomain("vm5", {"vdb": 0.5})
    outcome = apply_all(_disks([vm], check_mode=True), [_absent("vm5", "vdb")], timeout=5)[0]
    assert outcome["changed"] is True and outcome["disk"]["waited"] == 0.0
    assert not vm.calls and vm.live == {"vdb"}


def test_a_refused_request_fails_after_the_disks_already_asked_for_are_done() -> None:
    vm = FakeDomain("vm6", {"vdb": 0.2, "vdc": 0.2})
    vm.refuse.add("vdc")
    with pytest.raises(LibvirtError) as err:
        apply_all(_disks([vm]), [_absent("vm6", "vdb"), _absent("vm6", "vdc")], timeout=5)
    assert "detaching" in err.value.msg and "failed" in err.value.msg
    # vdb was asked for first: it left the live domain and then the persistent config.
    assert vm.live == {"vdc"} and vm.config == {"vdc"}
