#!/usr/bin/env bash
# A throwaway Samba Active Directory domain controller on 127.0.0.1, for Portcullis' end-to-end
# tests and for trying the LDAP agent. Run as root on Debian.
#
#   scripts/samba-ad.sh install                 apt-get the packages (about 10 s)
#   scripts/samba-ad.sh start DIR [USERS_FILE]  provision DIR if new, set the lockout policy, add
#                                              users ("name password" per line), start; PID in DIR/samba.pid
#   scripts/samba-ad.sh stop DIR                stop the DC started in DIR
#   scripts/samba-ad.sh show DIR USER           badPwdCount, lockoutTime, locked flag of USER
#   scripts/samba-ad.sh unlock DIR USER         unlock USER
#
# Environment: SAMBA_REALM (PORTCULLIS.TEST), SAMBA_DOMAIN (PORTCULLIS), SAMBA_LOCKOUT_THRESHOLD (5),
# SAMBA_LOCKOUT_SECONDS (60, lockout duration and observation window; sub-minute values work),
# SAMBA_ADMIN_PASSWORD. The machine's own /etc/samba is never touched.
set -euo pipefail

REALM=${SAMBA_REALM:-PORTCULLIS.TEST}
DOMAIN=${SAMBA_DOMAIN:-PORTCULLIS}
THRESHOLD=${SAMBA_LOCKOUT_THRESHOLD:-5}
LOCK_SECONDS=${SAMBA_LOCKOUT_SECONDS:-60}
ADMIN_PASSWORD=${SAMBA_ADMIN_PASSWORD:-Adm1n-Portcullis-Test!}

die() { echo "samba-ad.sh: $*" >&2; exit 1; }

base_dn() { echo "DC=${REALM//./,DC=}"; }

cmd_install() {
  if command -v samba >/dev/null && command -v samba-tool >/dev/null && command -v ldbsearch >/dev/null \
     && [ -d /usr/share/samba/setup ]; then
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # samba-ad-provision must be named, or provisioning fails for a missing schema file.
  apt-get install -y -qq --no-install-recommends samba samba-ad-dc samba-ad-provision ldb-tools ldap-utils >/dev/null
}

conf() { echo "$1/etc/smb.conf"; }

provision() {
  local dir=$1
  mkdir -p "$dir"
  samba-tool domain provision --targetdir="$dir" --realm="$REALM" --domain="$DOMAIN" \
    --server-role=dc --dns-backend=NONE --use-rfc2307 --adminpass="$ADMIN_PASSWORD" \
    --option="interfaces = lo" --option="bind interfaces only = yes" \
    --option="pid directory = $dir/run" --option="lock directory = $dir/lock" \
    --option="state directory = $dir/state" --option="cache directory = $dir/cache" \
    >"$dir/provision.log" 2>&1 || { cat "$dir/provision.log" >&2; die "provisioning failed"; }
  # Plain simple binds need this (provisioning leaves it out); no TLS avoids a slow first
  # start that generates keys; no fsync (a throwaway DC) makes first sign-ins, which write
  # logon times, several times faster.
  sed -i '/^\[global\]/a \	ldap server require strong auth = no\n\ttls enabled = no\n\tserver services = ldap\n\tlog level = 0\n\tldb:nosync = true' "$(conf "$dir")"
  samba-tool domain passwordsettings set -s "$(conf "$dir")" --complexity=off --min-pwd-length=1 \
    --min-pwd-age=0 --max-pwd-age=0 --history-length=0 --account-lockout-threshold="$THRESHOLD" \
    --account-lockout-duration=1 --reset-account-lockout-after=1 >/dev/null
  # Sub-minute windows: write the raw negative 100-ns intervals on the domain object.
  local ticks=$(( -LOCK_SECONDS * 10000000 ))
  ldbmodify -H "$dir/private/sam.ldb" >/dev/null <<LDIF
dn: $(base_dn)
changetype: modify
replace: lockoutDuration
lockoutDuration: $ticks
-
replace: lockOutObservationWindow
lockOutObservationWindow: $ticks
LDIF
}

