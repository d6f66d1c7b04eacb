#!/usr/bin/env bash
# Remove what systemd/install.sh installed. The gallery, the event log and
# /etc/edgeface/config.yaml stay unless --purge is given; apt packages stay
# because other programs may use them.
#
# Test mode: --root DIR --no-system works on the files under DIR and prints
# the systemctl, udevadm and userdel commands instead of running them.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: sudo systemd/uninstall.sh [options]

Stops and disables edgeface.service, removes the units, the udev rule and
/opt/edgeface. Keeps /var/lib/edgeface (gallery, event log),
/etc/edgeface/config.yaml and the user edgeface.

Options:
  --purge       also delete /var/lib/edgeface, /etc/edgeface and the user
  --root DIR    work on the files under DIR instead of / (needs --no-system)
  --no-system   print systemctl, udevadm and userdel commands instead of
                running them (needs --root)
  -h, --help    show this help
EOF
}

ROOT=""
NO_SYSTEM=0
PURGE=0

PREFIX=/opt/edgeface
CONFIG_DIR=/etc/edgeface
STATE_DIR=/var/lib/edgeface
SYSTEMD_DIR=/etc/systemd/system
UDEV_RULE=/etc/udev/rules.d/90-edgeface-usb.rules
USER_NAME=edgeface
UNITS=(edgeface.service edgeface-sync.service media-edgeface.mount)

fail_usage() {
    echo "uninstall.sh: $*" >&2
    echo "Run 'systemd/uninstall.sh --help' for the options." >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || fail_usage "--root needs a folder"; ROOT="$2"; shift 2 ;;
        --no-system) NO_SYSTEM=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) fail_usage "unknown option $1" ;;
    esac
done

if [ -n "$ROOT" ]; then
    [ "$NO_SYSTEM" = 1 ] || fail_usage "--root needs --no-system: systemctl and userdel would act on this machine, not on $ROOT"
    ROOT="$(cd "$ROOT" 2>/dev/null && pwd)" || fail_usage "--root folder $ROOT does not exist"
    [ "$ROOT" != / ] || fail_usage "--root / is the real system: leave out --root and --no-system"
elif [ "$NO_SYSTEM" = 1 ]; then
    fail_usage "--no-system needs --root DIR"
fi
if [ "$NO_SYSTEM" = 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "uninstall.sh: run as root, for example: sudo $0 $*" >&2
    exit 1
fi

step() { echo "==> $*"; }

system() {
    if [ "$NO_SYSTEM" = 1 ]; then
        echo "    skipped (--no-system): $*"
    else
        "$@"
    fi
}

step "stop and disable the units"
# Stopping the daemon releases the relay; '|| true' because a unit that was
# never started or is already gone is not an error here.
system systemctl disable --now edgeface.service || true
system systemctl stop edgeface-sync.service media-edgeface.mount || true
if [ "$NO_SYSTEM" = 1 ] && command -v systemctl >/dev/null && [ -f "$ROOT$SYSTEMD_DIR/edgeface.service" ]; then
    systemctl --root="$ROOT" --quiet disable edgeface.service
fi

step "remove the units, the udev rule and $PREFIX"
for unit in "${UNITS[@]}"; do
    rm -f "$ROOT$SYSTEMD_DIR/$unit"
done
rm -f "$ROOT$SYSTEMD_DIR/multi-user.target.wants/edgeface.service"
rm -f "$ROOT$UDEV_RULE"
system systemctl daemon-reload
system udevadm control --reload
if [ "$(readlink "$ROOT/usr/local/bin/edgeface" 2>/dev/null)" = "$PREFIX/venv/bin/edgeface" ]; then
    rm -f "$ROOT/usr/local/bin/edgeface"
fi
rm -rf "${ROOT:?}$PREFIX"
rm -f "$ROOT$CONFIG_DIR/config.yaml.default"

if [ "$PURGE" = 1 ]; then
    step "purge: delete $STATE_DIR, $CONFIG_DIR and the user $USER_NAME"
    rm -rf "${ROOT:?}$STATE_DIR" "${ROOT:?}$CONFIG_DIR"
    if [ "$NO_SYSTEM" = 1 ] || getent passwd "$USER_NAME" >/dev/null; then
        system userdel "$USER_NAME"
    fi
else
    rmdir "$ROOT$CONFIG_DIR" 2>/dev/null || true
    step "kept $STATE_DIR (gallery, event log), $CONFIG_DIR/config.yaml and the user $USER_NAME; --purge deletes them"
fi
echo "apt packages (python3-picamera2, python3-lgpio, ...) were left installed."
