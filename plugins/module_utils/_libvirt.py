# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt: connection, errors, domain XML and device hot-plug.

The shared part of the libvirt_* modules: one argument spec fragment (``uri``),
one exception base, libvirt-python's errors turned into messages a user can
act on, and XML handled as lxml trees (never string templates), compared in
a normalised form.
"""

from __future__ import annotations

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

    def __init__(self, argument_spec: dict[str, t.Any], **kwargs: t.Any) -> None:
        self.module = OpenVolumeModule(argument_spec=dict(uri_spec(), **argument_spec), supports_check_mode=True,
                                       **kwargs)
        check_libraries(self.module)
        self._conn: t.Any = None

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
            self._conn = connect(self.params["uri"])
        return self._conn

    def run(self, handler: t.Callable[[], dict[str, t.Any]], secrets: t.Iterable[str | None] = ()) -> None:
        """Run ``handler``, close the connection, exit with its (masked) result."""

        def handle() -> dict[str, t.Any]:
            try:
                return handler()
            finally:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        run_module(self.module, handle, secrets)


def _silence(_ctx: t.Any, _err: t.Any) -> None:
    # libvirt prints every error to stderr besides raising it; the raised
    # exception is what we report.
    return None


def connect(uri: str) -> t.Any:
    """Open a read-write connection, with an error that names ``uri``."""
    libvirt.registerErrorHandler(_silence, None)
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
