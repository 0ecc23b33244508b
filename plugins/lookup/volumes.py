# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: volumes
short_description: Read volume reservation records (sqlite or etcd)
version_added: 0.1.0
description:
  - Returns the volume records that M(openvolume.compute.volume_reservation) keeps, from either backend,
    for inventories, AWX surveys, reports and repairs. C(attaching)/C(detaching) states show their C(owner) and
    C(expires_at), and C(lapsed=true) when their run is gone (the lease ended, or the process is seen dead on this
    controller); a lapsed attachment still holds its volume until reconcile or a re-run establishes it.
  - Without terms, every record; with terms, the records of those volume ids (missing ones are left out).
  - Secrets in connection_info show as C(********).
  - Runs on the controller, like every lookup. Reads only.
author:
  - openvolume.compute developers (@openvolume)
options:
  _terms:
    description: Volume ids to read. None means every volume.
    required: false
    type: list
    elements: str
  query:
    description:
      - A JMESPath expression applied to the list of records, for example
        C([?status=='in-use'].volume_id). Needs the Python library C(jmespath) on the controller.
      - The lookup returns the query's result; a result that is not a list is returned as a one-element list.
    type: str
  backend:
    description: Where the records live, as in M(openvolume.compute.volume_reservation).
    type: str
    env:
      - name: OV_RESERVATION_BACKEND
    choices: [sqlite, etcd]
    default: sqlite
  sqlite_path:
    description: The SQLite database file. It is not created by a lookup; a missing file means no records.
    type: path
    default: ~/.local/state/openvolume/volumes.db
  etcd_endpoints:
    description: Client URLs of the etcd cluster.
    type: list
    env:
      - name: OV_ETCD_ENDPOINTS
    elements: str
    default: [http://127.0.0.1:2379]
  etcd_username:
    description: User for etcd authentication.
    type: str
    env:
      - name: OV_ETCD_USERNAME
  etcd_password:
    description: Password of O(etcd_username).
    type: str
    env:
      - name: OV_ETCD_PASSWORD
  etcd_ca_cert:
    description: CA certificate file to verify an C(https) endpoint.
    type: path
    env:
      - name: OV_ETCD_CA_CERT
  etcd_prefix:
    description: Key prefix of the records in etcd.
    type: str
    env:
      - name: OV_ETCD_PREFIX
    default: /openvolume/
  etcd_timeout:
    description: Seconds to wait for each etcd request.
    type: float
    default: 5.0
notes:
  - Use C(query('openvolume.compute.volumes', ...)) (or C(wantlist=true)) to always get a list.
requirements:
  - C(etcd3gw) for O(backend=etcd), C(jmespath) for O(query).
seealso:
  - module: openvolume.compute.volume_reservation
"""

EXAMPLES = r"""
- name: Every volume record of the controller's default database
  ansible.builtin.debug:
    msg: "{{ query('openvolume.compute.volumes') }}"

- name: The volumes attached to an instance, from etcd
  ansible.builtin.debug:
    msg: >-
      {{ query('openvolume.compute.volumes', backend='etcd', etcd_endpoints=['http://127.0.0.1:2379'],
               query="[?attachments[?instance=='vm1']].volume_id") }}

- name: Volumes still free, for an AWX survey
  ansible.builtin.set_fact:
    free_volumes: >-
      {{ query('openvolume.compute.volumes', query="[?status=='available'].volume_id") }}

- name: One volume's status
  ansible.builtin.debug:
    msg: "{{ lookup('openvolume.compute.volumes', 'vol-0b5e', sqlite_path='/srv/ov/volumes.db').status }}"
"""

RETURN = r"""
_raw:
  description:
    - The volume records (or the result of O(query)), as RV(openvolume.compute.volume_reservation#module:volume)
      describes them, with secrets masked.
  type: list
  elements: raw
  sample:
    - volume_id: vol-0b5e
      status: in-use
      multiattach: false
      attachments:
        - {instance: vm1, host: compute1, status: in-use, mountpoint: /dev/vdb, mode: rw,
           connection_info: {driver_volume_type: iscsi, data: {auth_password: "********"}}, expires_at: null}
"""

import os
import typing as t

from ansible.errors import AnsibleLookupError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.lookup import LookupBase

from ansible_collections.openvolume.compute.plugins.module_utils._common import mask_secrets
from ansible_collections.openvolume.compute.plugins.module_utils._reservation import (
    ReservationError,
    backend_argument_spec,
    open_backend,
)

try:
    import jmespath

    HAS_JMESPATH = True
except ImportError:
    HAS_JMESPATH = False


class LookupModule(LookupBase):
    """Reads volume records for templates."""

    def run(self, terms: list[t.Any], variables: dict[str, t.Any] | None = None, **kwargs: t.Any) -> list[t.Any]:
        self.set_options(var_options=variables, direct=kwargs)
        params = {name: self.get_option(name) for name in backend_argument_spec()}
        expression = self.get_option("query")
        if expression and not HAS_JMESPATH:
            raise AnsibleLookupError("query: needs the Python library jmespath (pip install jmespath)")
        password = params.get("etcd_password")
        if params["backend"] == "sqlite" and not os.path.exists(os.path.expanduser(params["sqlite_path"])):
            # A lookup reads: it does not create an empty database.
            records: list[dict[str, t.Any]] = []
        else:
            try:
                backend = open_backend(params)
                try:
                    if terms:
                        volumes = [v for v in (backend.get(str(term)) for term in terms) if v is not None]
                    else:
                        volumes = backend.list_volumes()
                finally:
                    backend.close()
            except ReservationError as exc:
                raise AnsibleLookupError(mask_secrets(exc.msg, [password])) from None
            records = [v.to_result() for v in volumes]
        if not expression:
            return records
        try:
            result = jmespath.search(expression, records)
        except jmespath.exceptions.JMESPathError as exc:
            raise AnsibleLookupError(
                f"query: {expression!r} is not a valid JMESPath expression: {to_native(exc)}"
            ) from None
        return result if isinstance(result, list) else [result]
