#!/usr/bin/python
# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: iscsi_node
short_description: Manage open-iscsi node records (CHAP, startup, session settings) and SendTargets discovery
version_added: 0.1.0
description:
  - Creates, updates and deletes the node records of open-iscsi, the per target and portal entries
    in which C(iscsiadm) keeps how this host logs in to an iSCSI target.
  - This is step 6 of the volume attach flow (see the collection README), done by os-brick for OpenStack Nova.
    Logging in is the job of M(openvolume.compute.iscsi_session).
  - Only what differs is changed; an existing record is never re-created, because C(iscsiadm -o new)
    resets a record to the defaults of C(iscsid.conf) and loses its CHAP settings.
  - With O(discover=true), runs SendTargets discovery against O(portal) and writes the records of the
    targets it returns, then applies O(auth), O(startup) and O(settings) to them.
  - With O(records), handles the records of many targets and portals in one call (one module round trip per
    host instead of one per volume and portal), all or nothing; see O(records).
  - Runs on the compute host. Needs C(iscsiadm) (Debian package C(open-iscsi)). Node records work without
    the kernel iSCSI modules; discovery and login need them and a running C(iscsid).
author:
  - openvolume.compute developers (@openvolume)
extends_documentation_fragment:
  - openvolume.compute.attributes
attributes:
  check_mode:
    support: full
    details:
      - With O(discover=true), check mode still sends SendTargets to the portal (a read) but writes no record.
  diff_mode:
    support: full
    details:
      - The diff shows the managed C(node.*) keys before and after; passwords show as C(********).
      - With O(records), one diff per entry that changes something.
  action_group:
    support: full
    membership: [openvolume.compute.iscsi]
