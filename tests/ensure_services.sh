#!/usr/bin/env bash
# Make sure the programs and services the tests need are here: mosquitto and victoria-metrics binaries
# (the tests start their own instances on free ports) and a PostgreSQL on 127.0.0.1:5432.
# Installs missing Debian packages when run as root; otherwise stops with the package to install.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
# the console's browser tests drive Debian's Chromium; CJK fonts so Chinese pages render (and screenshot) as text
[ -x /usr/bin/chromium ] || need+=(chromium chromium-driver)
[ -d /usr/share/fonts/opentype/noto ] || need+=(fonts-noto-cjk)
# the gateway installer's tests: systemd-analyze checks the unit, useradd/groupadd make the service user
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v useradd >/dev/null 2>&1 || [ -x /usr/sbin/useradd ] || need+=(passwd)
command -v pg_ctlcluster >/dev/null 2>&1 || command -v pg_isready >/dev/null 2>&1 || need+=(postgresql)

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "error: missing Debian packages: $*. Install them: sudo apt-get install -y $*" >&2
        exit 1
    fi
    echo "installing Debian packages: $*"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ ${#need[@]} -gt 0 ]; then
    apt_install "${need[@]}"
fi

# PostgreSQL: the tests use CE_TEST_PG_ADMIN (default postgresql://postgres@127.0.0.1:5432/postgres).
if [ -n "${CE_TEST_PG_ADMIN:-}" ]; then
    exit 0
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null 2>&1; then
        ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
        if [ -z "$ver" ]; then
            echo "error: PostgreSQL is installed but has no cluster; create one: pg_createcluster 15 main" >&2
            exit 1
        fi
        pg_ctlcluster --skip-systemctl-redirect "$ver" main start
        for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
    fi
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "error: no PostgreSQL on 127.0.0.1:5432. Start it (pg_ctlcluster <ver> main start) or set CE_TEST_PG_ADMIN" >&2
    exit 1
fi
# A fresh Debian cluster asks for a password on TCP; tests need trust for postgres on loopback.
if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        ver=$(ls /etc/postgresql | sort -V | tail -1)
        hba=/etc/postgresql/$ver/main/pg_hba.conf
        echo "allowing trust auth for 127.0.0.1 in $hba (test machine)"
        sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
        pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
    else
        echo "error: cannot connect to PostgreSQL as postgres on 127.0.0.1 without a password; set CE_TEST_PG_ADMIN" >&2
        exit 1
    fi
fi
