"""The collection's playbooks run the way AWX runs them: through ansible_runner.run().

AWX starts a job as ansible-runner does here: a private data directory with
the inventory, the survey's answers as extra vars, the credentials' injectors
as extra vars (CHAP, cephx, LUKS passphrases) and environment variables (the etcd store,
meta/awx/credential_types), and the results read back as events. The store is
the lab's etcd with authentication, reached through the OV_ETCD_* variables
alone (no store option in any variable of the job). No secret may show in the
output or the events.

The target has its own iSCSI target (tid 398, two LUNs, the lab's CHAP
account), its own domain and its own etcd prefix, so it shares nothing with
the other targets.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import typing as t
import uuid

import ansible_runner
import pytest
import yaml
from lxml import etree

HERE = os.path.dirname(os.path.abspath(__file__))
LAB = os.environ.get("OV_LAB_DIR", "/var/tmp/openvolume-lab")
URI = "qemu:///system"
HOST = "lab-compute-1"
DOM = "ovt-awx-1"
TID = 398
VOL_A, VOL_B = "ovt-awx-a", "ovt-awx-b"


def _config() -> dict[str, str]:
    """integration_config.yml of ansible-test (the lab's facts as lab_<key>)."""
    with open(os.path.join(HERE, "..", "..", "integration_config.yml")) as f:
        return {k: str(v) for k, v in (yaml.safe_load(f) or {}).items()}


CONFIG = _config()
REPO = CONFIG["lab_repo"]
IQN = f"{CONFIG['lab_tgt_iqn_prefix']}:ovt-awx"
CHAP_USER = CONFIG["lab_tgt_chap_user"]
CHAP_PASSWORD = CONFIG["lab_tgt_chap_password"]
ETCD_PASSWORD = CONFIG["lab_etcd_auth_password"]
PREFIX = f"{CONFIG['lab_etcd_auth_prefix']}awx-runner-{uuid.uuid4().hex[:8]}/"
# VOL_B is encrypted; its passphrase comes from the LUKS credential (openvolume_luks.yml).
LUKS_PASSPHRASE = f"awx luks {uuid.uuid4().hex[:12]}"
SECRETS = [CHAP_PASSWORD, ETCD_PASSWORD, LUKS_PASSPHRASE]


def tgtadm(*args: str, check: bool = True) -> str:
    return subprocess.run(["tgtadm", "-C", CONFIG.get("lab_tgt_control_port", "0"), "--lld", "iscsi", *args],
                          check=check, capture_output=True, text=True).stdout


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-q", "-c", URI, *args], check=True, capture_output=True, text=True).stdout


def serials(*, live: bool) -> set[str]:
    root = etree.fromstring(virsh("dumpxml", *([] if live else ["--inactive"]), DOM).encode())
    return {d.findtext("serial") for d in root.findall("./devices/disk") if d.findtext("serial")}


def lun_file(lun: int) -> str:
    return os.path.join(LAB, "tgt", "luns", f"ovt-awx-lun{lun}.img")


def _store_options() -> dict[str, t.Any]:
    """The store as the test reads it directly (what the credential hands the job)."""
    return {"backend": "etcd", "etcd_endpoints": [CONFIG["lab_etcd_auth_endpoint"]],
            "etcd_username": CONFIG["lab_etcd_auth_username"], "etcd_password": ETCD_PASSWORD,
            "etcd_prefix": PREFIX}


def _backend() -> t.Any:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(REPO))))
    if root not in sys.path:
        sys.path.insert(0, root)
    from ansible_collections.openvolume.compute.plugins.module_utils._reservation import open_backend

    return open_backend(_store_options())


def record(volume: str) -> t.Any:
    backend = _backend()
    try:
        return backend.get(volume)
    finally:
        backend.close()


@pytest.fixture(scope="module", autouse=True)
def lab() -> t.Iterator[None]:
    """Own target (two 16 MiB LUNs behind the lab's CHAP account) and own paused domain."""
    domain_sh = os.path.join(REPO, "tests", "lab", "domain.sh")
    subprocess.run([domain_sh, "remove", DOM], check=False, capture_output=True)
    if f"Target {TID}: " in tgtadm("--op", "show", "--mode", "target"):
        tgtadm("--op", "delete", "--mode", "target", "--tid", str(TID), "--force")
    tgtadm("--op", "new", "--mode", "target", "--tid", str(TID), "-T", IQN)
    for lun in (1, 2):
        subprocess.run(["truncate", "-s", "16M", lun_file(lun)], check=True)
        tgtadm("--op", "new", "--mode", "logicalunit", "--tid", str(TID), "--lun", str(lun), "-b", lun_file(lun))
    tgtadm("--op", "bind", "--mode", "target", "--tid", str(TID), "-I", "ALL")
    tgtadm("--op", "bind", "--mode", "account", "--tid", str(TID), "--user", CHAP_USER)
    subprocess.run([domain_sh, "create", DOM, "paused"], check=True, stdout=subprocess.DEVNULL)
    yield
    subprocess.run([domain_sh, "remove", DOM], check=False, capture_output=True)
    tgtadm("--op", "delete", "--mode", "target", "--tid", str(TID), "--force", check=False)
    for lun in (1, 2):
        if os.path.exists(lun_file(lun)):
            os.unlink(lun_file(lun))
    backend = _backend()
    try:
        backend.client.delete_prefix(PREFIX)
    finally:
        backend.close()


