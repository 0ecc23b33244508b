"""Never two writers, never a disk pulled from a live guest (issue 14), on the real lab.

Each case runs the collection's playbooks as a user would (attach.yml,
detach.yml, reconcile.yml against inventories/lab, qemu mode: QEMU's own
iSCSI client to tgtd and a libvirt secret), kills the controller (SIGKILL
to its whole process group) at a step, and checks what libvirt, tgtd and
the store hold afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import typing as t

import pytest
from safety_lab import (
    CONFIG,
    INVENTORY,
    Run,
    Store,
    disks,
    domain,
    has_disk,
    hmp,
    play,
    qemu_io,
    read_lun,
    remove_domain,
    secrets,
    tgtadm,
    virsh,
    wait_for_file,
)

# pytest-xdist runs cases side by side: each worker has its own domains and
# volumes (and each case its own store), and reconcile is limited to the
# case's volumes, so that cases never see each other's work.
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
DOM1, DOM2, DOM3 = (f"ovt-s{WORKER}-{n}" for n in (1, 2, 3))
VOLS = [f"vol-{11 + 3 * WORKER + n:02d}" for n in range(3)]
assert WORKER < 3, "the lab has volumes for three workers (vol-11 .. vol-19)"

# Kill points: the task that never starts (everything before it is done).
# The libvirt secrets go in and out in the task of the disks.
ATTACH_KILLS = {
    "before-reserve": "Reserve the volumes",
    "after-reserve": "Hot-plug the disks",
    "after-hotplug": "Mark the volumes in-use",
}
DETACH_KILLS = {
    "after-begin": "Decide what this host no longer needs",
    "after-unplug": "The disks are gone from the domains",
    "after-release": "Detached (detaching -> available)",
}


def changed(run: Run, host: str = "lab-compute-1") -> int:
    m = re.search(rf"^{re.escape(host)}\s*:.*changed=(\d+)", run.out, re.M)
    assert m, run.out[-3000:]
    return int(m.group(1))


def steps(run: Run, role: str, host: str = "lab-compute-1") -> dict[str, str]:
    """Each task of ``role`` the run reached -> its outcome (changed, ok, skipping, failed), from the stdout."""
    outcomes: dict[str, str] = {}
    task = None
    for line in run.out.splitlines():
        m = re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\] \*+$", line)
        if m:
            task = m.group(1)
            continue
        m = re.match(rf"^(changed|ok|skipping|failed|fatal): \[{re.escape(host)}\]", line)
        if m and task and task.startswith(f"openvolume.compute.{role} : "):
            outcomes[task.split(" : ", 1)[1]] = m.group(1)
    return outcomes


def changed_steps(run: Run, role: str) -> list[str]:
    return [task for task, outcome in steps(run, role).items() if outcome == "changed"]


def ok(run: Run) -> Run:
    assert run.rc == 0, run.out[-6000:]
    return run


def killed(run: Run) -> Run:
    assert run.rc == -9 and "ov_fault: SIGKILL" in run.out, run.out[-4000:]
    return run


@pytest.fixture(scope="module", autouse=True)
def domains() -> t.Iterator[None]:
    for name in (DOM1, DOM2, DOM3):
        remove_domain(name)
        domain(name)
    yield
    for name in (DOM1, DOM2, DOM3):
        remove_domain(name)


@pytest.fixture
def store(tmp_path: t.Any) -> t.Iterator[Store]:
    s = Store("sqlite", str(tmp_path), lease_ttl=300)
    yield s
    clean(s)


def clean(store: Store) -> None:
    """Leave the domains as they were: detach the case's disks, drop its secrets."""
    mine = set(store.volumes) | set(VOLS)
    for name in (DOM1, DOM2, DOM3):
        for live in (True, False):
            for serial, disk in disks(name, live=live).items():
                if serial in mine:
                    virsh("detach-disk", name, disk["target"], "--live" if live else "--config", check=False)
    for line in virsh("secret-list").splitlines():
        uuid_ = line.split()[0]
        usage = virsh("secret-dumpxml", uuid_, check=False)
        if any(f"openvolume/{v}<" in usage for v in mine):
            virsh("secret-undefine", uuid_, check=False)
    store.cleanup()


def use(store: Store, *volumes: str) -> None:
    """The volumes a case works on (reconcile is limited to them)."""
    store.volumes = sorted(set(store.volumes) | set(volumes))


def attach(store: Store, volume: str, instance: str, *, extra: dict[str, t.Any] | None = None, **kw: t.Any) -> Run:
    use(store, volume)
    return play("attach.yml", store, extra={"volume": volume, "instance": instance, **(extra or {})},  # type: ignore[return-value]
                **kw)


def detach(store: Store, volume: str, instance: str, **kw: t.Any) -> Run:
    return play("detach.yml", store, extra={"volume": volume, "instance": instance}, **kw)  # type: ignore[return-value]


