#!/usr/bin/env bash
# Install edgeface as a systemd service on Raspberry Pi OS Bookworm (64-bit).
#
# Run from a clone of the repository:  sudo systemd/install.sh
# Running it again upgrades the code and keeps /etc/edgeface/config.yaml,
# the gallery and the event log. See docs/install.md for every step.
#
# Test mode: --root DIR --no-system writes every file under DIR and prints
# the apt-get, useradd, chown, udevadm and systemctl commands instead of
# running them, so the result can be checked without touching the machine.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: sudo systemd/install.sh [options]

Installs edgeface into /opt/edgeface, its config into /etc/edgeface, its
state into /var/lib/edgeface, and the units edgeface.service,
edgeface-sync.service and media-edgeface.mount. Then it checks the setup
with 'edgeface doctor' and starts the service when every check passes.

Options:
  --models DIR    copy the .onnx models and their .json manifests from DIR
                  (default: export the dlib face model with python -m export)
  --python PATH   Python 3.11 that creates the virtual environment
                  (default: /usr/bin/python3, which sees apt's picamera2)
  --no-start      enable the service but neither check nor start it
  --root DIR      write every file under DIR instead of / (needs --no-system)
  --no-system     print apt-get, useradd, chown, udevadm and systemctl
                  commands instead of running them (needs --root)
  --skip-pip      create the virtual environment but print the pip and
                  model export commands instead of running them
  -h, --help      show this help

Exit status: 0 installed and running (or enabled with --no-start),
1 installed but a step or a check failed (each is listed), 2 invalid options.
EOF
}

SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UNIT_DIR_SOURCE="$SOURCE_DIR/systemd"

ROOT=""
NO_SYSTEM=0
SKIP_PIP=0
NO_START=0
PYTHON=/usr/bin/python3
MODELS_FROM=""

# Paths on the target system; every file operation prefixes them with $ROOT.
PREFIX=/opt/edgeface
VENV=$PREFIX/venv
MODELS=$PREFIX/models
CONFIG_DIR=/etc/edgeface
STATE_DIR=/var/lib/edgeface
SYSTEMD_DIR=/etc/systemd/system
UDEV_DIR=/etc/udev/rules.d
USER_NAME=edgeface
UNITS=(edgeface.service edgeface-sync.service media-edgeface.mount)
UDEV_RULE=90-edgeface-usb.rules
APT_PACKAGES=(python3-venv python3-picamera2 python3-gpiozero python3-lgpio)
DEFAULT_MODEL=dlib_resnet_v1.onnx