def _inventory(attachments: list[dict[str, str]] | None = None) -> dict[str, t.Any]:
    """The inventory an AWX inventory source would give: the catalogue refers to the CHAP credential's variables."""
    volume = {
        "target_iqn": IQN, "target_portals": [CONFIG["lab_tgt_portal"]],
        "auth_username": "{{ openvolume_chap_username }}", "auth_password": "{{ openvolume_chap_password }}",
        # The lab's host has no kernel iSCSI (QEMU's own client), and its
        # domains run no OS (virtio-scsi disks are released without one).
        "attach_mode": "qemu", "bus": "scsi",
    }
    host: dict[str, t.Any] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    if attachments:
        host["openvolume_attachments"] = attachments
    return {"all": {
        "vars": {"openvolume_volumes": {
            VOL_A: dict(volume, target_lun=1),
            VOL_B: dict(volume, target_lun=2, encrypted=True,
                        passphrase=f"{{{{ (openvolume_luks_passphrases | from_yaml)['{VOL_B}'] }}}}")}},
        "children": {"compute": {"hosts": {HOST: host}}},
    }}


class Job(t.NamedTuple):
    status: str
    rc: int
    stdout: str
    events: list[dict[str, t.Any]]
    artifacts: str
    private: str

    def ok(self, task: str) -> list[dict[str, t.Any]]:
        """The results of the runner_on_ok events of ``task`` (by task name)."""
        return [e["event_data"]["res"] for e in self.events
                if e.get("event") == "runner_on_ok" and e["event_data"].get("task") == task]


def job(playbook: str, survey: dict[str, t.Any], *, attachments: list[dict[str, str]] | None = None,
        tmp: str) -> Job:
    """Run a playbook of the collection as an AWX job template with a survey and the four credentials would."""
    private = tempfile.mkdtemp(prefix="awx-job-", dir=tmp)
    os.makedirs(os.path.join(private, "inventory"))
    with open(os.path.join(private, "inventory", "hosts.yml"), "w") as f:
        yaml.safe_dump(_inventory(attachments), f)
    # The CHAP credential's injector (meta/awx/credential_types/openvolume_chap.yml).
    credential_vars = {"openvolume_chap_username": CHAP_USER, "openvolume_chap_password": CHAP_PASSWORD,
                       # The LUKS credential's (openvolume_luks.yml): its text field, JSON here.
                       "openvolume_luks_passphrases": json.dumps({VOL_B: LUKS_PASSPHRASE})}
    # The etcd credential's injector (openvolume_etcd.yml), an empty CA as AWX renders it.
    credential_env = {
        "OV_RESERVATION_BACKEND": "etcd",
        "OV_ETCD_ENDPOINTS": CONFIG["lab_etcd_auth_endpoint"],
        "OV_ETCD_USERNAME": CONFIG["lab_etcd_auth_username"],
        "OV_ETCD_PASSWORD": ETCD_PASSWORD,
        "OV_ETCD_CA_CERT": "",
        "OV_ETCD_PREFIX": PREFIX,
    }
    # The project sync installs the collection into the job's collections path.
    collections = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(REPO))))
    run = ansible_runner.run(
        private_data_dir=private,
        project_dir=REPO,
        playbook=os.path.join("playbooks", playbook),
        inventory=os.path.join(private, "inventory", "hosts.yml"),
        extravars=dict(survey, **credential_vars),
        envvars=dict(credential_env, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_NOCOLOR="1"),
        quiet=True,
        timeout=600,
    )
    stdout = run.stdout.read()
    return Job(run.status, run.rc, stdout, list(run.events), run.config.artifact_dir, private)


