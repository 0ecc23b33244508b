"""Detaching several disks: all removals asked for first, then waited for together.

A fake domain stands in for libvirt: the persistent config drops a disk at
once, the live domain only ``delay`` seconds after the first request (the
guest acking the unplug), or never.
"""

from __future__ import annotations

import time
import typing as t
from unittest import mock

import libvirt
import pytest
from lxml import etree

from ansible_collections.openvolume.compute.plugins.module_utils import _libvirt as lv
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtError
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_disk import (
    DiskSpec,
    LibvirtDisks,
    apply_all,
    apply_with_secrets,
)
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_secret import SecretSpec

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


# --- DEVICE_REMOVAL_FAILED: the error it maps to ------------------------------------------
# A guest refuses an unplug only when it runs an OS that answers the ACPI
# eject request with a failure (libvirt then sends DEVICE_REMOVAL_FAILED);
# the lab's domains have no OS, so only the mapping of the event to the
# module's error is tested here, with a fake domain and fake events.
class AliasedDomain(FakeDomain):
    """A FakeDomain whose live disks carry libvirt's aliases and that detaches by alias."""

    def __init__(self, name: str, delays: dict[str, float | None], events: FakeRemovals) -> None:
        super().__init__(name, delays)
        self.events = events

    def UUIDString(self) -> str:  # noqa: N802
        return f"uuid-{self._name}"

    def XMLDesc(self, flags: int) -> str:  # noqa: N802
        xml = super().XMLDesc(flags)
        if flags & libvirt.VIR_DOMAIN_XML_INACTIVE:
            return xml
        root = etree.fromstring(xml.encode())
        for disk in root.findall("./devices/disk"):
            etree.SubElement(disk, "alias", name=f"virtio-{disk.find('target').get('dev')}")
        return etree.tostring(root).decode()

    def detachDeviceAlias(self, alias: str, flags: int) -> None:  # noqa: N802
        target = alias.removeprefix("virtio-")
        self.calls.append((time.monotonic(), target, flags))
        if target in self.refuse:
            self.events.seen[(self.UUIDString(), alias)] = (lv.REMOVAL_FAILED, time.monotonic())
        else:
            self.live.discard(target)
            self.events.seen[(self.UUIDString(), alias)] = (lv.REMOVED, time.monotonic())


class FakeRemovals:
    """Stands in for lv.DeviceRemovals: the domain reports each outcome as it happens."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], tuple[str, float]] = {}
        self.closed = False

    def outcome(self, uuid: str, alias: str) -> tuple[str, float] | None:
        return self.seen.get((uuid, alias))

    def wait(self, keys: t.Collection[tuple[str, str]], timeout: float) -> bool:
        if any(k in self.seen for k in keys):
            return True
        time.sleep(min(timeout, 0.01))
        return False

    def close(self) -> None:
        self.closed = True


def test_a_refused_removal_fails_naming_the_disk_and_the_domain() -> None:
    events = FakeRemovals()
    vm = AliasedDomain("vm7", {"vdb": 0.0, "vdc": 0.0}, events)
    vm.refuse.add("vdc")
    disks = _disks([vm])
    disks.module.device_removals.return_value = events
    with pytest.raises(LibvirtError) as err:
        apply_all(disks, [_absent("vm7", "vdb"), _absent("vm7", "vdc")], timeout=30)
    msg = err.value.msg
    assert msg.startswith("detaching disk vol-vdc of vm7 (vdc) failed: the guest of vm7 refused"), msg
    assert "DEVICE_REMOVAL_FAILED" in msg and "still attached (live and persistent)" in msg
    assert err.value.details["still_attached"] is True and err.value.details["target_dev"] == "vdc"
    assert [d["serial"] for d in err.value.details["stuck"]] == ["vol-vdc"]
    # Not a timeout: the refusal ends the wait for that disk at once.
    assert err.value.details["disk"]["waited"] < 1.0
    # The released disk left the persistent config; the refused one is still attached everywhere.
    assert vm.live == {"vdc"} and vm.config == {"vdc"}
    assert events.closed


def test_a_refusal_and_a_timeout_are_both_named() -> None:
    events = FakeRemovals()
    vm = AliasedDomain("vm8", {"vdb": NEVER, "vdc": 0.0}, events)
    vm.refuse.add("vdc")
    vm.detachDeviceAlias = lambda alias, flags: (  # type: ignore[method-assign]
        None if alias == "virtio-vdb" else AliasedDomain.detachDeviceAlias(vm, alias, flags))
    disks = _disks([vm])
    disks.module.device_removals.return_value = events
    with pytest.raises(LibvirtError) as err:
        apply_all(disks, [_absent("vm8", "vdb"), _absent("vm8", "vdc")], timeout=0.5)
    assert "refused" in err.value.msg and "(vdc)" in err.value.msg
    assert "; also disk vol-vdb of vm8 (vdb, not released)" in err.value.msg
    assert [d["serial"] for d in err.value.details["stuck"]] == ["vol-vdc", "vol-vdb"]
    assert vm.live == {"vdb", "vdc"} and vm.config == {"vdb", "vdc"}


class FakeSecret:
    """A libvirt secret whose undefine fails (libvirtd lost it, say)."""

    def UUIDString(self) -> str:  # noqa: N802 (libvirt's name)
        return "0f5c2b9e-5c2d-4a5e-9a55-3c0e1b6d2f10"

    def undefine(self) -> None:
        raise libvirt.libvirtError("internal error: cannot remove the secret file")


def test_a_secret_removal_that_fails_says_the_disks_left() -> None:
    vm = FakeDomain("vm9", {"vdb": 0.1})
    disks = _disks([vm])
    disks.module.conn.listAllDomains.return_value = [vm]
    disks.module.conn.secretLookupByUsage.return_value = FakeSecret()
    secret = SecretSpec.from_params({"usage": "openvolume/vol-vdb", "state": "absent"}, where="secrets[0].")
    with pytest.raises(LibvirtError) as err:
        apply_with_secrets(disks, [_absent("vm9", "vdb")], [secret], timeout=5, missing_domain="fail")
    assert err.value.msg.startswith("secrets[0].removing the secret for openvolume/vol-vdb failed")
    assert "every disk was done: the detached disks stay detached" in err.value.msg
    # The role reads ``disks`` in the failed result as: the disks left (error_detaching, not in-use).
    assert [d["serial"] for d in err.value.details["disks"]] == ["vol-vdb"]
    assert err.value.details["disks"][0]["changed"] is True
    assert not vm.live and not vm.config
