# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt: connection, errors, domain XML and device hot-plug.

The shared part of the libvirt_* modules: one argument spec fragment (``uri``),
one exception base, libvirt-python's errors turned into messages a user can
act on, XML handled as lxml trees (never string templates), compared in
a normalised form, and libvirt's device-removal events for the modules that
wait for a guest to release a device.
"""

from __future__ import annotations

import contextlib
import threading
import time
import typing as t

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.openvolume.compute.plugins.module_utils._common import (
    OpenVolumeError,
    OpenVolumeModule,
    run_module,
)

try:
    import libvirt
except ImportError as exc:  # pragma: no cover - depends on the host
    libvirt = None
    LIBVIRT_IMPORT_ERROR: ImportError | None = exc
else:
    LIBVIRT_IMPORT_ERROR = None

try:
    from lxml import etree
except ImportError as exc:  # pragma: no cover - depends on the host
    etree = None
    LXML_IMPORT_ERROR: ImportError | None = exc
else:
    LXML_IMPORT_ERROR = None

DEFAULT_URI = "qemu:///system"


class LibvirtError(OpenVolumeError):
    """Base of the errors of the libvirt modules."""


class NoDomain(LibvirtError):
    """The domain does not exist (destroyed and undefined, or never defined)."""


def uri_spec() -> dict[str, t.Any]:
    """The ``uri`` option every libvirt module takes."""
    return {"uri": {"type": "str", "default": DEFAULT_URI}}


def check_libraries(module: t.Any) -> None:
    """Fail the module clearly when libvirt-python or lxml is missing on the host."""
    if LIBVIRT_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("libvirt-python"), exception=str(LIBVIRT_IMPORT_ERROR))
    if LXML_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("lxml"), exception=str(LXML_IMPORT_ERROR))


class LibvirtModule:
    """AnsibleModule for the libvirt modules, wrapped once.

    Adds the shared ``uri`` option, fails with ``missing_required_lib`` when
    libvirt-python or lxml is missing, opens one connection on first use and
    closes it, and turns ``LibvirtError`` into one ``fail_json`` (through
    ``run_module``, which masks secrets).
    """

    def __init__(self, argument_spec: dict[str, t.Any], *, events: bool = False, **kwargs: t.Any) -> None:
        self.module = OpenVolumeModule(argument_spec=dict(uri_spec(), **argument_spec), supports_check_mode=True,
                                       **kwargs)
        check_libraries(self.module)
        self._conn: t.Any = None
        # Whether the connection is opened with libvirt's event loop running
        # (a module that waits for device events asks for it).
        self.events = events

    @property
    def params(self) -> dict[str, t.Any]:
        return t.cast("dict[str, t.Any]", self.module.params)

    @property
    def check_mode(self) -> bool:
        return bool(self.module.check_mode)

    @property
    def diff_mode(self) -> bool:
        return bool(self.module._diff)

    @property
    def conn(self) -> t.Any:
        """The connection to ``uri``, opened when first needed (bad input fails before it)."""
        if self._conn is None:
            self._conn = connect(self.params["uri"], events=self.events)
        return self._conn

    def device_removals(self) -> DeviceRemovals | None:
        """A watcher of the connection's device-removal events, or None when events are not available.

        Not available: the module did not ask for events, or the connection's
        driver does not deliver them. The caller then reads the live XML.
        """
        if not self.events:
            return None
        watcher = DeviceRemovals(self.conn)
        return watcher if watcher.start() else None

    def run(self, handler: t.Callable[[], dict[str, t.Any]], secrets: t.Iterable[str | None] = ()) -> None:
        """Run ``handler``, close the connection, exit with its (masked) result."""

        def handle() -> dict[str, t.Any]:
            try:
                return handler()
            finally:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                    if self.events:
                        EVENT_LOOP.stop()

        run_module(self.module, handle, secrets)


def _silence(_ctx: t.Any, _err: t.Any) -> None:
    # libvirt prints every error to stderr besides raising it; the raised
    # exception is what we report.
    return None


def connect(uri: str, *, events: bool = False) -> t.Any:
    """Open a read-write connection, with an error that names ``uri``.

    With ``events``, libvirt's default event loop is registered and running
    first: a connection delivers events only to the loop that was registered
    when it was opened.
    """
    libvirt.registerErrorHandler(_silence, None)
    if events:
        EVENT_LOOP.start()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise LibvirtError(
            f"uri: cannot connect to {uri}: {exc.get_error_message()}; check that libvirtd runs on the host "
            "and that the task runs as a user allowed to manage it (become: true)"
        ) from None


def error_code(exc: Exception) -> int | None:
    return exc.get_error_code() if libvirt is not None and isinstance(exc, libvirt.libvirtError) else None


def lookup_domain(conn: t.Any, name: str, *, param: str = "domain") -> t.Any:
    """A domain by name or UUID."""
    try:
        if len(name) == 36 and name.count("-") == 4:
            try:
                return conn.lookupByUUIDString(name)
            except libvirt.libvirtError:
                pass
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if error_code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
            raise NoDomain(
                f"{param}: no domain named '{name}' on {conn.getURI()}; check the name or UUID (virsh list --all)"
            ) from None
        raise LibvirtError(f"{param}: looking up '{name}' failed: {exc.get_error_message()}") from None


def domain_xml(dom: t.Any, *, inactive: bool) -> t.Any:
    """The domain's XML as an lxml tree: the persistent config or the live one."""
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    return etree.fromstring(dom.XMLDesc(flags).encode())