def reconcile(store: Store, **kw: t.Any) -> Run:
    return play("reconcile.yml", store, extra={"volume_reconcile_volumes": store.volumes},  # type: ignore[return-value]
                **kw)


def assert_attached(store: Store, volume: str, instance: str) -> None:
    att = store.attachment(volume, instance)
    assert att is not None and att.status == "in-use", att
    assert att.connection_info and att.connection_info["openvolume"]["target_dev"]
    assert has_disk(instance, volume) == {"live": True, "config": True}
    assert f"openvolume/{volume}" in secrets()


def pull_live_disk(name: str, volume: str) -> None:
    """Detach a volume's disk from the live domain by hand (drift), and wait until QEMU let it go."""
    virsh("detach-disk", name, disks(name)[volume]["target"], "--live")
    wait = time.time() + 10
    while has_disk(name, volume)["live"] and time.time() < wait:
        time.sleep(0.2)


def assert_nothing_left(store: Store, volume: str, *instances: str) -> None:
    for instance in instances:
        assert store.state(volume, instance) == "available"
        assert has_disk(instance, volume) == {"live": False, "config": False}
    assert f"openvolume/{volume}" not in secrets()


# --- the controller killed at each step of attach --------------------------------------------------
@pytest.mark.parametrize("remedy", ["rerun", "reconcile"])
@pytest.mark.parametrize("step", list(ATTACH_KILLS))
def test_attach_killed_then_remedied(store: Store, step: str, remedy: str) -> None:
    vol = VOLS[0]
    killed(attach(store, vol, DOM1, kill_at=ATTACH_KILLS[step]))
    plugged = step == "after-hotplug"
    state = store.state(vol, DOM1)
    assert state == ("available" if step == "before-reserve" else "attaching")
    assert has_disk(DOM1, vol) == {"live": plugged, "config": plugged}
    if state == "attaching":
        att = store.attachment(vol, DOM1)
        # Enough was recorded before any host step for whoever comes next (seed 004).
        assert att.connection_info["data"]["target_iqn"].endswith(vol)
        assert att.connection_info["openvolume"]["secret_usage"] == f"openvolume/{vol}"
        # The run is dead: lapsed at once on this controller, and still holding the volume.
        assert att.lapsed
        if remedy == "rerun":
            # Another instance is refused in between, and is left nothing.
            other = attach(store, vol, DOM2)
            assert other.rc != 0
            assert f"volume {vol} is attaching by {DOM1} on lab-compute-1 (lapsed" in other.out
            assert has_disk(DOM2, vol) == {"live": False, "config": False}
            assert store.state(vol, DOM2) == "available"
    if remedy == "rerun":
        run = ok(attach(store, vol, DOM1))
        if state == "attaching":
            assert "took over the lapsed attaching" in run.out
        assert_attached(store, vol, DOM1)
        assert changed(ok(attach(store, vol, DOM1))) == 0
        ok(detach(store, vol, DOM1))
    else:
        check = ok(reconcile(store, check=True))
        assert store.state(vol, DOM1) == state
        if state == "attaching":
            assert ("complete: in-use" if plugged else "release: available") in check.out
        ok(reconcile(store))
        if plugged:
            # The disk is in the domain: the attachment is completed, never freed.
            assert_attached(store, vol, DOM1)
        else:
            assert_nothing_left(store, vol, DOM1)
        assert changed(ok(reconcile(store))) == 0
        if plugged:
            ok(detach(store, vol, DOM1))
    assert_nothing_left(store, vol, DOM1, DOM2)


@pytest.mark.parametrize("remedy", ["rerun", "reconcile"])
@pytest.mark.parametrize("step", ["after-reserve", "after-hotplug"])
def test_attach_killed_and_lease_lapsed(tmp_path: t.Any, step: str, remedy: str) -> None:
    store = Store("sqlite", str(tmp_path), lease_ttl=3)
    try:
        vol = VOLS[1]
        killed(attach(store, vol, DOM1, kill_at=ATTACH_KILLS[step]))
        time.sleep(4)
        att = store.attachment(vol, DOM1)
        assert att.status == "attaching" and att.lapsed and att.expires_at < time.time()
        other = attach(store, vol, DOM2)
        assert other.rc != 0 and f"volume {vol} is attaching by {DOM1}" in other.out
        if remedy == "rerun":
            ok(attach(store, vol, DOM1))
            assert_attached(store, vol, DOM1)
            ok(detach(store, vol, DOM1))
        else:
            ok(reconcile(store))
            if step == "after-hotplug":
                assert_attached(store, vol, DOM1)
                ok(detach(store, vol, DOM1))
        assert_nothing_left(store, vol, DOM1, DOM2)
    finally:
        clean(store)