options:
  target:
    description:
      - The target's iSCSI name, an IQN (C(iqn.2010-10.org.example:vol1)), EUI (C(eui.) and 16 hex digits)
        or NAA (C(naa.) and 16 or 32 hex digits).
      - Required unless O(discover=true) or O(records) is given. With O(discover=true) it limits which
        discovered records get O(auth), O(startup) and O(settings).
    type: str
  portal:
    description:
      - The portal, C(host), C(host:port), C([ipv6]) or C([ipv6]:port). The port defaults to 3260.
      - Portals are compared as addresses (C([2001:DB8::1]) is C([2001:db8:0::1])); an existing record is
        kept and addressed in its own spelling, a new one is made in the spelling given here, which is the
        one the kernel and udev's by-path names then use.
      - An IPv4-mapped IPv6 address (C([::ffff:192.0.2.10])) is refused, because iscsiadm cannot take it on
        its command line; use the IPv4 address.
      - A portal group tag may follow (C(192.0.2.10:3260,1)); a new record is then made with it. open-iscsi
        keeps a record without tag as one file per portal, so records for several O(ifaces) need the tag.
      - Required with O(state=present) and with O(discover=true).
      - With O(state=absent) and no portal, the records of O(target) at every portal are deleted.
    type: str
  iface:
    description:
      - The open-iscsi interface (C(iscsiadm -m iface)) the record belongs to.
      - Without O(iface) and O(ifaces), C(default).
      - With O(records), the iface of the entries that give neither O(records[].iface) nor O(records[].ifaces)
        (so that a C(module_defaults) group can set it once).
    type: str
  ifaces:
    description:
      - Several ifaces, the same record (O(auth), O(startup), O(settings)) for each of them, as one session
        per iface needs (multipath over one portal through two NICs); see RV(records).
      - With O(state=absent), the records of these ifaces are deleted.
      - With O(records), the ifaces of the entries that give neither O(records[].iface) nor O(records[].ifaces).
    type: list
    elements: str
  state:
    description:
      - V(present) creates the record if missing and sets the requested keys.
      - V(absent) deletes it. It does not log out; log out first with M(openvolume.compute.iscsi_session).
      - With O(records), the state of the entries that do not give their own O(records[].state).
    type: str
    choices: [present, absent]
    default: present
  auth:
    description:
      - CHAP for the session, stored as C(node.session.auth.*).
      - Not given means the record's authentication is left as it is.
    type: dict
    suboptions: &chap_suboptions
      method:
        description:
          - V(CHAP) or V(None). V(None) also clears any stored credentials.
        type: str
        choices: [CHAP, None]
        default: CHAP
      username:
        description: The CHAP name this host presents to the target.
        type: str
      password:
        description: The CHAP secret this host presents to the target. Never returned or logged.
        type: str
      username_in:
        description: For mutual CHAP, the name the target presents to this host.
        type: str
      password_in:
        description: For mutual CHAP, the secret the target presents to this host. Never returned or logged.
        type: str
  discovery_auth:
    description:
      - CHAP for SendTargets discovery (C(discovery.sendtargets.auth.*)), with O(discover=true).
    type: dict
    suboptions: *chap_suboptions
  startup:
    description:
      - C(node.startup). V(automatic) makes iscsid log in to the node when it starts, which is what a
        volume attached to a running instance needs to survive a host reboot.
    type: str
    choices: [manual, automatic, onboot]
  settings:
    description:
      - Further keys of the record, for example C(node.session.timeo.replacement_timeout) or
        C(node.conn[0].timeo.login_timeout). Booleans become C(Yes)/C(No).
      - Keys must be ones iscsiadm knows (see C(iscsiadm -m node -T TARGET -p PORTAL));
        authentication and startup keys have their own options.
      - Not given means no further keys are managed.
    type: dict
  discover:
    description:
      - Run SendTargets discovery at O(portal) and create the records of the targets found.
      - Needs the kernel iSCSI transport (C(iscsi_tcp)) and a running iscsid on the host.
    type: bool
    default: false
  records:
    description:
      - Several node records in one call, each entry with the options of the single form. Mutually exclusive
        with those top-level options (O(target), O(portal), O(auth), O(startup), O(settings)) and with
        O(discover); O(state), O(iface) and O(ifaces) are the defaults of the entries' own.
      - All or nothing. The entries are applied in order; when one fails (a key iscsiadm does not know,
        iscsiadm failing), the records the earlier entries created are deleted again, the keys they changed
        are set back and the records they deleted are made again, then the task fails with the error of the
        entry that failed, named as C(records[N]). Every entry is validated before anything changes.
      - Several entries may name the same record (two volumes behind one target); the later one sees the
        record as the earlier one left it, in check mode too.
      - See RV(records) for the per-entry results.
    type: list
    elements: dict
    suboptions:
      target:
        description: As O(target).
        type: str
        required: true
      portal:
        description:
          - As O(portal). Required when the entry's state is V(present).
        type: str
      iface:
        description: As O(iface).
        type: str
      ifaces:
        description: As O(ifaces).
        type: list
        elements: str
      state:
        description: As O(state); defaults to the top-level O(state).
        type: str
        choices: [present, absent]
      auth:
        description: As O(auth).
        type: dict
        suboptions: *chap_suboptions
      startup:
        description: As O(startup).
        type: str
        choices: [manual, automatic, onboot]
      settings:
        description: As O(settings).
        type: dict
notes:
  - C(iscsiadm) takes a record's values only on its command line (C(-v VALUE); open-iscsi has no option to read
    one from a file or standard input), so a CHAP secret is in C(/proc/PID/cmdline) of that C(iscsiadm), where
    any local user can read it, for the few milliseconds C(iscsiadm -o update) runs. os-brick has the same
    window. The module sets a secret only when it differs from the stored one, so an unchanged record never
    opens the window; mounting C(/proc) with C(hidepid=invisible) hides other users' processes entirely. The
    secret is never in the module's result, diff or logs. open-iscsi keeps it in clear in the node record
    (C(/etc/iscsi/nodes), readable by root only), as it must to log in.
  - A line of C(iscsiadm -m node) the module does not understand is skipped with a warning instead of failing
    the task.
  - iscsiadm exit 6 (node database busy or unwritable, as when another iscsiadm holds its lock) is retried a
    few times within about three seconds, as os-brick does.
seealso:
  - module: openvolume.compute.iscsi_session
  - name: iscsiadm(8)
    description: The open-iscsi administration utility.
    link: https://github.com/open-iscsi/open-iscsi/blob/master/doc/iscsiadm.8
"""

EXAMPLES = r"""
- name: Node record for a volume's target, with CHAP and automatic login at boot
  openvolume.compute.iscsi_node:
    target: iqn.2010-10.org.example:volume-0b5e
    portal: 192.0.2.10:3260
    auth:
      username: "{{ volume.auth_username }}"
      password: "{{ volume.auth_password }}"
    startup: automatic
    settings:
      node.session.timeo.replacement_timeout: 20

