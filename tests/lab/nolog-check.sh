#!/usr/bin/env bash
# No secret of the lab in what this machine's syslog received during a test
# run: the modules that run here (volume_reservation on the controller, the
# integration targets, the roles) log their invocations there.
# Usage: tests/lab/nolog-check.sh begin|check
#   begin  remembers where the lab syslog's file ends now (brings the syslog
#          component up first)
#   check  greps everything written since `begin` for the lab's CHAP and etcd
#          passwords, and fails if one is there; it also fails if no module
#          invocation was logged at all (then it would prove nothing)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lab=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
mark="$lab/syslog/run.offset"

case "${1:-}" in
  begin)
    "$here/lab.sh" up syslog >/dev/null
    # shellcheck disable=SC1091
    . "$lab/syslog.env"
    if [ -z "$SYSLOG_FILE" ]; then
      echo "nolog-check: /dev/log belongs to another daemon; the syslog check cannot read it"
      exit 0
    fi
    stat -c %s "$SYSLOG_FILE" > "$mark"
    ;;
  check)
    # shellcheck disable=SC1091
    . "$lab/syslog.env" 2>/dev/null || { echo "nolog-check: the syslog component is not up" >&2; exit 1; }
    if [ -z "${SYSLOG_FILE:-}" ] || [ ! -s "$mark" ]; then
      echo "nolog-check: SKIP: no lab syslog file to read (see tests/lab/syslog.sh)"
      exit 0
    fi
    secrets=$(mktemp)
    trap 'rm -f "$secrets"' EXIT
    (umask 077
     sed -n 's/^chap_password=//p; s/^mutual_password_in=//p' "$lab/tgt/secrets" 2>/dev/null
     sed -n 's/^root_password=//p; s/^user_password=//p' "$lab/etcd/secrets" 2>/dev/null
    ) | grep -v '^$' > "$secrets" || true
    [ -s "$secrets" ] || { echo "nolog-check: no lab secrets found under $lab" >&2; exit 1; }
    run=$(tail -c +"$(($(cat "$mark") + 1))" "$SYSLOG_FILE")
    lines=$(grep -c '' <<<"$run" || true)
    invoked=$(grep -c ': Invoked with' <<<"$run" || true)
    leaks=$(grep -c -F -f "$secrets" <<<"$run" || true)
    if [ "$leaks" -gt 0 ]; then
      echo "nolog-check: FAIL: $leaks of $lines syslog lines of this run hold a lab secret:" >&2
      # Where, not what: the lines themselves hold the secret.
      grep -n -F -f "$secrets" <<<"$run" | awk '{print "  line", $1, $4, $5}' | head -n 5 >&2
      exit 1
    fi
    if [ "$invoked" -eq 0 ]; then
      echo "nolog-check: FAIL: no module invocation reached $SYSLOG_FILE; the check would prove nothing" >&2
      exit 1
    fi
    echo "nolog-check: PASS: $lines syslog lines of this run ($invoked module invocations), no lab secret"
    ;;
  *) echo "usage: $0 begin|check" >&2; exit 2 ;;
esac