# --- the controller killed at each step of detach --------------------------------------------------
@pytest.mark.parametrize("remedy", ["rerun", "reconcile"])
@pytest.mark.parametrize("step", list(DETACH_KILLS))
def test_detach_killed_then_remedied(store: Store, step: str, remedy: str) -> None:
    vol = VOLS[2]
    ok(attach(store, vol, DOM1))
    killed(detach(store, vol, DOM1, kill_at=DETACH_KILLS[step]))
    unplugged = step != "after-begin"
    att = store.attachment(vol, DOM1)
    assert att.status == "detaching" and att.lapsed and att.connection_info
    assert has_disk(DOM1, vol) == {"live": not unplugged, "config": not unplugged}
    if remedy == "rerun":
        other = attach(store, vol, DOM2)
        assert other.rc != 0 and f"volume {vol} is detaching by {DOM1}" in other.out
        assert has_disk(DOM2, vol) == {"live": False, "config": False}
        run = ok(detach(store, vol, DOM1))
        assert "took over the lapsed detaching" in run.out
        assert changed(ok(detach(store, vol, DOM1))) == 0
    else:
        ok(reconcile(store))
        if not unplugged:
            # The disk is still there: rolled back to in-use, not pulled.
            assert_attached(store, vol, DOM1)
            ok(detach(store, vol, DOM1))
        assert changed(ok(reconcile(store))) == 0
    assert_nothing_left(store, vol, DOM1, DOM2)


# --- two runs for one attachment ---------------------------------------------------------------------
def test_two_runs_for_one_attachment(store: Store, tmp_path: t.Any) -> None:
    vol = VOLS[1]
    use(store, vol)
    flag = str(tmp_path / "paused")
    # Paused after its host work (the disk and its secret), before in-use.
    first = play("attach.yml", store, extra={"volume": vol, "instance": DOM1}, pause_at="Mark the volumes in-use",
                 pause_file=flag, background=True)
    assert isinstance(first, subprocess.Popen)
    try:
        wait_for_file(flag)
        holder = store.attachment(vol, DOM1)
        second = attach(store, vol, DOM1)
        assert second.rc != 0
        assert f"volume {vol} is attaching by {DOM1} on lab-compute-1 (held by run " in second.out
        assert "another run cannot change it while that run lives" in second.out
        # The second run left the first one's work alone.
        assert store.attachment(vol, DOM1).owner == holder.owner
        assert f"openvolume/{vol}" in secrets()
        assert has_disk(DOM1, vol) == {"live": True, "config": True}
        # A detach of it is refused too.
        assert detach(store, vol, DOM1).rc != 0
    finally:
        os.unlink(flag)
    out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out[-4000:]
    assert_attached(store, vol, DOM1)
    ok(detach(store, vol, DOM1))
    assert_nothing_left(store, vol, DOM1)


def test_a_long_step_keeps_its_lease(tmp_path: t.Any) -> None:
    """A run paused far longer than lease_ttl still holds its reservation (the keeper renews it)."""
    store = Store("sqlite", str(tmp_path), lease_ttl=3)
    flag = str(tmp_path / "paused")
    vol = VOLS[2]
    first = play("attach.yml", store, extra={"volume": vol, "instance": DOM1}, pause_at="Hot-plug the disks",
                 pause_file=flag, background=True)
    assert isinstance(first, subprocess.Popen)
    try:
        wait_for_file(flag)
        time.sleep(10)
        att = store.attachment(vol, DOM1)
        assert att.status == "attaching" and not att.lapsed and att.expires_at > time.time()
        assert attach(store, vol, DOM2).rc != 0
    finally:
        os.unlink(flag)
        out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out[-4000:]
    assert_attached(store, vol, DOM1)
    ok(detach(store, vol, DOM1))
    clean(store)


# --- same-host multiattach ------------------------------------------------------------------------
def test_same_host_multiattach_detach_keeps_the_other(store: Store) -> None:
    vol = "vol-03"  # multiattach in the lab catalogue
    ok(attach(store, vol, DOM1))
    ok(attach(store, vol, DOM2))
    assert len(store.attachments(vol)) == 2
    qemu_io(DOM2, vol, "write -P 0x5a 1M 64k")
    run = ok(detach(store, vol, DOM1))
    assert f"secret openvolume/{vol} stays: used by {DOM2}" in run.out
    assert f"openvolume/{vol}" in secrets()
    assert has_disk(DOM1, vol) == {"live": False, "config": False}
    # The other domain keeps reading and writing its disk ...
    qemu_io(DOM2, vol, "write -P 0xa5 2M 64k")
    qemu_io(DOM2, vol, "read -P 0xa5 2M 64k")  # qemu-io checks the pattern, an error fails
    assert read_lun(vol, 1 << 20, 65536) == b"\x5a" * 65536
    assert read_lun(vol, 2 << 20, 65536) == b"\xa5" * 65536
    # ... and can be restarted (its disk's secret is there).
    virsh("destroy", DOM2)
    virsh("start", "--paused", DOM2)
    assert has_disk(DOM2, vol) == {"live": True, "config": True}
    qemu_io(DOM2, vol, "read -P 0xa5 2M 64k")
    last = ok(detach(store, vol, DOM2))
    assert f"openvolume/{vol}" not in secrets(), last.out[-5000:]
    assert_nothing_left(store, vol, DOM1, DOM2)
    # The same volume again, for a rollback beside a domain that uses it (one
    # test: the cases of vol-03 must not run side by side).
    failed_attach_rollback_keeps_what_another_domain_uses(store)