def to_text(elem: t.Any) -> str:
    return str(etree.tostring(elem, pretty_print=True, encoding="unicode")).strip()


def describe(exc: Exception) -> str:
    """libvirt's own message for an exception."""
    if libvirt is not None and isinstance(exc, libvirt.libvirtError):
        return str(exc.get_error_message())
    return str(exc)


# --- events -----------------------------------------------------------------------------
class _EventLoop:
    """libvirt-python's default event loop, run in a daemon thread.

    ``virEventRegisterDefaultImpl`` is called once per process, before the
    connection is opened. From then on the loop must keep running while the
    connection is open, not only while something waits for an event: the
    remote driver answers libvirtd's keepalive pings from this loop, and
    libvirtd drops a connection whose pings go unanswered (after about 30 s
    with its defaults), which a long step between two waits would cause.
    """

    def __init__(self) -> None:
        self._registered = False
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        if not self._registered:
            libvirt.virEventRegisterDefaultImpl()
            self._registered = True
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="libvirt-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            if libvirt.virEventRunDefaultImpl() < 0:
                # Only when the loop itself broke; nothing waits on it then,
                # and a waiter falls back to its own bound.
                return

    def stop(self, timeout: float = 1.0) -> None:
        """Let the loop's thread end (after the connection is closed); a timer wakes it from its poll."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self._stopping = True

        def wake(timer: int, _opaque: t.Any) -> None:
            libvirt.virEventRemoveTimeout(timer)

        libvirt.virEventAddTimeout(0, wake, None)
        thread.join(timeout)
        self._thread = None


EVENT_LOOP = _EventLoop()

REMOVED = "removed"
REMOVAL_FAILED = "removal failed"


class DeviceRemovals:
    """libvirt's DEVICE_REMOVED and DEVICE_REMOVAL_FAILED events of one connection.

    Devices are known by their domain's UUID and their alias (libvirt's
    ``<alias name=...>`` of the live device: ``virtio-disk1``,
    ``scsi0-0-0-1``, ``ua-...``), which is what both events name. Start the
    watcher before asking for a removal: an event sent before registration is
    not delivered later. The callbacks run in the event loop's thread; what
    they saw is read under a condition the waiter sleeps on.
    """

    def __init__(self, conn: t.Any) -> None:
        self.conn = conn
        self._cond = threading.Condition()
        self._seen: dict[tuple[str, str], tuple[str, float]] = {}
        self._ids: list[int] = []

    def start(self) -> bool:
        """Register for both events on every domain; False when the driver does not deliver them."""
        try:
            for event, outcome in ((libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, REMOVED),
                                   (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED, REMOVAL_FAILED)):
                self._ids.append(self.conn.domainEventRegisterAny(None, event, self._callback, outcome))
        except (libvirt.libvirtError, AttributeError):
            self.close()
            return False
        return True

    def _callback(self, _conn: t.Any, dom: t.Any, alias: str, outcome: str) -> None:
        with self._cond:
            # A removal is final; a failure may be followed by a removal the
            # guest did after all (a later request), which then counts.
            self._seen[(dom.UUIDString(), alias)] = (outcome, time.monotonic())
            self._cond.notify_all()

    def outcome(self, uuid: str, alias: str) -> tuple[str, float] | None:
        """What happened to a device (REMOVED or REMOVAL_FAILED, and when), or None so far."""
        with self._cond:
            return self._seen.get((uuid, alias))

    def wait(self, keys: t.Collection[tuple[str, str]], timeout: float) -> bool:
        """Sleep until one of ``keys`` (domain UUID, alias) has an outcome, at most ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: any(k in self._seen for k in keys), timeout=max(timeout, 0.0))

    def close(self) -> None:
        """Deregister the callbacks (the connection stays open)."""
        while self._ids:
            callback_id = self._ids.pop()
            # A connection that went away took its registrations with it.
            with contextlib.suppress(libvirt.libvirtError):
                self.conn.domainEventDeregisterAny(callback_id)