fail_usage() {
    echo "install.sh: $*" >&2
    echo "Run 'systemd/install.sh --help' for the options." >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || fail_usage "--root needs a folder"; ROOT="$2"; shift 2 ;;
        --no-system) NO_SYSTEM=1; shift ;;
        --skip-pip) SKIP_PIP=1; shift ;;
        --no-start) NO_START=1; shift ;;
        --python) [ $# -ge 2 ] || fail_usage "--python needs a path"; PYTHON="$2"; shift 2 ;;
        --models) [ $# -ge 2 ] || fail_usage "--models needs a folder"; MODELS_FROM="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) fail_usage "unknown option $1" ;;
    esac
done

# A root prefix never mixes with real system changes, and test mode never
# writes into the running system.
if [ -n "$ROOT" ]; then
    [ "$NO_SYSTEM" = 1 ] || fail_usage "--root needs --no-system: apt-get, useradd and systemctl would act on this machine, not on $ROOT"
    ROOT="$(cd "$ROOT" 2>/dev/null && pwd)" || fail_usage "--root folder $ROOT does not exist: create it first"
    [ "$ROOT" != / ] || fail_usage "--root / is the real system: leave out --root and --no-system"
elif [ "$NO_SYSTEM" = 1 ]; then
    fail_usage "--no-system needs --root DIR, so that the files do not land in the real system without the user and packages"
fi
if [ "$NO_SYSTEM" = 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root, for example: sudo $0 $*" >&2
    echo "It installs apt packages, creates the user $USER_NAME and writes to /etc, /opt and /var/lib." >&2
    exit 1
fi
if [ -n "$MODELS_FROM" ] && [ ! -d "$MODELS_FROM" ]; then
    fail_usage "--models folder $MODELS_FROM does not exist"
fi

step() { echo "==> $*"; }

# Run a command that changes the running system, or print it in test mode.
system() {
    if [ "$NO_SYSTEM" = 1 ]; then
        echo "    skipped (--no-system): $*"
    else
        "$@"
    fi
}

# Copy a file into place only when its content or mode differs, so a second
# run leaves the file (and its time stamp) alone.
install_file() {
    local mode="$1" source="$2" target="$3"
    if [ -f "$target" ] && cmp -s "$source" "$target"; then
        chmod "$mode" "$target"
        return
    fi
    install -m "$mode" "$source" "$target.tmp"
    mv -f "$target.tmp" "$target"
    echo "    wrote $target"
}

check_platform() {
    [ "$NO_SYSTEM" = 0 ] || return 0
    local codename=""
    if [ -r /etc/os-release ]; then
        codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    fi
    if [ "$codename" != bookworm ]; then
        echo "warning: this is '${codename:-unknown}', not Debian/Raspberry Pi OS bookworm; the pinned versions in systemd/constraints.txt were chosen for bookworm" >&2
    fi
    if [ "$(uname -m)" != aarch64 ]; then
        echo "warning: this machine is $(uname -m), not aarch64 (64-bit Raspberry Pi OS)" >&2
    fi
}

install_packages() {
    step "apt packages: ${APT_PACKAGES[*]}"
    system apt-get update
    # --no-install-recommends keeps the desktop libraries of picamera2's
    # preview windows off Raspberry Pi OS Lite.
    system env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
}

create_user() {
    step "user $USER_NAME in the groups gpio and video"
    local group
    for group in gpio video; do
        if [ "$NO_SYSTEM" = 1 ] || ! getent group "$group" >/dev/null; then
            system groupadd --system "$group"
        fi
    done
    if [ "$NO_SYSTEM" = 1 ] || ! getent passwd "$USER_NAME" >/dev/null; then
        system useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "edgeface door service" "$USER_NAME"
    fi
    system usermod --append --groups gpio,video "$USER_NAME"
}

create_folders() {
    step "folders $PREFIX, $CONFIG_DIR, $STATE_DIR"
    install -d -m 0755 "$ROOT$PREFIX" "$ROOT$MODELS" "$ROOT$SYSTEMD_DIR" "$ROOT$UDEV_DIR" "$ROOT/usr/local/bin"
    install -d -m 0750 "$ROOT$CONFIG_DIR" "$ROOT$STATE_DIR" "$ROOT$STATE_DIR/gallery"
    # The config may hold the MQTT password: root writes it, edgeface reads it.
    system chown root:"$USER_NAME" "$ROOT$CONFIG_DIR"
    system chown "$USER_NAME:$USER_NAME" "$ROOT$STATE_DIR" "$ROOT$STATE_DIR/gallery"
}

create_venv() {
    step "virtual environment $VENV (with apt's system packages visible)"
    local cfg="$ROOT$VENV/pyvenv.cfg"
    if [ -f "$cfg" ] && ! grep -qx 'include-system-site-packages = true' "$cfg"; then
        echo "    $VENV was made without --system-site-packages: making it again"
        rm -rf "${ROOT:?}$VENV"
    fi
    if [ ! -x "$ROOT$VENV/bin/python" ]; then
        if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            echo "warning: $PYTHON is not Python 3.11; Raspberry Pi OS Bookworm's python3 is 3.11 and the pins assume it" >&2
        fi
        if [ "$SKIP_PIP" = 1 ]; then
            "$PYTHON" -m venv --system-site-packages --without-pip "$ROOT$VENV"
        else
            "$PYTHON" -m venv --system-site-packages "$ROOT$VENV"
        fi
        echo "    created $VENV"
    fi

    step "pip install edgeface from $SOURCE_DIR with systemd/constraints.txt"
    local pip=("$ROOT$VENV/bin/python" -m pip install --upgrade-strategy only-if-needed
        --constraint "$UNIT_DIR_SOURCE/constraints.txt" "$SOURCE_DIR[dlib]")
    if [ "$SKIP_PIP" = 1 ]; then
        echo "    skipped (--skip-pip): ${pip[*]}"
        return
    fi
    [ -x "$ROOT$VENV/bin/pip" ] || "$ROOT$VENV/bin/python" -m ensurepip --upgrade
    "${pip[@]}"

    # apt's simplejpeg (imported by picamera2) is built against numpy 1.24:
    # a numpy 2 in the venv would break the camera at the first frame.
    "$ROOT$VENV/bin/python" - <<'EOF'
import sys
import numpy
if not numpy.__version__.startswith("1."):
    sys.exit(f"numpy {numpy.__version__} in the venv is not 1.x: apt's picamera2 needs numpy 1.24. "
             "Remove /opt/edgeface/venv and run install.sh again.")
try:
    import picamera2  # noqa: F401
except ImportError as error:
    print(f"warning: picamera2 does not import in the venv ({error}); "
          "a USB or network camera still works", file=sys.stderr)
EOF
}

write_config() {
    step "config $CONFIG_DIR/config.yaml"
    local default="$ROOT$CONFIG_DIR/config.yaml.default" config="$ROOT$CONFIG_DIR/config.yaml"
    local generated
    generated="$(mktemp)"

    # The repository's config.yaml with the state and model paths of this
    # installation. awk tracks the section, because several sections share
    # key names (camera.source, enrolment.source).
    awk -v models="$MODELS" -v state="$STATE_DIR" '
        BEGIN { print "# Installed by systemd/install.sh: the repository'"'"'s config.yaml with the"
                print "# paths of the service. Edit this file; install.sh never overwrites it,"
                print "# and writes its own copy to config.yaml.default for comparison."
                print "# Keep gallery.path and events.database under " state ": the service"
                print "# may write nowhere else (ProtectSystem=strict in edgeface.service)."
                print "" }
        /^[a-z_]+:/ { section = substr($1, 1, length($1) - 1) }
        section == "detector" && /^  yunet_model: / { print "  yunet_model: " models "/face_detection_yunet_2023mar.onnx"; done["yunet_model"] = 1; next }
        section == "embedder" && /^  model: / { print "  model: " models "/dlib_resnet_v1.onnx"; done["model"] = 1; next }
        section == "gallery" && /^  path: / { print "  path: " state "/gallery"; done["path"] = 1; next }
        section == "events" && /^  database: / { print "  database: " state "/events.db"; done["database"] = 1; next }
        section == "enrolment" && /^  source: / { print "  source: /media/edgeface"; next }
        { print }
        END { n = 0; for (key in done) n++; if (n != 4) exit 3 }
    ' "$SOURCE_DIR/config.yaml" > "$generated" || {
        rm -f "$generated"
        echo "install.sh: config.yaml in $SOURCE_DIR lacks detector.yunet_model, embedder.model, gallery.path or events.database" >&2
        exit 1
    }

    # The shipped copy is always refreshed; the user's copy only when absent.
    install_file 0640 "$generated" "$default"
    if [ -e "$config" ]; then
        if cmp -s "$generated" "$config"; then
            echo "    $CONFIG_DIR/config.yaml is up to date"
        else
            echo "    kept your $CONFIG_DIR/config.yaml; compare it with config.yaml.default for new settings"
        fi
    else
        install_file 0640 "$generated" "$config"
    fi
    rm -f "$generated"

    system chown root:"$USER_NAME" "$default" "$config"
}

manifest_matches() {
    # True when the model and its manifest exist and the sha256 agrees.
    local model="$1" manifest="${1%.onnx}.json"
    [ -f "$model" ] && [ -f "$manifest" ] || return 1
    local expected
    expected="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["sha256"])' "$manifest" 2>/dev/null)" || return 1
    [ "$(sha256sum "$model" | cut -d' ' -f1)" = "$expected" ]
}

install_models() {
    step "models in $MODELS"
    if [ -n "$MODELS_FROM" ]; then
        local model copied=0
        for model in "$MODELS_FROM"/*.onnx; do
            [ -f "$model" ] || continue
            local manifest="${model%.onnx}.json"
            if [ ! -f "$manifest" ]; then
                echo "warning: skipped $model: its manifest $(basename "$manifest") is missing (write one with edgeface model register)" >&2
                continue
            fi
            install_file 0644 "$model" "$ROOT$MODELS/$(basename "$model")"
            install_file 0644 "$manifest" "$ROOT$MODELS/$(basename "$manifest")"
            copied=$((copied + 1))
        done
        [ "$copied" -gt 0 ] || { echo "install.sh: no .onnx model with a .json manifest in $MODELS_FROM" >&2; exit 1; }
    elif manifest_matches "$ROOT$MODELS/$DEFAULT_MODEL"; then
        echo "    $MODELS/$DEFAULT_MODEL is in place and matches its manifest"
    else
        local export_command=("$ROOT$VENV/bin/python" -m export dlib-resnet --out "$ROOT$MODELS" --skip-parity)
        if [ "$SKIP_PIP" = 1 ]; then
            echo "    skipped (--skip-pip): ${export_command[*]}"
        else
            "${export_command[@]}"
        fi
    fi
}

install_units() {
    step "systemd units and udev rule"
    local unit
    for unit in "${UNITS[@]}"; do
        install_file 0644 "$UNIT_DIR_SOURCE/$unit" "$ROOT$SYSTEMD_DIR/$unit"
    done
    install_file 0644 "$UNIT_DIR_SOURCE/$UDEV_RULE" "$ROOT$UDEV_DIR/$UDEV_RULE"
    # 'edgeface' on the PATH for doctor, enroll and identify.
    ln -sfn "$VENV/bin/edgeface" "$ROOT/usr/local/bin/edgeface"
    system systemctl daemon-reload
    system udevadm control --reload
    if [ "$NO_SYSTEM" = 1 ] && command -v systemctl >/dev/null; then
        # systemctl --root only writes the [Install] symlinks under $ROOT.
        systemctl --root="$ROOT" --quiet enable edgeface.service
    else
        system systemctl enable edgeface.service
    fi
}

check_and_start() {
    if [ "$NO_START" = 1 ]; then
        step "not started (--no-start): run 'sudo systemctl start edgeface' when ready"
        return 0
    fi
    step "edgeface doctor, then start edgeface.service"
    # The doctor claims the relay pin, so the old service must not hold it.
    system systemctl stop edgeface.service
    if [ "$NO_SYSTEM" = 1 ] || [ "$SKIP_PIP" = 1 ]; then
        echo "    skipped (test mode): runuser -u $USER_NAME -- $VENV/bin/edgeface doctor --config $CONFIG_DIR/config.yaml"
        system systemctl start edgeface.service
        return 0
    fi
    # From /, because the user edgeface cannot enter the clone in a home folder.
    if (cd / && runuser -u "$USER_NAME" -- "$VENV/bin/edgeface" doctor --config "$CONFIG_DIR/config.yaml"); then
        systemctl start edgeface.service
        echo "edgeface is running: follow it with 'journalctl -u edgeface -f'"
    else
        echo "edgeface is installed and enabled but not started: apply the fixes above, then run" >&2
        echo "  sudo -u $USER_NAME edgeface doctor --config $CONFIG_DIR/config.yaml && sudo systemctl start edgeface" >&2
        return 1
    fi
}

check_platform
install_packages
create_user
create_folders
create_venv
write_config
install_models
install_units
check_and_start