def failed_attach_rollback_keeps_what_another_domain_uses(store: Store) -> None:
    """A failed attach of a third domain does not take what the second uses."""
    vol = "vol-03"
    ok(attach(store, vol, DOM2))
    # The third domain's attach fails at the hot-plug: its target_dev is taken.
    ok(attach(store, VOLS[0], DOM3))
    taken = disks(DOM3)[VOLS[0]]["target"]
    run = play("attach.yml", store, extra={"openvolume_attachments": [
        {"volume": vol, "instance": DOM3, "target_dev": taken}]})
    assert run.rc != 0 and f"target_dev: {taken} of {DOM3} is taken" in run.out
    assert f"openvolume/{vol}" in secrets()
    assert store.state(vol, DOM3) == "available"
    qemu_io(DOM2, vol, "write -P 0x3c 3M 4k")
    assert read_lun(vol, 3 << 20, 4096) == b"\x3c" * 4096
    ok(detach(store, vol, DOM2))
    ok(detach(store, VOLS[0], DOM3))
    assert_nothing_left(store, vol, DOM2, DOM3)


def test_a_disk_attached_by_hand_keeps_the_secret(store: Store, tmp_path: t.Any) -> None:
    """A disk no record knows (another tool's) that names the volume's secret: the detach leaves the secret."""
    vol = VOLS[1]
    ok(attach(store, vol, DOM1))
    by_hand = tmp_path / "by-hand.xml"
    # Persistent config only: nothing connects to the (made-up) target.
    by_hand.write_text(
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
        "<source protocol='iscsi' name='iqn.2026-11.org.example:by-hand/1'><host name='127.0.0.1' port='3260'/>"
        f"<auth username='someone'><secret type='iscsi' usage='openvolume/{vol}'/></auth></source>"
        "<target dev='sdz' bus='scsi'/><serial>by-hand</serial></disk>")
    virsh("attach-device", DOM2, str(by_hand), "--config")
    try:
        run = ok(detach(store, vol, DOM1))
        assert f"secret openvolume/{vol} stays: disk sdz of domain {DOM2} names it" in run.out, run.out[-4000:]
        assert f"openvolume/{vol}" in secrets()
        assert has_disk(DOM1, vol) == {"live": False, "config": False}
        assert store.state(vol, DOM1) == "available"
    finally:
        virsh("detach-device", DOM2, str(by_hand), "--config", check=False)
    # Nothing names it now: reconcile removes the orphan.
    ok(reconcile(store))
    assert_nothing_left(store, vol, DOM1, DOM2)


# --- a domain deleted behind our back -------------------------------------------------------------------
@pytest.mark.parametrize("remedy", ["detach", "reconcile"])
def test_deleted_domain_frees_its_volumes(store: Store, remedy: str) -> None:
    gone = f"ovt-s{WORKER}-gone"
    vol = VOLS[1]
    domain(gone)
    try:
        ok(attach(store, vol, gone))
        remove_domain(gone)
        if remedy == "detach":
            run = ok(detach(store, vol, gone))
            assert f"domain {gone} does not exist on this host" in run.out
        else:
            run = ok(reconcile(store, check=True))
            assert "free: the domain is gone" in run.out
            assert store.state(vol, gone) == "in-use"
            ok(reconcile(store))
            assert changed(ok(reconcile(store))) == 0
        assert store.state(vol, gone) == "available"
        assert f"openvolume/{vol}" not in secrets()
    finally:
        remove_domain(gone)


