# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""open-iscsi's iscsiadm: one command wrapper, its exit codes and its output.

Everything that runs ``iscsiadm`` goes through :class:`Iscsiadm`: argument
lists (never a shell string), ``LC_ALL=C``, keyword-only arguments, and a
failure turned into an :class:`IscsiadmError` that says what the exit code
means and what to do about it. The parsers are plain functions over the text
iscsiadm prints, so they are unit-tested with captured output.
"""

from __future__ import annotations

import ipaddress
import re
import typing as t
from dataclasses import dataclass, field

from ansible_collections.openvolume.compute.plugins.module_utils._common import OpenVolumeError, mask_secrets

DEFAULT_PORT = 3260

# iscsiadm(8), EXIT STATUS: code -> (symbol, meaning, what the user can do).
EXIT_CODES: dict[int, tuple[str, str, str]] = {
    1: ("ISCSI_ERR", "generic error", "read iscsiadm's message below"),
    2: ("ISCSI_ERR_SESS_NOT_FOUND", "session not found", "check that the session is logged in"),
    3: ("ISCSI_ERR_NOMEM", "out of memory", "free memory on the host and retry"),
    4: ("ISCSI_ERR_TRANS", "could not connect to the portal",
        "check the portal address and port, and that the target listens there"),
    5: ("ISCSI_ERR_LOGIN", "login failed", "check the target name, the LUN mapping and the target's ACL"),
    6: ("ISCSI_ERR_IDBM", "the iSCSI node database could not be read or written",
        "check /etc/iscsi/nodes (permissions, disk space)"),
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
    32: ("ISCSI_ERR_SESSION_NOT_CONNECTED", "the session is not connected", "check the network path"),
}

RC_SESSION_EXISTS = 15
RC_NO_OBJECTS = 21

# RFC 3720 3.2.6.3: iqn.YYYY-MM.reversed.domain[:anything], eui.16HEX,
# naa.16HEX or naa.32HEX; at most 223 bytes. iscsiadm itself accepts
# almost anything, so a typo would only show up as a failed login later.
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_IQN = re.compile(rf"^iqn\.\d{{4}}-(0[1-9]|1[0-2])\.{_LABEL}(\.{_LABEL})*(:\S+)?$")
_EUI = re.compile(r"^eui\.[0-9A-Fa-f]{16}$")
_NAA = re.compile(r"^naa\.([0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})$")
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$", re.IGNORECASE)


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


@dataclass(frozen=True, order=True)
class Portal:
    """An iSCSI portal: host (IPv4, IPv6 or name) and TCP port."""

    host: str
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str, *, param: str = "portal") -> Portal:
        """Parse ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; a ``,tpgt`` suffix is dropped."""
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
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise IscsiError(f"{param}: '{host}' in '{text}' is not an IPv6 address") from None
        elif raw.count(":") == 1:
            host, port_text = raw.split(":")
        elif raw.count(":") > 1:
            raise IscsiError(f"{param}: '{text}' looks like a bare IPv6 address; put it in brackets: [{raw}]:3260")
        if not raw.startswith("["):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                if not _HOSTNAME.match(host):
                    raise IscsiError(
                        f"{param}: '{host}' in '{text}' is neither an IP address nor a host name"
                    ) from None
        port = DEFAULT_PORT
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise IscsiError(f"{param}: port '{port_text}' in '{text}' is not a TCP port (1-65535)")
            port = int(port_text)
        return cls(host=host, port=port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class NodeEntry:
    """One line of ``iscsiadm -m node`` or of a SendTargets discovery."""

    portal: Portal
    tpgt: int
    target: str


@dataclass(frozen=True)
class SessionEntry:
    """One line of ``iscsiadm -m session``."""

    transport: str
    sid: int
    portal: Portal
    tpgt: int
    target: str


@dataclass
class SessionDetail:
    """One ``Target:`` block of ``iscsiadm -m session -P 3``."""

    target: str
    portal: Portal | None = None
    tpgt: int | None = None
    iface: str | None = None
    sid: int | None = None
    connection_state: str | None = None
    session_state: str | None = None
    host_number: int | None = None
    # lun -> block device name (sdb)
    disks: dict[int, str] = field(default_factory=dict)


_NODE_LINE = re.compile(r"^(?P<portal>\S+),(?P<tpgt>-?\d+)\s+(?P<target>\S+)$")
_SESSION_LINE = re.compile(
    r"^(?P<transport>\w+):\s+\[(?P<sid>\d+)\]\s+(?P<portal>\S+),(?P<tpgt>-?\d+)\s+(?P<target>\S+)(\s+\(.*\))?$"
)


def _tpgt(text: str) -> int:
    # Records made with -o new carry tpgt -1, which iscsiadm prints as an
    # unsigned 32-bit number.
    value = int(text)
    return -1 if value in (-1, 4294967295) else value


def parse_node_list(text: str) -> list[NodeEntry]:
    """Parse ``iscsiadm -m node`` (and SendTargets discovery) output."""
    entries = []
    for line in text.splitlines():
        m = _NODE_LINE.match(line.strip())
        if m:
            entries.append(NodeEntry(Portal.parse(m["portal"]), _tpgt(m["tpgt"]), m["target"]))
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
        record[key.strip()] = "" if value.strip() == "<empty>" else value.strip()
    return record


def parse_session_list(text: str) -> list[SessionEntry]:
    """Parse ``iscsiadm -m session`` output."""
    sessions = []
    for line in text.splitlines():
        m = _SESSION_LINE.match(line.strip())
        if m:
            sessions.append(
                SessionEntry(m["transport"], int(m["sid"]), Portal.parse(m["portal"]), _tpgt(m["tpgt"]), m["target"])
            )
    return sessions


_P3_TARGET = re.compile(r"^Target:\s+(?P<target>\S+)")
_P3_PORTAL = re.compile(r"^Current Portal:\s+(?P<portal>\S+),(?P<tpgt>-?\d+)")
_P3_FIELD = re.compile(r"^(?P<key>Iface Name|SID|iSCSI Connection State|iSCSI Session State):\s*(?P<value>.*)$")
_P3_HOST = re.compile(r"^Host Number:\s+(?P<n>\d+)")
_P3_LUN = re.compile(r"^scsi\d+ Channel \d+ Id \d+ Lun: (?P<lun>\d+)")
_P3_DISK = re.compile(r"^Attached scsi disk (?P<disk>\S+)")


def parse_session_detail(text: str) -> list[SessionDetail]:
    """Parse ``iscsiadm -m session -P 3``: sessions with their LUNs and disks."""
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
        if (m := _P3_PORTAL.match(line)) is not None:
            if current.portal is not None:
                # A second portal under the same target is a second session.
                current = SessionDetail(target=current.target)
                sessions.append(current)
            current.portal, current.tpgt = Portal.parse(m["portal"]), _tpgt(m["tpgt"])
        elif (m := _P3_FIELD.match(line)) is not None:
            key, value = m["key"], m["value"].strip()
            if key == "Iface Name":
                current.iface = value
            elif key == "SID":
                current.sid = int(value)
            elif key == "iSCSI Connection State":
                current.connection_state = value
            else:
                current.session_state = value
        elif (m := _P3_HOST.match(line)) is not None:
            current.host_number = int(m["n"])
        elif (m := _P3_LUN.match(line)) is not None:
            lun = int(m["lun"])
        elif (m := _P3_DISK.match(line)) is not None and lun is not None:
            current.disks[lun] = m["disk"]
    return sessions


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

    def __init__(self, module: t.Any) -> None:
        self.module = module
        self.binary: str = module.get_bin_path("iscsiadm", required=True)

    def run(
        self,
        *,
        args: list[str],
        ok: t.Container[int] = (0,),
        secrets: t.Iterable[str] = (),
        action: str = "",
        auth_param: str = "auth",
    ) -> CommandResult:
        """Run ``iscsiadm ARGS``; raise :class:`IscsiadmError` unless the exit code is in ``ok``."""
        cmd = [self.binary, *args]
        rc, out, err = self.module.run_command(cmd, environ_update={"LC_ALL": "C", "LANG": "C"}, check_rc=False)
        if rc not in ok:
            secrets = list(secrets)
            what = f"{action} failed: " if action else ""
            message = f"{what}{explain(rc, auth_param=auth_param)}"
            detail = _relevant_stderr(err)
            if detail:
                message += f". iscsiadm said: {detail}"
            raise IscsiadmError(
                mask_secrets(message, secrets), rc=rc, cmd=mask_secrets(cmd, secrets), stderr=mask_secrets(err, secrets)
            )
        return CommandResult(rc, out, err)

    # node database ------------------------------------------------------
    @staticmethod
    def _node_args(target: str, portal: Portal | None, iface: str) -> list[str]:
        args = ["-m", "node", "-T", target]
        if portal is not None:
            args += ["-p", str(portal)]
        return args + ["-I", iface]

    def nodes(self) -> list[NodeEntry]:
        """All node records (an empty database is exit 21, not an error)."""
        result = self.run(args=["-m", "node"], ok=(0, RC_NO_OBJECTS), action="listing node records")
        return parse_node_list(result.stdout) if result.rc == 0 else []

    def node_record(self, *, target: str, portal: Portal, iface: str) -> dict[str, str] | None:
        """The record of one node, secrets included (``-S``), or None if there is none."""
        result = self.run(
            args=[*self._node_args(target, portal, iface), "-S"],
            ok=(0, RC_NO_OBJECTS),
            action=f"reading the node record of {target} at {portal}",
        )
        return parse_record(result.stdout) if result.rc == 0 else None

    def node_new(self, *, target: str, portal: Portal, iface: str) -> None:
        """Create a node record with the defaults of iscsid.conf.

        ``-o new`` on an existing record resets it to those defaults (CHAP
        and startup are lost), so callers create only what is missing.
        """
        self.run(args=[*self._node_args(target, portal, iface), "-o", "new"],
                 action=f"creating the node record of {target} at {portal}")

    def node_update(self, *, target: str, portal: Portal, iface: str, name: str, value: str, secret: bool) -> None:
        """Set one key of a node record."""
        # iscsiadm only takes a value on its command line; a CHAP secret is
        # visible in the process list for the few milliseconds it runs.
        self.run(
            args=[*self._node_args(target, portal, iface), "-o", "update", "-n", name, "-v", value],
            secrets=[value] if secret else [],
            action=f"setting {name} on the node record of {target} at {portal}",
        )

    def node_delete(self, *, target: str, portal: Portal | None, iface: str) -> bool:
        """Delete node records; False when there was none."""
        result = self.run(args=[*self._node_args(target, portal, iface), "-o", "delete"], ok=(0, RC_NO_OBJECTS),
                          action=f"deleting the node record of {target}")
        return result.rc == 0

    # discovery -------------------------------------------------------------
    def _discoverydb_args(self, portal: Portal, iface: str) -> list[str]:
        return ["-m", "discoverydb", "-t", "sendtargets", "-p", str(portal), "-I", iface]

    def discoverydb_record(self, *, portal: Portal, iface: str) -> dict[str, str] | None:
        result = self.run(args=[*self._discoverydb_args(portal, iface), "-S"], ok=(0, 6, RC_NO_OBJECTS),
                          action=f"reading the discovery record of {portal}")
        return parse_record(result.stdout) if result.rc == 0 else None

    def discoverydb_new(self, *, portal: Portal, iface: str) -> None:
        self.run(args=[*self._discoverydb_args(portal, iface), "-o", "new"],
                 action=f"creating the discovery record of {portal}")

    def discoverydb_update(self, *, portal: Portal, iface: str, name: str, value: str, secret: bool) -> None:
        self.run(args=[*self._discoverydb_args(portal, iface), "-o", "update", "-n", name, "-v", value],
                 secrets=[value] if secret else [], action=f"setting {name} on the discovery record of {portal}")

    def discover(
        self, *, portal: Portal, iface: str, persist: bool, with_record: bool, secrets: t.Iterable[str] = ()
    ) -> list[NodeEntry]:
        """SendTargets discovery; with ``persist`` False no node record is written.

        ``with_record`` uses the discovery record (needed for discovery CHAP,
        which lives there); otherwise ``-m discovery`` makes one as it goes.
        """
        if with_record:
            args = [*self._discoverydb_args(portal, iface), "--discover"]
        else:
            args = ["-m", "discovery", "-t", "sendtargets", "-p", str(portal), "-I", iface]
        if not persist:
            args += ["-o", "nonpersistent"]
        action = f"SendTargets discovery at {portal}"
        result = self.run(args=args, ok=(0, RC_NO_OBJECTS), secrets=secrets, action=action,
                          auth_param="discovery_auth")
        if "Could not load transport" in result.stderr:
            # iscsiadm drops an iface whose transport module cannot be loaded
            # and then reports "no records" (21): say what really happened.
            raise IscsiadmError(f"{action} failed: {explain(12)}. iscsiadm said: {_relevant_stderr(result.stderr)}",
                                rc=12, cmd=[self.binary, *args], stderr=result.stderr)
        return parse_node_list(result.stdout) if result.rc == 0 else []

    # sessions --------------------------------------------------------------
    def sessions(self) -> list[SessionEntry]:
        """Logged-in sessions (none is exit 21, not an error)."""
        result = self.run(args=["-m", "session"], ok=(0, RC_NO_OBJECTS), action="listing sessions")
        return parse_session_list(result.stdout) if result.rc == 0 else []

    def session_details(self) -> list[SessionDetail]:
        result = self.run(args=["-m", "session", "-P", "3"], ok=(0, RC_NO_OBJECTS), action="listing sessions")
        return parse_session_detail(result.stdout) if result.rc == 0 else []

    def login(self, *, target: str, portal: Portal, iface: str) -> bool:
        """Log in; False when the session already existed (exit 15)."""
        result = self.run(args=[*self._node_args(target, portal, iface), "--login"], ok=(0, RC_SESSION_EXISTS),
                          action=f"login to {target} at {portal}")
        return result.rc == 0

    def logout(self, *, target: str, portal: Portal, iface: str) -> bool:
        """Log out; False when there was no session (exit 21)."""
        result = self.run(args=[*self._node_args(target, portal, iface), "--logout"], ok=(0, RC_NO_OBJECTS),
                          action=f"logout from {target} at {portal}")
        return result.rc == 0

    def rescan(self, *, sid: int) -> None:
        self.run(args=["-m", "session", "-r", str(sid), "--rescan"], action=f"rescanning session {sid}")
