# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""open-iscsi's iscsiadm: one command wrapper, its exit codes and its output.

Everything that runs ``iscsiadm`` goes through :class:`Iscsiadm`: argument
lists (never a shell string), ``LC_ALL=C``, keyword-only arguments, and a
failure turned into an :class:`IscsiadmError` that says what the exit code
means and what to do about it. The parsers are plain functions over the text
iscsiadm prints, so they are unit-tested with captured output.

Portals are compared canonically (``[2001:DB8::1]:3260`` and
``[2001:db8:0:0::1]:3260`` are one portal) but iscsiadm is always handed the
exact text of the record it already has: ``iscsiadm -o new`` with another
spelling makes a second record of the same portal, and the kernel (and so
udev's by-path name) uses the record's spelling verbatim.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
import typing as t
from dataclasses import dataclass, field

from ansible_collections.openvolume.compute.plugins.module_utils._common import OpenVolumeError, mask_secrets

DEFAULT_PORT = 3260

# open-iscsi include/iscsi_err.h: code -> (symbol, meaning, what the user can do).
EXIT_CODES: dict[int, tuple[str, str, str]] = {
    1: ("ISCSI_ERR", "generic error", "read iscsiadm's message below"),
    2: ("ISCSI_ERR_SESS_NOT_FOUND", "session not found", "check that the session is logged in"),
    3: ("ISCSI_ERR_NOMEM", "out of memory", "free memory on the host and retry"),
    4: ("ISCSI_ERR_TRANS", "could not connect to the portal",
        "check the portal address and port, and that the target listens there"),
    5: ("ISCSI_ERR_LOGIN", "login failed", "check the target name, the LUN mapping and the target's ACL"),
    6: ("ISCSI_ERR_IDBM", "the iSCSI node database could not be read or written",
        "check /etc/iscsi/nodes (permissions, disk space) and that no other iscsiadm holds its lock "
        "(/run/lock/iscsi/lock.write) for long"),
    7: ("ISCSI_ERR_INVAL", "invalid argument", "check the names and values passed (a settings key iscsiadm "
        "does not know is reported this way)"),
    8: ("ISCSI_ERR_TRANS_TIMEOUT", "connection timed out",
        "check that the portal is reachable from this host (routing, firewall)"),
    9: ("ISCSI_ERR_INTERNAL", "internal iscsid or kernel failure", "read the host's kernel log (dmesg)"),
    10: ("ISCSI_ERR_LOGOUT", "logout failed", "check for users of the session's devices"),
    11: ("ISCSI_ERR_PDU_TIMEOUT", "iSCSI PDU timed out", "check the network path to the target"),
    12: ("ISCSI_ERR_TRANS_NOT_FOUND", "the iSCSI transport is not loaded in the kernel",
         "load it on this host (modprobe iscsi_tcp); containers and kernels without modules cannot log in"),
    13: ("ISCSI_ERR_ACCESS", "permission denied", "run the task with become: true"),
    14: ("ISCSI_ERR_TRANS_CAPS", "the transport does not support this operation", "use another iface"),
    15: ("ISCSI_ERR_SESS_EXISTS", "a session is already logged in", "nothing to do: the session exists"),
    16: ("ISCSI_ERR_INVALID_MGMT_REQ", "invalid request to iscsid", "check that iscsiadm and iscsid match"),
    17: ("ISCSI_ERR_ISNS_UNAVAILABLE", "iSNS is not supported", "use SendTargets discovery"),
    18: ("ISCSI_ERR_ISCSID_COMM_ERR", "talking to iscsid failed", "restart iscsid on this host"),
    19: ("ISCSI_ERR_FATAL_LOGIN", "fatal login error", "check the target name and that the target exists"),
    20: ("ISCSI_ERR_ISCSID_NOTCONN", "could not connect to iscsid",
         "start iscsid on this host (the iscsi_initiator role does)"),
    21: ("ISCSI_ERR_NO_OBJS_FOUND", "no records, targets or sessions found", "nothing matched the request"),
    22: ("ISCSI_ERR_SYSFS_LOOKUP", "sysfs lookup failed", "check that the session still exists"),
    23: ("ISCSI_ERR_HOST_NOT_FOUND", "SCSI host not found", "check that the session still exists"),
    24: ("ISCSI_ERR_LOGIN_AUTH_FAILED", "authentication failed",
         "check the CHAP username and password (auth) against the target's account"),
    25: ("ISCSI_ERR_ISNS_QUERY", "iSNS query failed", "check the iSNS server"),
    26: ("ISCSI_ERR_ISNS_REG_FAILED", "iSNS registration failed", "check the iSNS server"),
    27: ("ISCSI_ERR_OP_NOT_SUPP", "operation not supported", "use another iface or transport"),
    28: ("ISCSI_ERR_BUSY", "device or resource busy", "retry once the other operation finished"),
    29: ("ISCSI_ERR_AGAIN", "temporary failure", "retry"),
    30: ("ISCSI_ERR_UNKNOWN_DISCOVERY_TYPE", "unknown discovery type", "use sendtargets"),
    31: ("ISCSI_ERR_CHILD_TERMINATED", "a child process was terminated", "retry"),
    32: ("ISCSI_ERR_SESSION_NOT_CONNECTED", "the target is likely not connected",
         "check the network path to the portal and the target's state"),
    33: ("ISCSI_ERR_REQ_TIMEDOUT", "iscsid did not answer the request in time",
         "iscsid is busy or hung: check it (systemctl status iscsid, its log) and retry"),
}

RC_IDBM = 6
# What iscsiadm prints, alone, for a discovery record that does not exist.
_NOT_FOUND = re.compile(r"Discovery record \[.*\] not found")

RC_SESSION_EXISTS = 15
RC_NO_OBJECTS = 21
# ISCSI_ERR_SYSFS_LOOKUP: "-m session -r SID" of a session that is gone
# (another tool logged it out a moment ago).
RC_SYSFS_LOOKUP = 22
SYSFS = "/sys"

# A node-database command that fails with exit 6 is retried after these
# pauses (seconds). iscsiadm itself waits up to 30 s for the database lock and
# then gives up with 6; another iscsiadm that creates records at the same
# moment (os-brick on a busy host) is the usual cause, so a short retry as
# os-brick does is enough, and a real failure still surfaces within seconds.
IDBM_RETRY_DELAYS = (0.25, 0.5, 1.0, 1.5)

# Sessions of these transports carry SCSI disks this collection manages
# (os-brick's VALID_SESSIONS_PREFIX); offload transports (bnx2i, qla4xxx,
# be2iscsi, cxgb4i ...) log in through their iface, flash sessions of an HBA
# are the HBA's own.
SESSION_TRANSPORTS = frozenset({"tcp", "iser"})

# RFC 3720 3.2.6.3: iqn.YYYY-MM.reversed.domain[:anything], eui.16HEX,
# naa.16HEX or naa.32HEX; at most 223 bytes. iscsiadm itself accepts
# almost anything, so a typo would only show up as a failed login later.
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_IQN = re.compile(rf"^iqn\.\d{{4}}-(0[1-9]|1[0-2])\.{_LABEL}(\.{_LABEL})*(:\S+)?$")
_EUI = re.compile(r"^eui\.[0-9A-Fa-f]{16}$")
_NAA = re.compile(r"^naa\.([0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})$")
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$", re.IGNORECASE)


class IscsiError(OpenVolumeError):
    """Base of the errors of the iSCSI modules."""


class IscsiadmError(IscsiError):
    """iscsiadm exited with a code the caller did not expect."""

    def __init__(self, msg: str, *, rc: int, cmd: list[str], stderr: str) -> None:
        super().__init__(msg, rc=rc, cmd=cmd, stderr=stderr)
        self.rc = rc


def validate_target_name(name: str, *, param: str = "target") -> str:
    """Return ``name`` if it is a valid iSCSI name, else raise naming ``param``."""
    if len(name.encode()) > 223:
        raise IscsiError(f"{param}: an iSCSI name is at most 223 bytes, got {len(name.encode())}")
    if _IQN.match(name) or _EUI.match(name) or _NAA.match(name):
        return name
    hint = ""
    if name.lower() != name and name.lower().startswith("iqn."):
        hint = " (IQNs are lower case)"
    raise IscsiError(
        f"{param}: '{name}' is not an iSCSI name{hint}; use iqn.YYYY-MM.reversed.domain[:identifier], "
        "eui. followed by 16 hex digits, or naa. followed by 16 or 32 hex digits"
    )


def canonical_host(address: str) -> str:
    """The form portal hosts are compared in.

    IP addresses in their standard text (IPv6 compressed, lower case; the
    kernel prints a session's current IPv6 address uncompressed), host names
    in lower case without a trailing dot. Raises ValueError for anything else.
    """
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    if _HOSTNAME.match(address):
        return address.rstrip(".").lower()
    raise ValueError(address)


@dataclass(frozen=True, order=True)
class Portal:
    """An iSCSI portal: host (IPv4, IPv6 or name) and TCP port.

    ``host`` is canonical and is what portals are compared and hashed by;
    ``address`` is the host exactly as written in a node record or by the
    user, the text iscsiadm is given (empty: same as ``host``).
    """

    host: str
    port: int = DEFAULT_PORT
    address: str = field(default="", compare=False)

    @classmethod
    def make(cls, address: str, port: int = DEFAULT_PORT) -> Portal:
        """A portal from a host as written; raises ValueError if it is no address or host name."""
        return cls(host=canonical_host(address), port=port, address=address)

    @property
    def literal(self) -> str:
        """The host as written (what iscsiadm stores and the kernel reports as persistent address)."""
        return self.address or self.host

    @property
    def arg(self) -> str:
        """The ``-p`` argument for iscsiadm, in the form iscsiadm itself prints.

        iscsiadm splits ``-p`` at the first ``:`` when the text has a dot and
        strips brackets only when it has none (str_to_ipport), so IPv4 and
        dotted host names go bare and everything else in brackets.
        """
        if "." in self.literal:
            return f"{self.literal}:{self.port}"
        return f"[{self.literal}]:{self.port}"

    @classmethod
    def parse(cls, text: str, *, param: str = "portal") -> Portal:
        """Parse a portal given by the user.

        ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; a ``,tpgt`` suffix
        is dropped. The host keeps its spelling in ``address``.
        """
        raw = text.strip().split(",", 1)[0]
        host, port_text = raw, ""
        if raw.startswith("["):
            end = raw.find("]")
            if end < 0:
                raise IscsiError(f"{param}: '{text}' opens '[' without ']'; write IPv6 portals as [addr]:port")
            host, rest = raw[1:end], raw[end + 1:]
            if rest and not rest.startswith(":"):
                raise IscsiError(f"{param}: '{text}' has text after ']'; write IPv6 portals as [addr]:port")
            port_text = rest[1:]
            if ":" not in host:
                raise IscsiError(f"{param}: '{host}' in '{text}' is not an IPv6 address; brackets are for IPv6 "
                                 "addresses, write host names and IPv4 addresses as host:port")
        elif raw.count(":") == 1:
            host, port_text = raw.split(":")
        elif raw.count(":") > 1:
            raise IscsiError(f"{param}: '{text}' looks like a bare IPv6 address; put it in brackets: [{raw}]:3260")
        try:
            canonical = canonical_host(host)
        except ValueError:
            if ":" in host:
                raise IscsiError(f"{param}: '{host}' in '{text}' is not an IPv6 address") from None
            raise IscsiError(f"{param}: '{host}' in '{text}' is neither an IP address nor a host name") from None
        if ":" in host and "." in host:
            # iscsiadm cuts a -p value with a dot at its first colon, with or
            # without brackets: such a portal cannot be named to it.
            v4 = ipaddress.IPv6Address(canonical).ipv4_mapped
            hint = f"use the IPv4 address {v4}" if v4 else "write the address in plain hex groups"
            raise IscsiError(f"{param}: iscsiadm cannot take the IPv6 address '{host}' (it has dots); {hint}")
        port = DEFAULT_PORT
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise IscsiError(f"{param}: port '{port_text}' in '{text}' is not a TCP port (1-65535)")
            port = int(port_text)
        return cls(host=canonical, port=port, address=host)

    @classmethod
    def parse_printed(cls, text: str) -> Portal:
        """Parse a portal as iscsiadm prints it (``addr:port`` or ``[addr]:port``).

        iscsiadm brackets every address without a dot, so a host name without
        one comes in brackets, and an IPv4-mapped IPv6 address (it has dots)
        comes bare: its port is after the last colon. Raises IscsiError for
        text that is no portal.
        """
        raw = text.strip()
        if raw.startswith("["):
            end = raw.find("]")
            host, rest = raw[1:end], raw[end + 1:] if end > 0 else ""
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _colon, port_text = raw.rpartition(":")
        try:
            if not port_text.isdigit():
                raise ValueError(port_text)
            return cls.make(host, int(port_text))
        except ValueError:
            raise IscsiError(f"'{text}' is not a portal") from None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class NodeEntry:
    """One node record: a line of ``iscsiadm -m node`` (iface from ``-P 1``) or of a discovery."""

    portal: Portal
    tpgt: int
    target: str
    iface: str | None = None


@dataclass(frozen=True)
class SessionEntry:
    """One line of ``iscsiadm -m session`` (its portal is the persistent one)."""

    transport: str
    sid: int
    portal: Portal
    tpgt: int
    target: str


@dataclass
class SessionDetail:
    """One session in ``iscsiadm -m session -P 3``.

    ``portal`` is the current address (where the connection goes now, after a
    login redirect or with a host name resolved), ``persistent_portal`` the
    address of the node record the session was made from: the one to match a
    request against, and the one udev's by-path name is built from.
    """

    target: str
    portal: Portal | None = None
    tpgt: int | None = None
    iface: str | None = None
    sid: int | None = None
    connection_state: str | None = None
    session_state: str | None = None
    host_number: int | None = None
    # kernel LUN number -> block device name (sdb)
    disks: dict[int, str] = field(default_factory=dict)
    persistent_portal: Portal | None = None
    transport: str | None = None
    netdev: str | None = None
    # Its portal lines were not printed (iscsiadm leaves them out when the
    # current address is the previous session's): the persistent portal is
    # the previous session's guess until sysfs says which it is.
    portals_inherited: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Iface:
    """One line of ``iscsiadm -m iface``."""

    name: str
    transport: str
    hwaddress: str = ""
    ipaddress: str = ""
    netdev: str = ""
    initiatorname: str = ""


@dataclass
class Parsed:
    """What a parser kept, and the lines it had to skip."""

    entries: list[t.Any] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


_NODE_LINE = re.compile(r"^(?P<portal>\S+),(?P<tpgt>-?\d+)\s+(?P<target>\S+)$")
_SESSION_LINE = re.compile(
    r"^(?P<transport>[\w-]+):\s+\[(?P<sid>\d+)\]\s+(?P<portal>\S+),(?P<tpgt>-?\d+)\s+(?P<target>\S+)(\s+\(.*\))?$"
)


def _tpgt(text: str) -> int:
    # Records made with -o new carry tpgt -1, which iscsiadm prints as an
    # unsigned 32-bit number.
    value = int(text)
    return -1 if value in (-1, 4294967295) else value


def _empty(value: str) -> str:
    return "" if value == "<empty>" else value


def parse_node_list(text: str, skipped: list[str] | None = None) -> list[NodeEntry]:
    """Parse ``iscsiadm -m node`` (and SendTargets discovery) output.

    A line whose portal is not understood is not a reason to fail every task
    on the host: it goes to ``skipped`` (for a warning) and the rest is kept.
    """
    entries = []
    for line in text.splitlines():
        line = line.strip()
        m = _NODE_LINE.match(line)
        try:
            if not m:
                raise IscsiError(line)
            entries.append(NodeEntry(Portal.parse_printed(m["portal"]), _tpgt(m["tpgt"]), m["target"]))
        except IscsiError:
            if line and skipped is not None:
                skipped.append(line)
    return entries


_TREE_TARGET = re.compile(r"^Target:\s*(?P<target>\S*)$")
_TREE_PORTAL = re.compile(r"^Portal:\s+(?P<portal>\S+),(?P<tpgt>-?\d+)$")
_TREE_IFACE = re.compile(r"^Iface Name:\s+(?P<iface>\S+)$")


def parse_node_tree(text: str, skipped: list[str] | None = None) -> list[NodeEntry]:
    """Parse ``iscsiadm -m node -P 1``: every record with its iface."""
    entries = []
    target: str | None = None
    portal: Portal | None = None
    tpgt = -1
    for raw in text.splitlines():
        line = raw.strip()
        if (m := _TREE_TARGET.match(line)) is not None:
            # An empty record file lists as "Target: " with "Portal: []:3260".
            target, portal = m["target"] or None, None
            if target is None and skipped is not None:
                skipped.append(line)
        elif (m := _TREE_PORTAL.match(line)) is not None:
            try:
                portal, tpgt = Portal.parse_printed(m["portal"]), _tpgt(m["tpgt"])
            except IscsiError:
                portal = None
                if skipped is not None and target is not None:
                    skipped.append(f"{target} {m['portal']}")
        elif (m := _TREE_IFACE.match(line)) is not None:
            if target and portal is not None:
                entries.append(NodeEntry(portal, tpgt, target, m["iface"]))
        elif line and skipped is not None:
            skipped.append(line)
    return entries


def parse_record(text: str) -> dict[str, str]:
    """Parse a node or discovery record (``# BEGIN RECORD`` ... ``# END RECORD``).

    ``<empty>`` becomes an empty string, the form settings are compared in.
    """
    record: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#") or " = " not in line:
            continue
        key, value = line.split(" = ", 1)
        record[key.strip()] = _empty(value.strip())
    return record


def parse_session_list(text: str, skipped: list[str] | None = None) -> list[SessionEntry]:
    """Parse ``iscsiadm -m session`` output."""
    sessions = []
    for line in text.splitlines():
        line = line.strip()
        m = _SESSION_LINE.match(line)
        try:
            if not m:
                raise IscsiError(line)
            sessions.append(SessionEntry(m["transport"], int(m["sid"]), Portal.parse_printed(m["portal"]),
                                         _tpgt(m["tpgt"]), m["target"]))
        except IscsiError:
            if line and skipped is not None:
                skipped.append(line)
    return sessions


def parse_iface_list(text: str) -> list[Iface]:
    """Parse ``iscsiadm -m iface``: ``name transport,hwaddress,ipaddress,netdev,initiatorname``."""
    ifaces = []
    for line in text.splitlines():
        name, _space, rest = line.strip().partition(" ")
        fields = rest.split(",")
        if not name or len(fields) != 5:
            continue
        ifaces.append(Iface(name, *(_empty(f) for f in fields)))
    return ifaces


_P3_TARGET = re.compile(r"^Target:\s+(?P<target>\S+)")
_P3_PORTAL = re.compile(r"^(?P<which>Current|Persistent) Portal:\s+(?P<portal>\S+),(?P<tpgt>-?\d+)")
_P3_FIELD = re.compile(
    r"^(?P<key>Iface Name|Iface Transport|Iface Netdev|SID|iSCSI Connection State|iSCSI Session State):\s*"
    r"(?P<value>.*)$"
)
_P3_HOST = re.compile(r"^Host Number:\s+(?P<n>\d+)")
# iscsiadm prints the kernel's LUN number with %d: one of 2**31 and above
# (extended flat addressing) comes out negative.
_P3_LUN = re.compile(r"^scsi\d+ Channel \d+ Id \d+ Lun: (?P<lun>-?\d+)$")
_P3_LUN_ANY = re.compile(r"^scsi\d+ Channel ")
_P3_DISK = re.compile(r"^Attached scsi disk (?P<disk>\S+)")


def persistent_address(sid: int, sysfs_root: str = SYSFS) -> tuple[str, str] | None:
    """Session ``sid``'s persistent address and port as sysfs has them (the node record's spelling, the one
    udev names by-path links after); None if unreadable."""
    conn = f"{sysfs_root}/class/iscsi_connection/connection{sid}:0"
    try:
        with open(f"{conn}/persistent_address") as f:
            address = f.read().strip()
        with open(f"{conn}/persistent_port") as f:
            port = f.read().strip()
    except OSError:
        return None
    return (address, port) if address and port else None


def persistent_portal(sid: int, sysfs_root: str = SYSFS) -> Portal | None:
    """The persistent portal of session ``sid`` as sysfs has it (the node record's address); None if unreadable."""
    found = persistent_address(sid, sysfs_root)
    try:
        return Portal.make(found[0], int(found[1])) if found else None
    except ValueError:
        return None


def parse_session_detail(text: str, skipped: list[str] | None = None) -> list[SessionDetail]:
    """Parse ``iscsiadm -m session -P 3``: sessions with their LUNs and disks.

    iscsiadm prints the portal lines of a session only when they differ from
    those of the session before it under the same target; two sessions to one
    portal through two ifaces (multipath over one portal) share the portal
    lines. A session therefore starts at its ``Interface:`` block, and takes
    the portals printed last for its target.
    """
    sessions: list[SessionDetail] = []
    current: SessionDetail | None = None
    lun: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        m = _P3_TARGET.match(line)
        if m:
            current = SessionDetail(target=m["target"])
            sessions.append(current)
            lun = None
            continue
        if current is None:
            continue
        if line == "Interface:" and (current.iface is not None or current.sid is not None):
            current = SessionDetail(target=current.target, portal=current.portal, tpgt=current.tpgt,
                                    persistent_portal=current.persistent_portal, portals_inherited=True)
            sessions.append(current)
            lun = None
        elif (m := _P3_PORTAL.match(line)) is not None:
            if current.iface is not None or current.sid is not None:
                current = SessionDetail(target=current.target)
                sessions.append(current)
                lun = None
            try:
                portal = Portal.parse_printed(m["portal"])
            except IscsiError:
                if skipped is not None:
                    skipped.append(line)
                continue
            if m["which"] == "Current":
                current.portal, current.tpgt = portal, _tpgt(m["tpgt"])
            else:
                current.persistent_portal = portal
        elif (m := _P3_FIELD.match(line)) is not None:
            key, value = m["key"], _empty(m["value"].strip())
            if key == "Iface Name":
                current.iface = value
            elif key == "Iface Transport":
                current.transport = value
            elif key == "Iface Netdev":
                current.netdev = value or None
            elif key == "SID":
                current.sid = int(value)
            elif key == "iSCSI Connection State":
                current.connection_state = value
            else:
                current.session_state = value
        elif (m := _P3_HOST.match(line)) is not None:
            current.host_number = int(m["n"])
        elif (m := _P3_LUN.match(line)) is not None:
            lun = int(m["lun"]) % 2**32
        elif _P3_LUN_ANY.match(line):
            # A LUN line not understood: its disk must not be taken for the
            # LUN before it.
            lun = None
            if skipped is not None:
                skipped.append(line)
        elif (m := _P3_DISK.match(line)) is not None and lun is not None:
            current.disks[lun] = m["disk"]
    for s in sessions:
        # iscsiadm prints both portal lines together; a session without a
        # persistent one (an older iscsiadm) is matched by its current one.
        if s.persistent_portal is None:
            s.persistent_portal = s.portal
    return [s for s in sessions if s.sid is not None or s.portal is not None]


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str


def _relevant_stderr(stderr: str) -> str:
    # iscsiadm asks systemd to socket-activate iscsid before each command and
    # prints systemd's complaint on hosts without it; keep iscsiadm's own lines.
    lines = [ln for ln in stderr.splitlines() if ln.startswith("iscsiadm:")] or stderr.splitlines()
    return "\n".join(lines).strip()


def explain(rc: int, *, auth_param: str = "auth") -> str:
    """Say in words what an iscsiadm exit code means and what to do.

    ``auth_param`` names the option holding the CHAP account the failure
    is about (``discovery_auth`` for a discovery).
    """
    symbol, meaning, hint = EXIT_CODES.get(rc, ("unknown", "unknown exit code", "read iscsiadm's message"))
    return f"iscsiadm exit {rc} ({symbol}): {meaning}; {hint.replace('(auth)', f'({auth_param})')}"


class Iscsiadm:
    """Runs iscsiadm on the managed host through ``AnsibleModule.run_command``."""

    def __init__(self, module: t.Any, *, sleep: t.Callable[[float], None] = time.sleep,
                 sysfs_root: str = SYSFS) -> None:
        self.module = module
        self.binary: str = module.get_bin_path("iscsiadm", required=True)
        self._sleep = sleep
        self.sysfs_root = sysfs_root
        self._warned: set[str] = set()

    def run(
        self,
        *,
        args: list[str],
        ok: t.Container[int] = (0,),
        secrets: t.Iterable[str] = (),
        action: str = "",
        auth_param: str = "auth",
        retry_idbm: bool = False,
    ) -> CommandResult:
        """Run ``iscsiadm ARGS``; raise :class:`IscsiadmError` unless the exit code is in ``ok``.

        ``retry_idbm`` retries exit 6 (node database busy or unwritable) a few
        times within about three seconds, for commands that read or write the
        node database.
        """
        cmd = [self.binary, *args]
        delays = list(IDBM_RETRY_DELAYS) if retry_idbm and RC_IDBM not in ok else []
        tries = 0
        while True:
            tries += 1
            rc, out, err = self.module.run_command(cmd, environ_update={"LC_ALL": "C", "LANG": "C"},
                                                   check_rc=False)
            if rc != RC_IDBM or not delays:
                break
            self._sleep(delays.pop(0))
        if tries > 1 and rc in ok:
            self.module.warn(f"{action or 'iscsiadm'}: iscsiadm exit {RC_IDBM} (ISCSI_ERR_IDBM, the node database "
                             f"was busy or unwritable); it went through at try {tries}")
        if rc not in ok:
            secrets = list(secrets)
            what = f"{action} failed: " if action else ""
            message = f"{what}{explain(rc, auth_param=auth_param)}"
            if rc == RC_IDBM and retry_idbm:
                message += f" (tried {len(IDBM_RETRY_DELAYS) + 1} times in {sum(IDBM_RETRY_DELAYS):g}s)"
            detail = _relevant_stderr(err)
            if detail:
                message += f". iscsiadm said: {detail}"
            raise IscsiadmError(
                mask_secrets(message, secrets), rc=rc, cmd=mask_secrets(cmd, secrets), stderr=mask_secrets(err, secrets)
            )
        return CommandResult(rc, out, err)

    def _warn_skipped(self, what: str, skipped: list[str]) -> None:
        for line in skipped:
            if line not in self._warned:
                self._warned.add(line)
                self.module.warn(f"iscsiadm {what}: skipped a line this module does not understand: {line!r}")

    # node database ------------------------------------------------------
    @staticmethod
    def _node_args(target: str, portal: Portal | None, iface: str | None) -> list[str]:
        args = ["-m", "node", "-T", target]
        if portal is not None:
            args += ["-p", portal.arg]
        return args + (["-I", iface] if iface else [])

    def nodes(self) -> list[NodeEntry]:
        """All node records with their ifaces (an empty database is exit 21, not an error)."""
        result = self.run(args=["-m", "node", "-P", "1"], ok=(0, RC_NO_OBJECTS), action="listing node records",
                          retry_idbm=True)
        if result.rc != 0:
            return []
        skipped: list[str] = []
        entries = parse_node_tree(result.stdout, skipped)
        self._warn_skipped("-m node", skipped)
        return entries

    def find_node(self, *, target: str, portal: Portal, iface: str) -> NodeEntry | None:
        """The record of ``target`` at ``portal`` (compared canonically) through ``iface``, if any."""
        for node in self.nodes():
            if node.target == target and node.portal == portal and node.iface == iface:
                return node
        return None

    def node_record(self, *, target: str, portal: Portal, iface: str) -> dict[str, str] | None:
        """The record of one node, secrets included (``-S``), or None if there is none."""
        result = self.run(
            args=[*self._node_args(target, portal, iface), "-S"],
            ok=(0, RC_NO_OBJECTS),
            action=f"reading the node record of {target} at {portal}",
            retry_idbm=True,
        )
        return parse_record(result.stdout) if result.rc == 0 else None

    def node_new(self, *, target: str, portal: Portal, iface: str, tpgt: int | None = None) -> None:
        """Create a node record with the defaults of iscsid.conf.

        ``-o new`` on an existing record resets it to those defaults (CHAP
        and startup are lost), so callers create only what is missing.
        Without ``tpgt`` open-iscsi keeps one record per portal (a file
        ``addr,port``): a record for a second iface replaces the first. With
        it, records are per iface (``addr,port,tpgt/iface``).
        """
        args = self._node_args(target, portal, iface)
        if tpgt is not None:
            args[args.index("-p") + 1] = f"{portal.arg},{tpgt}"
        self.run(args=[*args, "-o", "new"], action=f"creating the node record of {target} at {portal}",
                 retry_idbm=True)

    def node_update(self, *, target: str, portal: Portal, iface: str, name: str, value: str, secret: bool) -> None:
        """Set one key of a node record."""
        # iscsiadm takes a value only on its command line (no stdin, no file):
        # a CHAP secret is in /proc/PID/cmdline for the few milliseconds this
        # iscsiadm runs (os-brick has the same window). Callers set a secret
        # only when it differs from the stored one.
        self.run(
            args=[*self._node_args(target, portal, iface), "-o", "update", "-n", name, "-v", value],
            secrets=[value] if secret else [],
            action=f"setting {name} on the node record of {target} at {portal}",
            retry_idbm=True,
        )

    def node_delete(self, *, target: str, portal: Portal | None, iface: str | None) -> bool:
        """Delete node records; False when there was none."""
        result = self.run(args=[*self._node_args(target, portal, iface), "-o", "delete"], ok=(0, RC_NO_OBJECTS),
                          action=f"deleting the node record of {target}", retry_idbm=True)
        return result.rc == 0

    # ifaces ----------------------------------------------------------------
    def ifaces(self) -> list[Iface]:
        """The ifaces iscsiadm knows (``default`` and ``iser`` are built in)."""
        result = self.run(args=["-m", "iface"], ok=(0, RC_NO_OBJECTS), action="listing ifaces")
        return parse_iface_list(result.stdout) if result.rc == 0 else []

    # discovery -------------------------------------------------------------
    def _discoverydb_args(self, portal: Portal, iface: str) -> list[str]:
        return ["-m", "discoverydb", "-t", "sendtargets", "-p", portal.arg, "-I", iface]

    def discoverydb_record(self, *, portal: Portal, iface: str) -> dict[str, str] | None:
        # iscsiadm exits 6 for "Discovery record [...] not found." and for a
        # database it cannot lock or read (it then prints that line too):
        # only the first alone is "no record"; taking the second for it would
        # write a new record over the old one.
        action = f"reading the discovery record of {portal}"
        args = [*self._discoverydb_args(portal, iface), "-S"]
        result = self.run(args=args, ok=(0, RC_IDBM, RC_NO_OBJECTS), action=action)
        said_lines = [ln for ln in _relevant_stderr(result.stderr).splitlines() if ln.strip()]
        if result.rc == RC_IDBM and not all(_NOT_FOUND.search(ln) for ln in said_lines):
            said = _relevant_stderr(result.stderr)
            raise IscsiadmError(f"{action} failed: {explain(RC_IDBM)}. iscsiadm said: {said}",
                                rc=RC_IDBM, cmd=[self.binary, *args], stderr=result.stderr)
        return parse_record(result.stdout) if result.rc == 0 else None

    def discoverydb_new(self, *, portal: Portal, iface: str) -> None:
        self.run(args=[*self._discoverydb_args(portal, iface), "-o", "new"],
                 action=f"creating the discovery record of {portal}", retry_idbm=True)

    def discoverydb_update(self, *, portal: Portal, iface: str, name: str, value: str, secret: bool) -> None:
        self.run(args=[*self._discoverydb_args(portal, iface), "-o", "update", "-n", name, "-v", value],
                 secrets=[value] if secret else [], action=f"setting {name} on the discovery record of {portal}",
                 retry_idbm=True)

    def discover(
        self, *, portal: Portal, ifaces: t.Sequence[str], persist: bool, with_record: bool,
        secrets: t.Iterable[str] = (),
    ) -> list[NodeEntry]:
        """SendTargets discovery; with ``persist`` False no node record is written.

        ``with_record`` uses the discovery record (needed for discovery CHAP,
        which lives there); otherwise ``-m discovery`` makes one as it goes.
        Each of ``ifaces`` gets its own node records.
        """
        iface_args = [a for iface in ifaces for a in ("-I", iface)]
        if with_record:
            args = ["-m", "discoverydb", "-t", "sendtargets", "-p", portal.arg, *iface_args, "--discover"]
        else:
            args = ["-m", "discovery", "-t", "sendtargets", "-p", portal.arg, *iface_args]
        if not persist:
            args += ["-o", "nonpersistent"]
        action = f"SendTargets discovery at {portal}"
        result = self.run(args=args, ok=(0, RC_NO_OBJECTS), secrets=secrets, action=action,
                          auth_param="discovery_auth", retry_idbm=True)
        if "Could not load transport" in result.stderr:
            # iscsiadm drops an iface whose transport module cannot be loaded
            # and then reports "no records" (21): say what really happened.
            raise IscsiadmError(f"{action} failed: {explain(12)}. iscsiadm said: {_relevant_stderr(result.stderr)}",
                                rc=12, cmd=[self.binary, *args], stderr=result.stderr)
        if result.rc != 0:
            return []
        skipped: list[str] = []
        entries = parse_node_list(result.stdout, skipped)
        self._warn_skipped("discovery", skipped)
        return entries

    # sessions --------------------------------------------------------------
    def sessions(self) -> list[SessionEntry]:
        """Logged-in sessions (none is exit 21, not an error)."""
        result = self.run(args=["-m", "session"], ok=(0, RC_NO_OBJECTS), action="listing sessions")
        if result.rc != 0:
            return []
        skipped: list[str] = []
        entries = parse_session_list(result.stdout, skipped)
        self._warn_skipped("-m session", skipped)
        return entries

    def session_details(self) -> list[SessionDetail]:
        result = self.run(args=["-m", "session", "-P", "3"], ok=(0, RC_NO_OBJECTS), action="listing sessions")
        if result.rc != 0:
            return []
        skipped: list[str] = []
        entries = parse_session_detail(result.stdout, skipped)
        self._warn_skipped("-m session -P 3", skipped)
        for entry in entries:
            if entry.portals_inherited and entry.sid is not None:
                entry.persistent_portal = persistent_portal(entry.sid, self.sysfs_root) or entry.persistent_portal
        return entries

    def login(self, *, target: str, portal: Portal, iface: str) -> bool:
        """Log in; False when the session already existed (exit 15)."""
        result = self.run(args=[*self._node_args(target, portal, iface), "--login"], ok=(0, RC_SESSION_EXISTS),
                          action=f"login to {target} at {portal} (iface {iface})")
        return result.rc == 0

    def logout_session(self, *, sid: int, what: str) -> bool:
        """Log out of one session by its id; False when it was gone already (exit 21 or 2)."""
        # By id, not by node: a node's logout would take every session of
        # that record, and matches portals by resolving them.
        result = self.run(args=["-m", "session", "-r", str(sid), "--logout"],
                          ok=(0, 2, RC_NO_OBJECTS, RC_SYSFS_LOOKUP), action=f"logout from {what} (session {sid})")
        if result.rc == RC_SYSFS_LOOKUP and os.path.exists(f"{self.sysfs_root}/class/iscsi_session/session{sid}"):
            # The session is there but iscsiadm could not read it: a real error.
            raise IscsiadmError(f"logout from {what} (session {sid}) failed: {explain(result.rc)}",
                                rc=result.rc, cmd=[self.binary, "-m", "session", "-r", str(sid), "--logout"],
                                stderr=result.stderr)
        return result.rc == 0

    def rescan(self, *, sid: int) -> None:
        self.run(args=["-m", "session", "-r", str(sid), "--rescan"], action=f"rescanning session {sid}")