# --- a catalogue written with strings -------------------------------------------------------------------
def test_a_catalogue_of_strings_is_read_as_ansible_reads_it(store: Store) -> None:
    """A catalogue as an ini lookup, ``-e`` or a survey writes it: ``"false"`` is no, never a second writer."""
    vol = VOLS[1]
    entry = {"target_iqn": f"{CONFIG['lab_tgt_iqn_prefix']}:{vol}", "target_portals": [CONFIG["lab_tgt_portal"]],
             "target_lun": "1", "multiattach": "false", "auth_username": CONFIG["lab_tgt_chap_user"],
             "auth_password": CONFIG["lab_tgt_chap_password"], "attach_mode": "qemu", "bus": "scsi"}

    def with_entry(**change: t.Any) -> dict[str, t.Any]:
        return {"openvolume_volumes": {vol: {k: v for k, v in dict(entry, **change).items() if v is not None}}}

    ok(attach(store, vol, DOM1, extra=with_entry()))
    assert_attached(store, vol, DOM1)
    # A second domain is refused: the record says single-writer, and nothing reaches DOM2.
    run = attach(store, vol, DOM2, extra=with_entry())
    assert run.rc != 0 and "it is not multiattach" in run.out, run.out[-3000:]
    assert list(store.attachments(vol)) == [DOM1]
    assert has_disk(DOM2, vol) == {"live": False, "config": False}
    ok(detach(store, vol, DOM1))
    assert_nothing_left(store, vol, DOM1, DOM2)
    # The entry as Cinder's initialize_connection returns it (protocol and
    # access mode in capitals, keys the collection does not use), with the
    # collection's own keys beside data: attached the same way.
    cinder = {"driver_volume_type": "iSCSI", "attach_mode": "qemu", "bus": "scsi", "data": {
        "target_discovered": False, "target_iqn": entry["target_iqn"], "target_portal": CONFIG["lab_tgt_portal"],
        "target_portals": entry["target_portals"], "target_iqns": [entry["target_iqn"]], "target_lun": 1,
        "target_luns": [1], "volume_id": vol, "auth_method": "CHAP", "auth_username": entry["auth_username"],
        "auth_password": entry["auth_password"], "encrypted": False, "qos_specs": None, "access_mode": "RW",
        "discard": True, "cacheable": False}}
    ok(attach(store, vol, DOM1, extra={"openvolume_volumes": {vol: cinder}}))
    assert_attached(store, vol, DOM1)
    assert store.attachment(vol, DOM1).connection_info["data"]["target_iqn"] == entry["target_iqn"]
    ok(detach(store, vol, DOM1))
    assert_nothing_left(store, vol, DOM1)
    # Values that are no boolean or LUN number, or a LUN left out, fail in the
    # plan naming the key: nothing reserved, no secret, no disk.
    for change, message in (({"multiattach": "maybe"}, f"volume {vol}: multiattach must be true or false"),
                            ({"target_lun": None}, f"volume {vol}: target_lun is needed"),
                            ({"target_lun": "1.5"}, f"volume {vol}: target_lun must be a LUN number"),
                            ({"target_portals": CONFIG["lab_tgt_portal"]},
                             f"volume {vol}: target_portals must be a list"),
                            ({"bus": "ide"}, f"volume {vol}: bus must be one of virtio, scsi, sata"),
                            ({"attach_mode": "host", "wwn": "0xdeadbeef"}, f"volume {vol}: wwn: '0xdeadbeef'"),
                            ({"multipath": True,
                              "target_iqns": [entry["target_iqn"], f"{CONFIG['lab_tgt_iqn_prefix']}:vol-01"],
                              "target_portals": [CONFIG["lab_tgt_portal"], CONFIG["lab_tgt_portal2"]]},
                             f"volume {vol}: target_iqns"),
                            # A read-only or multiattach flag misspelt or in
                            # another tool's words is never dropped silently.
                            ({"readonly": True}, f"volume {vol}: unknown key 'readonly': did you mean access_mode: ro"),
                            ({"multi_attach": True}, f"volume {vol}: unknown key 'multi_attach': did you mean "
                             "multiattach")):
        run = attach(store, vol, DOM1, extra=with_entry(**change))
        assert run.rc != 0 and message in run.out, (change, run.out[-3000:])
        assert store.attachments(vol) == {}
        assert has_disk(DOM1, vol) == {"live": False, "config": False}
        assert f"openvolume/{vol}" not in secrets()
    # So is an attachment's misspelt option (the roles' argument specs).
    run = play("attach.yml", store, extra={"openvolume_attachments": [{"volume": vol, "instance": DOM1,
                                                                       "targetdev": "sdc"}]})
    assert run.rc != 0 and "volume_attach_attachments.targetdev. Supported parameters include" in run.out, \
        run.out[-3000:]
    assert store.attachments(vol) == {}
    assert has_disk(DOM1, vol) == {"live": False, "config": False}