add_users() {
  local dir=$1 file=$2
  # Debian's own interpreter: the samba bindings live there, not in any other python3 on PATH.
  /usr/bin/python3 - "$(conf "$dir")" "$file" <<'PY'
import sys
from samba.samdb import SamDB
from samba.auth import system_session
from samba.param import LoadParm
lp = LoadParm(); lp.load(sys.argv[1])
db = SamDB(url=lp.private_path("sam.ldb"), session_info=system_session(), lp=lp)
existing = {str(m["sAMAccountName"][0]) for m in db.search(expression="(objectClass=user)", attrs=["sAMAccountName"])}
n = 0
for line in open(sys.argv[2], encoding="utf-8"):
    parts = line.rstrip("\n").split(" ", 1)
    if len(parts) != 2 or not parts[0]:
        continue
    name, password = parts
    if name in existing:
        db.setpassword(f"(sAMAccountName={name})", password)
    else:
        db.newuser(name, password, force_password_change_at_next_login_req=False)
    n += 1
print(f"{n} users ready")
PY
}

ldap_up() { ldapsearch -x -H ldap://127.0.0.1:389 -s base -b "" namingContexts >/dev/null 2>&1; }

cmd_start() {
  local dir=${1:?usage: start DIR [USERS_FILE]} users=${2:-}
  dir=$(realpath -m "$dir")
  [ -f "$(conf "$dir")" ] || provision "$dir"
  [ -n "$users" ] && add_users "$dir" "$users"
  if [ -f "$dir/samba.pid" ] && kill -0 "$(cat "$dir/samba.pid")" 2>/dev/null; then
    echo "already running (pid $(cat "$dir/samba.pid"))"; return 0
  fi
  mkdir -p "$dir/run" "$dir/lock" "$dir/state" "$dir/cache"
  setsid samba -s "$(conf "$dir")" -i -M single >"$dir/samba.log" 2>&1 < /dev/null &
  echo $! >"$dir/samba.pid"
  for _ in $(seq 1 300); do
    if ldap_up; then echo "samba AD up on ldap://127.0.0.1:389 (pid $(cat "$dir/samba.pid"), realm $REALM)"; return 0; fi
    kill -0 "$(cat "$dir/samba.pid")" 2>/dev/null || { tail -20 "$dir/samba.log" >&2; die "samba exited"; }
    sleep 0.1
  done
  die "samba did not answer LDAP within 30 s"
}

cmd_stop() {
  local dir=${1:?usage: stop DIR}
  dir=$(realpath -m "$dir")
  [ -f "$dir/samba.pid" ] || return 0
  local pid; pid=$(cat "$dir/samba.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  # Its smbd and winbindd (sessions of their own, started with this DC's smb.conf) can outlive it
  # a moment, holding the RPC ports they inherited: a DC started right after could not bind them.
  local left=""
  for _ in $(seq 1 100); do
    left=$(pgrep -f -- "$(conf "$dir")" || true)
    [ -n "$left" ] || break
    # shellcheck disable=SC2086 # one pid per word
    kill $left 2>/dev/null || true
    sleep 0.1
  done
  # shellcheck disable=SC2086
  [ -z "$left" ] || kill -9 $left 2>/dev/null || true
  rm -f "$dir/samba.pid"
}

cmd_show() {
  local dir=${1:?usage: show DIR USER} user=${2:?usage: show DIR USER}
  ldbsearch -H "$dir/private/sam.ldb" "(sAMAccountName=$user)" badPwdCount lockoutTime \
    msDS-User-Account-Control-Computed 2>/dev/null | grep -E '^(badPwdCount|lockoutTime|msDS-User-Account-Control-Computed):' || true
}

cmd_unlock() {
  local dir=${1:?usage: unlock DIR USER} user=${2:?usage: unlock DIR USER}
  samba-tool user unlock "$user" -s "$(conf "$dir")"
}

case "${1:-}" in
  install) cmd_install ;;
  start) shift; cmd_install; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  show) shift; cmd_show "$@" ;;
  unlock) shift; cmd_unlock "$@" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