- name: Mutual CHAP on an IPv6 portal
  openvolume.compute.iscsi_node:
    target: iqn.2010-10.org.example:volume-0b5e
    portal: "[2001:db8::10]:3260"
    auth:
      username: host1
      password: "{{ chap_secret }}"
      username_in: array1
      password_in: "{{ chap_secret_in }}"

- name: Discover what a portal offers and prepare every record it returns
  openvolume.compute.iscsi_node:
    portal: 192.0.2.10
    discover: true
    discovery_auth:
      username: discovery
      password: "{{ discovery_secret }}"
    startup: manual
  register: found

- name: The same record through two ifaces (two sessions to one portal)
  openvolume.compute.iscsi_node:
    target: iqn.2010-10.org.example:volume-0b5e
    portal: 192.0.2.10:3260,1  # the portal group tag: a record per iface needs it
    ifaces: [iface-eth1, iface-eth2]
    auth:
      username: "{{ volume.auth_username }}"
      password: "{{ volume.auth_password }}"

- name: The records of all volumes of this host in one call (all or nothing)
  openvolume.compute.iscsi_node:
    records:
      - target: iqn.2010-10.org.example:volume-0b5e
        portal: 192.0.2.10:3260
        auth: &volume_chap
          username: "{{ volume.auth_username }}"
          password: "{{ volume.auth_password }}"
      - target: iqn.2010-10.org.example:volume-0b5e
        portal: 192.0.2.11:3260
        auth: *volume_chap
      - target: iqn.2010-10.org.example:volume-7c21
        portal: 192.0.2.10:3260
        startup: automatic
      - target: iqn.2010-10.org.example:volume-old
        state: absent
  register: nodes

- name: Forget a target at every portal
  openvolume.compute.iscsi_node:
    target: iqn.2010-10.org.example:volume-0b5e
    state: absent
"""

RETURN = r"""
target:
  description: The target of the request.
  returned: without O(records)
  type: str
  sample: iqn.2010-10.org.example:volume-0b5e
portal:
  description: The portal of the request, normalised to C(host:port).
  returned: when given, without O(records)
  type: str
  sample: 192.0.2.10:3260
iface:
  description: The iface of the record (the first of O(ifaces)).
  returned: without O(records)
  type: str
  sample: default
ifaces:
  description: The ifaces of the request.
  returned: without O(records)
  type: list
  elements: str
  sample: [default]
created:
  description: Whether this run created the record (or would, in check mode).
  returned: with O(state=present), O(discover=false) and without O(records)
  type: bool
record:
  description:
    - The managed keys of the record (of the first iface) after the run; passwords show as C(********) when set.
  returned: with O(state=present), O(discover=false) and without O(records)
  type: dict
  sample:
    node.startup: automatic
    node.session.auth.authmethod: CHAP
    node.session.auth.username: host1
    node.session.auth.password: "********"
records:
  description:
    - Without O(records), for each iface the record's portal, whether this run created it and its managed keys
      (as RV(record)).
    - With O(records), one result per entry, in the order of the entries, with the keys the single form returns
      for it (RV(target), RV(portal), RV(iface), RV(ifaces), RV(created), RV(record), RV(records),
      RV(removed)) and its C(state) and C(changed). A failed call returns no per-entry results, as it changed
      nothing.
  returned: with O(state=present) and O(discover=false), and with O(records)
  type: list
  elements: dict
  sample: [{iface: iface-eth1, portal: "[2001:db8::10]:3260", created: true, record: {node.startup: manual}}]
removed:
  description: The records deleted (or that would be, in check mode).
  returned: with O(state=absent), without O(records)
  type: list
  elements: dict
  sample: [{target: iqn.2010-10.org.example:volume-0b5e, portal: "192.0.2.10:3260", tpgt: 1, iface: default}]
discovered:
  description: What SendTargets returned.
  returned: with O(discover=true)
  type: list
  elements: dict
  sample: [{target: iqn.2010-10.org.example:volume-0b5e, portal: "192.0.2.10:3260", tpgt: 1}]
"""

from ansible_collections.openvolume.compute.plugins.module_utils._common import OpenVolumeModule
from ansible_collections.openvolume.compute.plugins.module_utils._iscsi_node import MODULE_KWARGS, argument_spec, run


def main() -> None:
    run(OpenVolumeModule(argument_spec=argument_spec(), **MODULE_KWARGS))


if __name__ == "__main__":
    main()