def test_rbd_entries_that_would_drop_cephx_or_open_another_cluster(store: Store) -> None:
    """Cinder's RBD data as older releases give it, and entries that contradict themselves, on the lab's
    cluster (cephx required)."""
    vol = "rbd-05"  # no other case uses it
    data = {"name": f"{CONFIG.get('lab_ceph_pool', 'volumes')}/{vol}", "hosts": [CONFIG["lab_ceph_mon_addr"]],
            "ports": [CONFIG["lab_ceph_mon_port_v1"]], "cluster_name": "ceph", "auth_enabled": False,
            "auth_username": CONFIG["lab_ceph_client"], "secret_type": "ceph", "secret_uuid": None,
            "volume_id": vol, "discard": True}

    def entry(**change: t.Any) -> dict[str, t.Any]:
        return {"openvolume_volumes": {vol: {"driver_volume_type": "rbd", "bus": "scsi",
                                             "data": {k: v for k, v in dict(data, **change).items() if v != "-"}}}}

    # auth_enabled false (Cinder without rbd_secret_uuid): no cephx, as Nova
    # without its own rbd_user; this cluster refuses that at the hot-plug,
    # said in the error, and the reservation is rolled back.
    run = attach(store, vol, DOM1, extra=entry())
    assert run.rc != 0 and "error connecting: Operation not supported; source.auth: the cluster requires cephx " \
        "and the disk has none" in run.out, run.out[-3000:]
    assert store.attachments(vol) == {}
    assert has_disk(DOM1, vol) == {"live": False, "config": False}
    assert f"openvolume/{vol}" not in secrets()
    # Entries that contradict themselves, or a cluster named without its
    # monitors (the host's ceph.conf is another cluster's), fail in the plan.
    for change, message in (({"auth_key": CONFIG["lab_ceph_client_key"]}, "auth_enabled is false but auth_key"),
                            ({"auth_enabled": True, "auth_username": None}, "auth_enabled is true but no "
                             "auth_username"),
                            ({"cluster_name": "dr", "hosts": "-", "ports": "-"},
                             "cluster_name 'dr' needs hosts (the monitors of that cluster)")):
        run = attach(store, vol, DOM1, extra=entry(**change))
        assert run.rc != 0 and f"volume {vol}: {message}" in run.out, (change, run.out[-3000:])
        assert CONFIG["lab_ceph_client_key"] not in run.out
        assert store.attachments(vol) == {}
        assert has_disk(DOM1, vol) == {"live": False, "config": False}
    # The same data with cephx on: attached, then detached.
    ok(attach(store, vol, DOM1, extra=entry(auth_enabled=True, auth_key=CONFIG["lab_ceph_client_key"])))
    assert has_disk(DOM1, vol) == {"live": True, "config": True}
    ok(detach(store, vol, DOM1))
    assert_nothing_left(store, vol, DOM1)


def test_a_lun_from_256_at_an_ipv6_portal_in_qemu_mode(store: Store, tmp_path: t.Any) -> None:
    """LUN 300 of a tgtd target (flat space addressing) at an IPv6 portal, attached in qemu mode: QEMU's iSCSI
    client is given the number as the kernel has it (16684) and the portal in brackets; data written through
    the drive lands in the LUN's file."""
    vol, tid, portal = "ovt-lun300", 390, "[::1]:3262"
    iqn = f"{CONFIG['lab_tgt_iqn_prefix']}:{vol}"
    image = os.path.join(str(tmp_path), "lun300.img")
    with open(image, "wb") as f:
        f.truncate(16 * 1024 * 1024)

    tgtadm("--op", "new", "--mode", "portal", "--param", f"portal={portal}")
    tgtadm("--op", "new", "--mode", "target", "--tid", str(tid), "-T", iqn)
    try:
        tgtadm("--op", "new", "--mode", "logicalunit", "--tid", str(tid), "--lun", "300", "-b", image)
        tgtadm("--op", "bind", "--mode", "target", "--tid", str(tid), "-I", "ALL")
        # The portal spelt otherwise than libvirt and the kernel print it.
        cat = {"openvolume_volumes": {vol: {"target_iqn": iqn, "target_portals": ["[0:0::1]:3262"],
                                            "target_lun": 300, "attach_mode": "qemu", "bus": "scsi"}}}
        ok(attach(store, vol, DOM1, extra=cat))
        assert f"{iqn}/16684" in virsh("domblklist", DOM1)
        assert '"portal": "[::1]:3262"' in hmp(DOM1, "info block")
        assert store.attachment(vol, DOM1).connection_info["data"]["target_lun"] == 300
        qemu_io(DOM1, vol, "write -P 0x3c 1M 64k")
        with open(image, "rb") as f:
            f.seek(1024 * 1024)
            assert f.read(65536) == b"\x3c" * 65536
        assert changed(ok(attach(store, vol, DOM1, extra=cat))) == 0
        ok(play("detach.yml", store, extra=dict(cat, volume=vol, instance=DOM1)))
        assert_nothing_left(store, vol, DOM1)
    finally:
        tgtadm("--op", "delete", "--mode", "target", "--tid", str(tid), "--force")
        tgtadm("--op", "delete", "--mode", "portal", "--param", f"portal={portal}")


