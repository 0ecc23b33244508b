#!/usr/bin/python
# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: volume_reservation
short_description: Reserve, attach, detach and release volumes atomically, the way Cinder does
version_added: 0.1.0
description:
  - Records which volume is attached to which instance on which host, and is the gate that keeps a
    volume from being attached twice. This is what Cinder does for OpenStack Nova in steps 2, 3 and 13
    of the attach flow and steps 1, 2 and 4 of the detach flow (see the collection README).
  - "Each attachment (a volume and an instance) goes
    C(available -> attaching -> in-use -> detaching -> available). Only these transitions are legal:
    V(available) to V(attaching) (reserve); V(attaching) to V(in-use) (attach), V(available) (unreserve)
    or V(error_attaching); V(in-use) to V(detaching); V(detaching) to V(available) (detach), V(in-use)
    (roll back) or V(error_detaching); V(error_attaching) to V(available) or V(attaching) (retry);
    V(error_detaching) to V(in-use), V(detaching) or V(available). Anything else fails with the current
    state and holder, for example C(volume vol-1 is in-use by vm1 on compute1)."
  - Every transition is one atomic compare-and-set on the backend, so of two plays that reserve the same
    volume at once exactly one wins.
  - O(state) is the declared target state. Asking for the state an attachment is already in changes
    nothing (C(changed=false)); O(mountpoint), O(mode) and O(connection_info) given then update it.
  - "Owners and leases: V(attaching) and V(detaching) belong to the run that set them, its O(owner) (by
    default the ansible-playbook process the task runs under, on this controller), with a lease of
    O(lease_ttl) seconds that a small background process renews while that run lives, so a long step
    never loses its reservation. Another run cannot change that attachment while its owner lives; it
    fails saying who holds it, since when, and when the lease ends."
  - "A lapsed lease frees nothing. When the owner is gone (its lease ended, or, on the same controller,
    its process is dead) the attachment is C(lapsed): the run may have died after the disk was
    hot-plugged, so the volume stays held, and another instance cannot reserve it (unless the volume
    is multiattach) until its truth is established on the recorded host: by attaching or detaching
    that same attachment again (the roles do it), or by C(playbooks/reconcile.yml). A request for a
    lapsed attachment takes it over (transition C(take_over), or the requested transition, with a
    warning naming the run it took over from)."
  - O(connection_info) is stored from the reservation on (O(state=attaching)), before anything is
    connected, so that whoever comes after a crash knows how to disconnect.
  - "The records live on the controller (O(backend=sqlite), one file) or in etcd (O(backend=etcd), shared by
    several controllers such as AWX execution nodes). The task always runs on the controller, in its own
    process (an action plugin: no module is sent to a host, whatever C(delegate_to) says); with O(volumes) one
    task handles many volumes, so use C(run_once) where one task serves a whole play."
author:
  - openvolume.compute developers (@openvolume)
extends_documentation_fragment:
  - openvolume.compute.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads the record and reports the transition it would make; writes nothing.
  diff_mode:
    support: full
    details:
      - The diff shows the volume record before and after; secrets in connection_info show as C(********).
  action_group:
    support: full
    membership: [openvolume.compute.reservation]