def assert_no_secret(job_: Job) -> None:
    """No secret in the output, the events or the artifacts AWX would store and show."""
    # The job did get them (as AWX hands them over): the check below is not vacuous.
    with open(os.path.join(job_.private, "env", "extravars")) as f:
        extravars = f.read()
        assert CHAP_PASSWORD in extravars and LUKS_PASSPHRASE in extravars
    with open(os.path.join(job_.private, "env", "envvars")) as f:
        assert ETCD_PASSWORD in f.read()
    texts = {"stdout": job_.stdout, "events": json.dumps(job_.events)}
    for name in ("stdout", "job_events"):
        path = os.path.join(job_.artifacts, name)
        if os.path.isdir(path):
            for entry in sorted(os.listdir(path)):
                with open(os.path.join(path, entry)) as f:
                    texts[f"{name}/{entry}"] = f.read()
        elif os.path.isfile(path):
            with open(path) as f:
                texts[name] = f.read()
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"a secret shows in the job's {where}"


def _failure(job_: Job) -> str:
    return job_.stdout[-6000:]


def test_attach_and_detach_through_a_survey(tmp_path: t.Any) -> None:
    survey = {"openvolume_target_hosts": HOST, "volume": VOL_A, "instance": DOM}
    attach = job("attach.yml", survey, tmp=str(tmp_path))
    assert attach.status == "successful" and attach.rc == 0, _failure(attach)
    reserved = attach.ok("Reserve the volumes (available -> attaching), connection_info stored")
    assert reserved and reserved[0]["changed"], _failure(attach)
    # The entries: the record made present, then the reservation.
    assert [v["transition"]["to"] for v in reserved[0]["volumes"]][-1] == "attaching"
    plugged = attach.ok("Hot-plug the disks, live and persistent, with their libvirt secrets")
    assert plugged and plugged[0]["changed"]
    in_use = attach.ok("Mark the volumes in-use (attaching -> in-use), with the device and disk they got")
    assert in_use and in_use[0]["volumes"][-1]["transition"]["to"] == "in-use"
    assert VOL_A in serials(live=True) and VOL_A in serials(live=False)
    # The record is in the etcd store the credential named, with its connection_info.
    rec = record(VOL_A)
    assert rec is not None and rec.attachments[DOM].status == "in-use"
    assert rec.attachments[DOM].host == HOST
    assert rec.attachments[DOM].connection_info["data"]["target_iqn"] == IQN
    assert_no_secret(attach)

    detach = job("detach.yml", survey, tmp=str(tmp_path))
    assert detach.status == "successful" and detach.rc == 0, _failure(detach)
    begun = detach.ok("Begin detaching (in-use -> detaching)")
    assert begun and begun[0]["volumes"][-1]["transition"]["to"] == "detaching"
    unplugged = detach.ok("Detach the disks, wait for the guests to release them, remove the secrets nothing uses")
    assert unplugged and unplugged[0]["changed"]
    waited = unplugged[0]["disks"][0]["waited"]
    assert isinstance(waited, float) and 0 <= waited < 30
    done = detach.ok("Detached (detaching -> available)")
    assert done and done[0]["volumes"][-1]["transition"]["to"] == "available"
    assert VOL_A not in serials(live=True) and VOL_A not in serials(live=False)
    rec = record(VOL_A)
    assert rec is None or DOM not in rec.attachments
    assert_no_secret(detach)


def test_two_disks_detached_together(tmp_path: t.Any) -> None:
    """The inventory's attachments (no survey): both disks are asked to leave at once, each says how long it took."""
    both = [{"volume": VOL_A, "instance": DOM}, {"volume": VOL_B, "instance": DOM}]
    survey = {"openvolume_target_hosts": HOST}
    attach = job("attach.yml", survey, attachments=both, tmp=str(tmp_path))
    assert attach.status == "successful", _failure(attach)
    assert {VOL_A, VOL_B} <= serials(live=True)
    # VOL_B got its LUKS header with the credential's passphrase (the first attach formats a blank volume).
    with open(lun_file(2), "rb") as f:
        assert f.read(6) == b"LUKS\xba\xbe"
    with open(lun_file(1), "rb") as f:
        assert f.read(6) != b"LUKS\xba\xbe"
    detach = job("detach.yml", survey, attachments=both, tmp=str(tmp_path))
    assert detach.status == "successful", _failure(detach)
    unplugged = detach.ok("Detach the disks, wait for the guests to release them, remove the secrets nothing uses")
    assert unplugged, _failure(detach)
    disks = unplugged[0]["disks"]
    assert sorted(d["serial"] for d in disks) == [VOL_A, VOL_B]
    assert all(isinstance(d["waited"], float) and 0 <= d["waited"] < 30 for d in disks)
    print("waited:", {d["serial"]: d["waited"] for d in disks})
    assert not {VOL_A, VOL_B} & serials(live=True)
    for vol in (VOL_A, VOL_B):
        rec = record(vol)
        assert rec is None or DOM not in rec.attachments
    assert_no_secret(attach)
    assert_no_secret(detach)
    # Each playbook's recap names the host with no failure.
    assert re.search(rf"^{HOST}\s*:.*failed=0", detach.stdout, re.M)