# --- drift -----------------------------------------------------------------------------------------------
def test_drift_is_repaired(store: Store) -> None:
    vol = VOLS[2]
    ok(attach(store, vol, DOM1))
    target = disks(DOM1)[vol]["target"]
    virsh("detach-disk", DOM1, target, "--config")
    assert has_disk(DOM1, vol) == {"live": True, "config": False}
    # attach.yml converges the attachments it is given: the persistent side comes back.
    run = ok(attach(store, vol, DOM1))
    assert changed(run) >= 1
    assert has_disk(DOM1, vol) == {"live": True, "config": True}
    assert changed(ok(attach(store, vol, DOM1))) == 0
    # The live side removed: reconcile shows it in check mode, then re-adds it.
    pull_live_disk(DOM1, vol)
    check = ok(reconcile(store, check=True))
    assert re.search(rf"{vol}\s+lab-compute-1\s+{DOM1}\s+in-use\s+disk {target} \(config\)\s+re-add the live disk",
                     check.out), check.out[-3000:]
    assert has_disk(DOM1, vol) == {"live": False, "config": True}
    ok(reconcile(store))
    assert has_disk(DOM1, vol) == {"live": True, "config": True}
    assert changed(ok(reconcile(store))) == 0
    ok(detach(store, vol, DOM1))
    assert_nothing_left(store, vol, DOM1)


def test_reconcile_removes_only_our_orphans(store: Store, tmp_path: t.Any) -> None:
    vol = VOLS[0]
    use(store, vol)
    ours = tmp_path / "ours.xml"
    ours.write_text(f"<secret ephemeral='no' private='no'><usage type='iscsi'><target>openvolume/{vol}</target>"
                    "</usage></secret>")
    theirs = tmp_path / "theirs.xml"
    theirs.write_text(f"<secret ephemeral='no' private='no'><usage type='iscsi'><target>someone/else-{WORKER}"
                      "</target></usage></secret>")
    virsh("secret-define", str(ours))
    virsh("secret-define", str(theirs))
    try:
        check = ok(reconcile(store, check=True))
        assert f"secret openvolume/{vol}" in check.out and "remove the orphan secret" in check.out
        assert f"openvolume/{vol}" in secrets()
        ok(reconcile(store))
        assert f"openvolume/{vol}" not in secrets()
        assert f"someone/else-{WORKER}" in secrets()
        assert changed(ok(reconcile(store))) == 0
    finally:
        for line in virsh("secret-list").splitlines():
            uuid_ = line.split()[0]
            if f"someone/else-{WORKER}<" in virsh("secret-dumpxml", uuid_):
                virsh("secret-undefine", uuid_)


def test_reconcile_leaves_an_unreachable_host_alone(store: Store, tmp_path: t.Any) -> None:
    # A second compute host that cannot be reached (ssh to a closed port on loopback).
    inventory = tmp_path / "far.yml"
    inventory.write_text(
        "all:\n  children:\n    compute:\n      hosts:\n        far-compute:\n"
        "          ansible_host: 127.0.0.1\n          ansible_port: 9\n          ansible_connection: ssh\n")
    vol = VOLS[0]
    ok(attach(store, vol, DOM1))
    # An attachment on the far host as a crashed run left it (the reservation
    # runs on the controller, so it is recorded although the host is away).
    use(store, "vol-20")
    killed(play("attach.yml", store, extra={"volume": "vol-20", "instance": "far-vm"},  # type: ignore[arg-type]
                inventory=[INVENTORY, str(inventory)], limit="far-compute", kill_at="Hot-plug the disks"))
    far = store.attachment("vol-20", "far-vm")
    assert far is not None and far.status == "attaching"
    recon = reconcile(store, inventory=[INVENTORY, str(inventory)])
    assert re.search(r"vol-20\s+far-compute\s+far-vm\s+attaching\s+unreachable\s+none: the host could not be read",
                     recon.out), recon.out[-3000:]
    # Nothing changed for that host; the reachable one was reconciled as usual.
    after = store.attachment("vol-20", "far-vm")
    assert (after.status, after.owner) == (far.status, far.owner)
    assert_attached(store, vol, DOM1)
    ok(detach(store, vol, DOM1))


# --- etcd: the same promises, and two controllers at once -------------------------------------------
@pytest.fixture
def etcd_store(tmp_path: t.Any) -> t.Iterator[Store]:
    s = Store("etcd", str(tmp_path), lease_ttl=300)
    yield s
    clean(s)


@pytest.mark.parametrize(("step", "remedy"), [("after-hotplug", "reconcile"), ("after-reserve", "rerun"),
                                              ("after-reserve", "reconcile")])