options:
  volume_id:
    description:
      - The volume's id, the key of its record (for a Cinder-like catalogue, its UUID).
      - Exactly one of O(volume_id) and O(volumes) is required.
    type: str
  state:
    description:
      - The declared target state.
      - V(present) makes sure the record exists (creating it with O(multiattach)), whatever its attachments.
      - V(available) with O(instance) means that the instance has no attachment; the legal transition to it
        is made (unreserve, detach, reset). Without O(instance) it creates the record if missing and
        fails if the volume has attachments.
      - V(attaching) reserves the volume for O(instance) on O(host) (Cinder C(reserve_volume)). A volume
        that is not O(multiattach) and has any other attachment is refused.
      - V(in-use) marks the attachment done (Cinder C(attach)) and stores O(connection_info) in the same
        transaction; O(connection_info) is required unless the attachment already has one.
      - V(detaching) begins a detach (Cinder C(begin_detaching)); V(in-use) again rolls it back.
      - V(error_attaching) and V(error_detaching) record that a rollback itself failed; they keep the
        attachment for an operator's repair and have no lease.
      - V(absent) deletes the record; only a volume without attachments can be deleted.
    type: str
    choices: [present, available, attaching, in-use, detaching, error_attaching, error_detaching, absent]
    default: present
  instance:
    description:
      - The instance (libvirt domain name or UUID) the attachment belongs to.
      - Required with V(attaching), V(in-use), V(detaching), V(error_attaching) and V(error_detaching).
    type: str
  host:
    description:
      - The compute host the instance runs on. Required with O(state=attaching); afterwards, when given,
        it must match the host of the reservation.
    type: str
  mountpoint:
    description: The device the volume has in the instance, for example C(/dev/vdb).
    type: str
  mode:
    description: The attach mode, read-write or read-only. New reservations default to V(rw).
    type: str
    choices: [rw, ro]
  connection_info:
    description:
      - What a compute host needs to connect to the volume and, later, to disconnect from it, as Cinder's
        C(initialize_connection) returns it, a dict with C(driver_volume_type) (for example C(iscsi)) and
        C(data) (C(target_iqn), C(target_portal), C(target_lun), C(auth_method), C(auth_username),
        C(auth_password)).
      - Must have C(driver_volume_type) and C(data). Stored with O(state=attaching) or O(state=in-use), and
        required for O(state=in-use) unless the attachment has it already (seed 004 of the flow; a volume in
        use without it cannot be detached).
      - Values under keys named like a password, secret or key (C(auth_password), C(auth_password_in), ...)
        are never shown in results, diffs or logs.
    type: dict
  multiattach:
    description:
      - Whether the volume may be attached to several instances at once (never twice to one instance).
      - Set when the record is created, with O(state=present) or O(state=available). It can be changed
        later only while the volume has no attachment. Defaults to V(false) for a new record.
    type: bool
  size:
    description:
      - The volume's size in bytes, as an extend grew it (the C(volume_extend) role records it). Recorded with
        O(state=present), V(available) or V(in-use); a size smaller than the recorded one is refused (volumes only
        grow). The change is named C(resize).
    type: int
  volumes:
    description:
      - Many volumes in one task, each with the per-volume options above. Mutually exclusive with
        O(volume_id), O(instance), O(host), O(mountpoint), O(mode), O(connection_info), O(multiattach) and O(size).
      - The entries are planned in order (several entries for one volume apply to the record the earlier ones
        leave) and written in one transaction (SQLite) or one etcd transaction.
      - "The batch is all-or-nothing: when an entry is refused, nothing of the batch is written and the task fails
        naming the entry, for example C(volumes[3] (volume vol-4): ...; nothing in this batch was changed). A batch
        larger than one etcd transaction may hold (C(--max-txn-ops), 128 operations by default, about 60 volumes)
        is written volume by volume and what was written is put back when a later entry is refused."
    type: list
    elements: dict
    suboptions:
      volume_id:
        description: See O(volume_id).
        type: str
        required: true
      state:
        description: See O(state).
        type: str
        choices: [present, available, attaching, in-use, detaching, error_attaching, error_detaching, absent]
        default: present
      instance:
        description: See O(instance).
        type: str
      host:
        description: See O(host).
        type: str
      mountpoint:
        description: See O(mountpoint).
        type: str
      mode:
        description: See O(mode).
        type: str
        choices: [rw, ro]
      connection_info:
        description: See O(connection_info).
        type: dict
      multiattach:
        description: See O(multiattach).
        type: bool
      size:
        description: See O(size).
        type: int
  lease_ttl:
    description:
      - Seconds an V(attaching) or V(detaching) state is held without renewal. While the owner's process lives
        the lease is renewed every O(lease_ttl)/3 seconds; once it ends the attachment is lapsed (held, to be
        established; see above).
      - It bounds how long another controller waits before it may establish the truth of a crashed run's
        attachment; on the same controller a dead run is seen at once. At least 2.
    type: int
    default: 600
  owner:
    description:
      - The token that names the run holding the transitional states this task sets, for example an AWX job
        id. Two runs must never share one.
      - Default is the ansible-playbook process this task runs under (C(CONTROLLER:PID:START)), which also
        lets the lease be renewed while that process lives and be seen dead at once when it is not. With a
        token of your own the lease is still renewed while the ansible-playbook process lives.
    type: str
  backend:
    description:
      - Where the records live. V(sqlite) is one file on the controller (O(sqlite_path)); V(etcd) is an
        etcd v3 cluster (O(etcd_endpoints)) shared by several controllers.
      - When not given, the controller's environment variable E(OV_RESERVATION_BACKEND), if set (an AWX credential
        of the collection's etcd credential type sets it to V(etcd)).
    type: str
    choices: [sqlite, etcd]
    default: sqlite
  sqlite_path:
    description:
      - The SQLite database file, created (mode 0600, directory 0700) if missing. It holds connection_info
        including CHAP secrets. A file that is not an openvolume reservation database is refused and left alone.
    type: path
    default: ~/.local/state/openvolume/volumes.db
  etcd_endpoints:
    description:
      - Client URLs of the etcd cluster, C(http://HOST:PORT) or C(https://HOST:PORT); the first that answers
        is used.
      - When not given, the controller's environment variable E(OV_ETCD_ENDPOINTS) (comma-separated), if set.
    type: list
    elements: str
    default: [http://127.0.0.1:2379]
  etcd_username:
    description:
      - User for etcd authentication; give it with O(etcd_password).
      - When not given, the controller's environment variable E(OV_ETCD_USERNAME), if set.
    type: str
  etcd_password:
    description:
      - Password of O(etcd_username). Never returned or logged.
      - When not given, the controller's environment variable E(OV_ETCD_PASSWORD), if set; this is how an AWX
        credential hands it over without it ever being a variable of the job.
    type: str
  etcd_ca_cert:
    description:
      - CA certificate file to verify an C(https) endpoint.
      - When not given, the controller's environment variable E(OV_ETCD_CA_CERT), if set.
    type: path
  etcd_prefix:
    description:
      - Key prefix of the records in etcd; give every independent set of volumes its own. With etcd
        authentication, the user needs read-write permission on this prefix.
      - When not given, the controller's environment variable E(OV_ETCD_PREFIX), if set.
    type: str
    default: /openvolume/
  etcd_timeout:
    description: Seconds to wait for each etcd request.
    type: float
    default: 5.0
requirements:
  - For O(backend=etcd), the Python library C(etcd3gw) on the controller. In AWX or Ansible Automation
    Platform, put it in the execution environment (the collection's C(meta/ee-requirements.txt) lists it).
notes:
  - The sqlite backend serialises transitions with C(BEGIN IMMEDIATE) transactions in WAL mode and honours
    lease expiry on every read and transition, by the controller's clock. Use it when all plays run from one
    controller; use etcd when several controllers share the volumes.
  - The etcd backend writes each transition as one transaction that compares the record's revision. Both
    backends keep lease ends in the records and judge them by the reading controller's clock, so controllers
    that share etcd need synchronised clocks (NTP); a skew far below O(lease_ttl) does not matter.
  - "The environment variables named above are read in the controller's process (this task always runs there),
    not on the host the task is delegated to; a task's C(environment:) keyword does not reach them. An option given
    in the task (or through C(module_defaults)) wins over its variable; a variable that is set but empty counts as not
    set (an AWX credential injects every variable of its type, empty for a blank field)."
  - The lease keeper is a detached process of the controller (one per store and run), started by this task
    when it leaves transitional states held; it needs nothing but the store and stops with the run.
  - When etcd cannot be reached, or the SQLite file is corrupted or foreign, the module fails saying so and
    nothing is changed.
seealso:
  - plugin: openvolume.compute.volumes
    plugin_type: lookup
  - module: openvolume.compute.iscsi_node
  - module: openvolume.compute.iscsi_session
  - name: Cinder attach and detach API
    description: The volume actions this module mirrors (reserve, attach, begin_detaching, roll_detaching, detach).
    link: https://docs.openstack.org/api-ref/block-storage/v3/#volume-actions-volumes-action
"""

EXAMPLES = r"""
- name: Register the volume catalogue (once per play)
  openvolume.compute.volume_reservation:
    volumes: "{{ catalogue | map('combine', {'state': 'present'}) }}"
  run_once: true
  vars:
    catalogue:
      - {volume_id: vol-0b5e, multiattach: false}
      - {volume_id: vol-shared, multiattach: true}

- name: Reserve a volume for an instance (step 3 of the attach flow)
  openvolume.compute.volume_reservation:
    volume_id: vol-0b5e
    state: attaching
    instance: "{{ instance }}"
    host: "{{ inventory_hostname }}"
    mountpoint: /dev/vdb

- name: Attached; store connection_info with the state change (step 13)
  openvolume.compute.volume_reservation:
    volume_id: vol-0b5e
    state: in-use
    instance: "{{ instance }}"
    connection_info:
      driver_volume_type: iscsi
      data:
        target_iqn: iqn.2010-10.org.example:vol-0b5e
        target_portal: 192.0.2.10:3260
        target_lun: 1
        auth_method: CHAP
        auth_username: compute1
        auth_password: "{{ chap_secret }}"

- name: Roll back a reservation after a failed hot-plug
  openvolume.compute.volume_reservation:
    volume_id: vol-0b5e
    state: available
    instance: "{{ instance }}"

- name: Begin detaching twenty volumes in one round trip, all or nothing
  openvolume.compute.volume_reservation:
    volumes: "{{ instance_volumes | map('combine', {'state': 'detaching', 'instance': instance}) }}"
  register: detaching
  vars:
    instance_volumes: [{volume_id: vol-01}, {volume_id: vol-02}, {volume_id: vol-03}]

- name: Shared records in etcd, for plays from several controllers
  openvolume.compute.volume_reservation:
    backend: etcd
    etcd_endpoints: [https://etcd1.example.com:2379, https://etcd2.example.com:2379]
    etcd_ca_cert: /etc/ssl/certs/etcd-ca.pem
    etcd_username: openvolume
    etcd_password: "{{ vault_etcd_password }}"
    volume_id: vol-0b5e
    state: detaching
    instance: "{{ instance }}"
"""

RETURN = r"""
volume:
  description:
    - The volume record after the task (in check mode, as it would be); C(null) when it is absent.
    - Secrets in connection_info show as C(********).
  returned: with O(volume_id)
  type: dict
  contains:
    volume_id:
      description: The volume's id.
      type: str
      sample: vol-0b5e
    status:
      description:
        - The volume's status derived from its attachments, V(available) without any, V(in-use) when all
          are in use, otherwise the first of V(error_attaching), V(error_detaching), V(attaching),
          V(detaching) that one of them is in.
      type: str
      sample: in-use
    multiattach:
      description: Whether the volume may be attached to several instances.
      type: bool
      sample: false
    size:
      description: The volume's size in bytes as the last extend recorded it; C(null) when never recorded.
      type: int
      sample: 134217728
    attachments:
      description: The attachments, sorted by instance.
      type: list
      elements: dict
      contains:
        instance:
          description: The instance.
          type: str
        host:
          description: The compute host.
          type: str
        status:
          description: The attachment's state.
          type: str
          sample: in-use
        mountpoint:
          description: The device in the instance.
          type: str
        mode:
          description: rw or ro.
          type: str
        connection_info:
          description: Stored from V(attaching) on; secrets masked.
          type: dict
        expires_at:
          description: When the lease of a V(attaching) or V(detaching) state ends, in seconds since the epoch.
          type: float
        owner:
          description:
            - The run holding a V(attaching) or V(detaching) state - C(token), C(controller), C(pid), C(started)
              (the process's start time), C(since); C(null) in the other states.
          type: dict
        lapsed:
          description:
            - Whether the holder of a V(attaching) or V(detaching) state is gone (its lease ended, or its process
              is dead). A lapsed attachment still holds the volume until its truth is established.
          type: bool
  sample:
    volume_id: vol-0b5e
    status: in-use
    multiattach: false
    attachments:
      - instance: vm1
        host: compute1
        status: in-use
        mountpoint: /dev/vdb
        mode: rw
        connection_info:
          driver_volume_type: iscsi
          data: {target_iqn: "iqn.2010-10.org.example:vol-0b5e", target_portal: "192.0.2.10:3260",
                 target_lun: 1, auth_method: CHAP, auth_username: compute1, auth_password: "********"}
        expires_at: null
        owner: null
        lapsed: false
transition:
  description:
    - The transition made (or that would be, in check mode), C(null) when nothing changed. C(from) and C(to)
      are the attachment's states with O(instance), else the volume's (V(absent) for no record).
  returned: with O(volume_id)
  type: dict
  sample: {name: reserve, from: available, to: attaching}
owner:
  description: The run this task acted as (see O(owner)).
  returned: always
  type: dict
  sample: {token: "ctl1:4242:1234567", controller: ctl1, pid: 4242, started: 1234567, since: 1795461029.1}
lease_kept:
  description: Whether a lease keeper renews the leases this run holds (false when its process is unknown).
  returned: always
  type: bool
taken_over_from:
  description: With O(volume_id), the owner of a lapsed attachment this task took over.
  returned: when a lapsed attachment was taken over
  type: dict
volumes:
  description: One result per entry of O(volumes), in order.
  returned: with O(volumes)
  type: list
  elements: dict
  contains:
    volume_id:
      description: The entry's volume.
      type: str
    changed:
      description: Whether this entry changed (or would change) the record.
      type: bool
    transition:
      description: As RV(transition).
      type: dict
    volume:
      description: As RV(volume).
      type: dict
    taken_over_from:
      description: As RV(taken_over_from).
      type: dict
"""

from ansible_collections.openvolume.compute.plugins.module_utils._common import OpenVolumeModule
from ansible_collections.openvolume.compute.plugins.module_utils._reservation import (
    MODULE_KWARGS,
    module_argument_spec,
    run,
)


def main() -> None:
    module = OpenVolumeModule(argument_spec=module_argument_spec(), supports_check_mode=True, **MODULE_KWARGS)
    run(module)


if __name__ == "__main__":
    main()