def test_etcd_attach_killed_then_remedied(etcd_store: Store, step: str, remedy: str) -> None:
    store, vol = etcd_store, VOLS[0]
    killed(attach(store, vol, DOM1, kill_at=ATTACH_KILLS[step]))
    att = store.attachment(vol, DOM1)
    assert att.status == "attaching" and att.lapsed and att.connection_info
    other = attach(store, vol, DOM2)
    assert other.rc != 0 and f"volume {vol} is attaching by {DOM1} on lab-compute-1 (lapsed" in other.out
    if remedy == "rerun":
        ok(attach(store, vol, DOM1))
        assert_attached(store, vol, DOM1)
    else:
        ok(reconcile(store))
        if step == "after-hotplug":
            assert_attached(store, vol, DOM1)
        else:
            assert_nothing_left(store, vol, DOM1)
        assert changed(ok(reconcile(store))) == 0


def test_etcd_detach_killed_then_rerun(etcd_store: Store) -> None:
    store, vol = etcd_store, VOLS[1]
    ok(attach(store, vol, DOM1))
    killed(detach(store, vol, DOM1, kill_at=DETACH_KILLS["after-unplug"]))
    assert store.attachment(vol, DOM1).status == "detaching"
    assert attach(store, vol, DOM2).rc != 0
    ok(detach(store, vol, DOM1))
    assert_nothing_left(store, vol, DOM1, DOM2)


def test_etcd_two_controllers_at_once(etcd_store: Store) -> None:
    """Two controllers (two ansible-playbook processes) on one etcd: one volume, two domains, one writer."""
    store, vol = etcd_store, VOLS[2]
    use(store, vol)
    runs = [play("attach.yml", store, extra={"volume": vol, "instance": dom}, background=True) for dom in (DOM1, DOM2)]
    outs = [(r.communicate(timeout=300)[0], r.returncode) for r in runs]  # type: ignore[union-attr]
    winners = [dom for dom, (_out, rc) in zip((DOM1, DOM2), outs, strict=True) if rc == 0]
    assert len(winners) == 1, outs
    loser_out = next(out for out, rc in outs if rc != 0)
    winner, loser = winners[0], (DOM2 if winners[0] == DOM1 else DOM1)
    assert re.search(rf"volume {vol} is (attaching|in-use) by {winner} on lab-compute-1", loser_out), loser_out[-3000:]
    assert_attached(store, vol, winner)
    assert has_disk(loser, vol) == {"live": False, "config": False}
    assert list(store.attachments(vol)) == [winner]
    # And one attachment asked for by two controllers at once: one does the work, the other is refused or finds
    # it done; never two hot-plugs.
    ok(detach(store, vol, winner))
    runs = [play("attach.yml", store, extra={"volume": vol, "instance": DOM1}, background=True) for _run in range(2)]
    outs = [(r.communicate(timeout=300)[0], r.returncode) for r in runs]  # type: ignore[union-attr]
    assert any(rc == 0 for _out, rc in outs), outs
    for out, rc in outs:
        assert rc == 0 or "another run cannot change it while that run lives" in out, out[-3000:]
    assert_attached(store, vol, DOM1)
    assert len([s for s in disks(DOM1) if s == vol]) == 1


# --- check mode predicts the real run, step by step -------------------------------------------------
def test_check_mode_predicts_each_step(store: Store) -> None:
    """--check says changed for exactly the steps the real run then changes, the store's last step included."""
    vol = VOLS[1]
    check = ok(attach(store, vol, DOM1, check=True))
    assert store.state(vol, DOM1) == "available" and has_disk(DOM1, vol) == {"live": False, "config": False}
    assert f"openvolume/{vol}" not in secrets()
    real = ok(attach(store, vol, DOM1))
    assert steps(check, "volume_attach") == steps(real, "volume_attach"), (check.out[-4000:], real.out[-4000:])
    assert "Mark the volumes in-use (attaching -> in-use), with the device and disk they got" in changed_steps(
        real, "volume_attach")
    assert changed(ok(attach(store, vol, DOM1, check=True))) == 0
    assert changed(ok(attach(store, vol, DOM1))) == 0
    # Drift: the live disk pulled by hand; the repair is predicted the same way.
    pull_live_disk(DOM1, vol)
    check = ok(attach(store, vol, DOM1, check=True))
    assert has_disk(DOM1, vol) == {"live": False, "config": True}
    real = ok(attach(store, vol, DOM1))
    assert steps(check, "volume_attach") == steps(real, "volume_attach"), (check.out[-4000:], real.out[-4000:])
    assert has_disk(DOM1, vol) == {"live": True, "config": True}
    # The detach: its last step (detaching -> available) is predicted too.
    check = ok(detach(store, vol, DOM1, check=True))
    assert store.state(vol, DOM1) == "in-use" and has_disk(DOM1, vol) == {"live": True, "config": True}
    real = ok(detach(store, vol, DOM1))
    assert steps(check, "volume_detach") == steps(real, "volume_detach"), (check.out[-4000:], real.out[-4000:])
    assert "Detached (detaching -> available)" in changed_steps(real, "volume_detach")
    assert_nothing_left(store, vol, DOM1)
    assert changed(ok(detach(store, vol, DOM1, check=True))) == 0
