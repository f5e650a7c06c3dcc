#!/usr/bin/env bash
# Install fer-edge as a hardened systemd service on Raspberry Pi OS Bookworm 64-bit
# (also works on Debian/Ubuntu x86-64, for testing). Idempotent: run it again to upgrade.
#
#   sudo deploy/install.sh                 # install or upgrade, enable and (re)start the service
#   sudo deploy/install.sh --dry-run       # print every action, change nothing
#   sudo deploy/install.sh --uninstall     # remove service, venv, user; keep config and logs
#   sudo deploy/install.sh --uninstall --purge
#
# See deploy/README.md for what each step does and why.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"

SERVICE=fer-edge
SERVICE_USER=fer-edge
DEFAULT_PREFIX=/opt/fer-edge
# Groups the service joins when they exist: video (camera, always present on Debian),
# plugdev (Coral USB: libedgetpu's udev rule), apex (Coral PCIe/M.2: gasket-dkms' udev rule).
OPTIONAL_GROUPS="plugdev apex"

PREFIX=$DEFAULT_PREFIX
ROOT=""
SOURCE=""
WHEEL=""
PYTHON=""
DRY_RUN=0
UNINSTALL=0
PURGE=0
NO_START=0
NO_DEPS=0
NO_APT=0

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

Install (default), upgrade, or remove the fer-edge systemd service.

Options:
  --prefix DIR     install directory; the venv goes to DIR/venv (default: $DEFAULT_PREFIX)
  --root DIR       staging root: write every file under DIR (DIR/etc/..., DIR/opt/...);
                   no apt-get, no useradd, no systemctl (printed as skipped). For inspection
                   and tests: the venv's paths point into DIR, so do not copy it to a device.
  --source PATH    pip install this project directory (default: $REPO_DIR)
  --wheel PATH     pip install this wheel instead of a source directory
  --python PATH    interpreter for the venv (default: /usr/bin/python3, which sees apt's picamera2)
  --no-start       install and enable, but do not (re)start the service
  --no-deps        pip install --no-deps --no-build-isolation (tests; dependencies must come
                   from the system site-packages or be installed already)
  --no-apt         do not apt-get install anything
  --dry-run        print every action ("+ command", one per line) and change nothing
  --uninstall      stop and disable the service; remove the unit, the venv and the user;
                   keep /etc/fer-edge and the logs
  --purge          with --uninstall: also remove /etc/fer-edge, /var/lib/fer-edge, /var/log/fer-edge
  -h, --help       this help

Environment: FER_EDGE_MODEL_FILE overrides the device-tree model file read to detect a
Raspberry Pi (default: /proc/device-tree/model, then /sys/firmware/devicetree/base/model).
EOF
}

die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

note() {
    echo "== $*"
}

# Print a command the way a shell would take it back, one per line, prefixed with "+ ".
show() {
    local out="+" arg
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
            out+=" $arg"
        else
            out+=" '${arg//\'/\'\\\'\'}'"
        fi
    done
    printf '%s\n' "$out"
}

# Every change goes through run (or run_to): printed, then executed unless --dry-run.
run() {
    show "$@"
    if [[ $DRY_RUN -eq 0 ]]; then
        "$@"
    fi
}

# run_to FILE CMD...: CMD's stdout replaces FILE.
run_to() {
    local file=$1
    shift
    printf '%s > %s\n' "$(show "$@")" "$(printf '%q' "$file")"
    if [[ $DRY_RUN -eq 0 ]]; then
        "$@" >"$file"
    fi
}

skip() {
    echo "# skipped: $*"
}

parse_args() {
    while [[ $# -gt 0 ]]; do
        case $1 in
            --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
            --prefix=*) PREFIX=${1#*=}; shift ;;
            --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
            --root=*) ROOT=${1#*=}; shift ;;
            --source) SOURCE=${2:?--source needs a path}; shift 2 ;;
            --source=*) SOURCE=${1#*=}; shift ;;
            --wheel) WHEEL=${2:?--wheel needs a path}; shift 2 ;;
            --wheel=*) WHEEL=${1#*=}; shift ;;
            --python) PYTHON=${2:?--python needs a path}; shift 2 ;;
            --python=*) PYTHON=${1#*=}; shift ;;
            --no-start) NO_START=1; shift ;;
            --no-deps) NO_DEPS=1; shift ;;
            --no-apt) NO_APT=1; shift ;;
            --dry-run) DRY_RUN=1; shift ;;
            --uninstall) UNINSTALL=1; shift ;;
            --purge) PURGE=1; shift ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown option: $1" ;;
        esac
    done
    [[ $PREFIX == /* ]] || die "--prefix must be an absolute path: $PREFIX"
    PREFIX=${PREFIX%/}
    [[ -n $PREFIX ]] || die "--prefix must not be /"
    [[ $PREFIX =~ ^[A-Za-z0-9_./-]+$ ]] || die "--prefix may hold only letters, digits and _ . / -: $PREFIX"
    if [[ -n $ROOT ]]; then
        ROOT="$(realpath -m -- "$ROOT")"
        [[ $ROOT != / ]] || ROOT=""
    fi
    [[ -z $SOURCE || -z $WHEEL ]] || die "give --source or --wheel, not both"
    [[ $PURGE -eq 0 || $UNINSTALL -eq 1 ]] || die "--purge goes with --uninstall"
    if [[ -n $WHEEL ]]; then
        [[ -f $WHEEL ]] || die "wheel not found: $WHEEL"
        WHEEL="$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")"
    else
        SOURCE=${SOURCE:-$REPO_DIR}
        [[ -f $SOURCE/pyproject.toml ]] || die "not a project directory (no pyproject.toml): $SOURCE"
        SOURCE="$(cd "$SOURCE" && pwd)"
    fi
    if [[ -z $PYTHON ]]; then
        if [[ -x /usr/bin/python3 ]]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
    fi
    if [[ -z $ROOT && $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
        die "run as root (sudo $0 ...), or use --dry-run / --root DIR"
    fi
}

# Paths as the target system sees them, and where this run writes them.
set_paths() {
    VENV=$PREFIX/venv
    CONF_DIR=/etc/fer-edge
    UNIT_FILE=/etc/systemd/system/$SERVICE.service
    DROPIN_DIR=/etc/systemd/system/$SERVICE.service.d
    STATE_DIR=/var/lib/fer-edge
    LOGS_DIR=/var/log/fer-edge
    R_PREFIX=$ROOT$PREFIX
    R_VENV=$ROOT$VENV
    R_CONF_DIR=$ROOT$CONF_DIR
    R_UNIT_FILE=$ROOT$UNIT_FILE
    R_DROPIN_DIR=$ROOT$DROPIN_DIR
}

PI_MODEL=""

# Sets PI_MODEL (e.g. "Raspberry Pi 5 Model B Rev 1.0") and succeeds on a Raspberry Pi.
is_raspberry_pi() {
    local f model
    for f in ${FER_EDGE_MODEL_FILE:-/proc/device-tree/model /sys/firmware/devicetree/base/model}; do
        if [[ -r $f ]]; then
            model=$(tr -d '\0' <"$f" || true)
            if [[ $model == *"Raspberry Pi"* ]]; then
                PI_MODEL=$model
                return 0
            fi
        fi
    done
    return 1
}

systemd_running() {
    [[ -z $ROOT && -d /run/systemd/system ]]
}

group_exists() {
    if [[ -n $ROOT && -f $ROOT/etc/group ]]; then
        grep -q "^$1:" "$ROOT/etc/group"
    else
        getent group "$1" >/dev/null 2>&1
    fi
}

user_exists() {
    if [[ -n $ROOT && -f $ROOT/etc/passwd ]]; then
        grep -q "^$1:" "$ROOT/etc/passwd"
    else
        getent passwd "$1" >/dev/null 2>&1
    fi
}

apt_packages() {
    local missing=() pkg
    local wanted=(python3-venv)
    if is_raspberry_pi; then
        note "Raspberry Pi detected: $PI_MODEL"
        # libcamera's Python bindings and picamera2 are only packaged by apt (not on PyPI for Pi).
        wanted+=(python3-picamera2)
    else
        note "not a Raspberry Pi: python3-picamera2 is not installed (use [source] camera or path)"
    fi
    if [[ -n $ROOT ]]; then
        skip "apt-get install ${wanted[*]} (--root: packages are not installed into a staging root)"
        return
    fi
    if [[ $NO_APT -eq 1 ]]; then
        skip "apt-get install ${wanted[*]} (--no-apt)"
        return
    fi
    for pkg in "${wanted[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        note "apt packages already installed: ${wanted[*]}"
        return
    fi
    run apt-get update
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

supplementary_groups() {
    local groups="video" g
    if [[ -z $ROOT ]] && ! group_exists video; then
        die "group video does not exist: the camera devices belong to it on Debian/Raspberry Pi OS"
    fi
    for g in $OPTIONAL_GROUPS; do
        if group_exists "$g"; then groups+=" $g"; fi
    done
    echo "$groups"
}

create_user() {
    local groups
    groups=$(supplementary_groups)
    if [[ -n $ROOT ]]; then
        skip "useradd --system --user-group --home-dir $STATE_DIR --no-create-home --shell /usr/sbin/nologin --groups ${groups// /,} $SERVICE_USER (--root: the host's users are not touched)"
        return
    fi
    if user_exists "$SERVICE_USER"; then
        note "user $SERVICE_USER exists"
        # Keep group membership in step with what exists now (a Coral runtime adds plugdev/apex).
        local current
        current=" $(id -nG "$SERVICE_USER" 2>/dev/null || true) "
        local g
        for g in $groups; do
            if [[ $current != *" $g "* ]]; then
                run usermod --append --groups "$g" "$SERVICE_USER"
            fi
        done
        return
    fi
    run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --groups "${groups// /,}" "$SERVICE_USER"
}

make_dirs() {
    if [[ ! -d $R_PREFIX ]]; then run mkdir -p "$R_PREFIX"; fi
    if [[ ! -d $R_CONF_DIR ]]; then run mkdir -p "$R_CONF_DIR"; fi
    if [[ -z $ROOT ]]; then
        # Config may hold an MQTT password: root writes it, the service group reads it.
        if [[ $(stat -c '%U:%G %a' "$R_CONF_DIR" 2>/dev/null) != "root:$SERVICE_USER 750" ]]; then
            run chown "root:$SERVICE_USER" "$R_CONF_DIR"
            run chmod 0750 "$R_CONF_DIR"
        fi
    else
        # systemd creates /var/lib/fer-edge and /var/log/fer-edge (StateDirectory=, LogsDirectory=)
        # when the service starts; a staging root gets them for inspection only.
        local d
        for d in "$ROOT$STATE_DIR" "$ROOT$LOGS_DIR"; do
            if [[ ! -d $d ]]; then run mkdir -p "$d"; fi
        done
    fi
}

make_venv() {
    if [[ -x $R_VENV/bin/python ]] && grep -q "include-system-site-packages = true" "$R_VENV/pyvenv.cfg" 2>/dev/null; then
        note "venv exists: $R_VENV"
    else
        # --system-site-packages: apt's python3-picamera2 (and libcamera bindings) stay importable.
        run "$PYTHON" -m venv --system-site-packages "$R_VENV"
    fi
}

STAGE=""

cleanup() {
    if [[ -n $STAGE && -d $STAGE ]]; then rm -rf -- "$STAGE"; fi
}

# pip builds a source directory in place (build/, *.egg-info): build from a copy, so that
# `sudo install.sh` leaves no root-owned files in the user's clone.
stage_source() {
    if [[ $DRY_RUN -eq 1 ]]; then
        STAGE=${TMPDIR:-/tmp}/fer-edge-install.XXXXXX
    else
        STAGE=$(mktemp -d "${TMPDIR:-/tmp}/fer-edge-install.XXXXXX")
        trap cleanup EXIT
    fi
    local excludes=(--exclude=./.git --exclude=./.venv --exclude=./.arm64 --exclude=./shared
        --exclude=./build --exclude=./dist --exclude=./runs --exclude='*.egg-info'
        --exclude=__pycache__ --exclude=.pytest_cache)
    local right
    right=$(show tar -C "$STAGE/src" -xf -)
    printf '%s\n' "$(show mkdir "$STAGE/src")"
    printf '%s | %s\n' "$(show tar -C "$SOURCE" "${excludes[@]}" -cf - .)" "${right#+ }"
    if [[ $DRY_RUN -eq 0 ]]; then
        mkdir "$STAGE/src"
        tar -C "$SOURCE" "${excludes[@]}" -cf - . | tar -C "$STAGE/src" -xf -
    fi
}

pip_install() {
    local target args=(--upgrade --constraint "$SCRIPT_DIR/constraints-pi.txt")
    if [[ -n $WHEEL ]]; then
        target=$WHEEL
    else
        stage_source
        target=$STAGE/src
    fi
    if [[ $NO_DEPS -eq 1 ]]; then
        args+=(--no-deps --no-build-isolation)
    fi
    # Runtime only: no extras, so no TensorFlow. --upgrade reinstalls the project from the
    # source or wheel given (an upgrade); dependencies move only when they must.
    run "$R_VENV/bin/python" -m pip install --disable-pip-version-check "${args[@]}" "$target"
}

install_config() {
    if ! cmp -s "$SCRIPT_DIR/config.example.toml" "$R_CONF_DIR/config.example.toml"; then
        run install -m 0644 "$SCRIPT_DIR/config.example.toml" "$R_CONF_DIR/config.example.toml"
    fi
    if [[ -e $R_CONF_DIR/config.toml ]]; then
        note "kept existing $CONF_DIR/config.toml (the newest example is $CONF_DIR/config.example.toml)"
        # After --uninstall (userdel) and a reinstall, the kept file's group is a stale number.
        if [[ -z $ROOT && $(stat -c '%G' "$R_CONF_DIR/config.toml") != "$SERVICE_USER" ]]; then
            run chown "root:$SERVICE_USER" "$R_CONF_DIR/config.toml"
        fi
        return
    fi
    run install -m 0640 "$SCRIPT_DIR/config.example.toml" "$R_CONF_DIR/config.toml"
    if [[ -z $ROOT ]]; then
        run chown "root:$SERVICE_USER" "$R_CONF_DIR/config.toml"
    fi
}

# The unit, with /opt/fer-edge replaced by --prefix.
UNIT_CMD=()
# The drop-in adding the optional groups that exist here (empty when there are none).
DROPIN_CMD=()

prepare_renderers() {
    UNIT_CMD=(sed -e "s#/opt/fer-edge#$PREFIX#g" "$SCRIPT_DIR/fer-edge.service")
    local groups extra
    groups=$(supplementary_groups)
    extra=${groups#video}
    extra=${extra# }
    DROPIN_CMD=()
    if [[ -n $extra ]]; then
        DROPIN_CMD=(printf '%s\n'
            "# Written by deploy/install.sh: the optional groups that exist on this machine"
            "# (plugdev: Coral USB, apex: Coral PCIe). Re-run install.sh after installing a Coral runtime."
            "[Service]"
            "SupplementaryGroups=$extra")
    fi
}


install_unit() {
    if [[ ! -d $(dirname "$R_UNIT_FILE") ]]; then run mkdir -p "$(dirname "$R_UNIT_FILE")"; fi
    prepare_renderers
    if [[ -f $R_UNIT_FILE ]] && cmp -s <("${UNIT_CMD[@]}") "$R_UNIT_FILE"; then
        note "unit unchanged: $UNIT_FILE"
    else
        run_to "$R_UNIT_FILE" "${UNIT_CMD[@]}"
        run chmod 0644 "$R_UNIT_FILE"
    fi
    if [[ ${#DROPIN_CMD[@]} -eq 0 ]]; then
        if [[ -e $R_DROPIN_DIR/groups.conf ]]; then
            run rm -f "$R_DROPIN_DIR/groups.conf"
        fi
    elif [[ -f $R_DROPIN_DIR/groups.conf ]] && cmp -s <("${DROPIN_CMD[@]}") "$R_DROPIN_DIR/groups.conf"; then
        note "drop-in unchanged: $DROPIN_DIR/groups.conf"
    else
        if [[ ! -d $R_DROPIN_DIR ]]; then run mkdir -p "$R_DROPIN_DIR"; fi
        run_to "$R_DROPIN_DIR/groups.conf" "${DROPIN_CMD[@]}"
        run chmod 0644 "$R_DROPIN_DIR/groups.conf"
    fi
    if [[ -f $SCRIPT_DIR/README.md ]]; then
        if ! cmp -s "$SCRIPT_DIR/README.md" "$R_PREFIX/README-deploy.md"; then
            run install -m 0644 "$SCRIPT_DIR/README.md" "$R_PREFIX/README-deploy.md"
        fi
    fi
}

start_service() {
    local cmds=("systemctl daemon-reload" "systemctl enable $SERVICE.service")
    # restart, not start: an upgrade must load the new code.
    if [[ $NO_START -eq 0 ]]; then cmds+=("systemctl restart $SERVICE.service"); fi
    if [[ -n $ROOT ]] || ! systemd_running; then
        if [[ -n $ROOT ]]; then
            skip "systemctl (--root: the host's services are not touched); on the device:"
        else
            skip "systemctl (systemd is not running here: a container?); on the device:"
        fi
        local c
        for c in "${cmds[@]}"; do echo "#   $c"; done
        return
    fi
    run systemctl daemon-reload
    run systemctl enable "$SERVICE.service"
    if [[ $NO_START -eq 1 ]]; then
        skip "systemctl restart $SERVICE.service (--no-start)"
        return
    fi
    run systemctl restart "$SERVICE.service"
    if [[ $DRY_RUN -eq 0 ]]; then
        echo "fer-edge is running. Follow it with: journalctl -u $SERVICE -f"
    fi
}

do_install() {
    note "installing fer-edge: prefix $PREFIX${ROOT:+, staging root $ROOT}${WHEEL:+, wheel $WHEEL}${SOURCE:+, source $SOURCE}"
    apt_packages
    create_user
    make_dirs
    make_venv
    pip_install
    install_config
    install_unit
    start_service
    if [[ $DRY_RUN -eq 1 ]]; then note "dry run: nothing was changed"; else note "done"; fi
}

do_uninstall() {
    note "removing fer-edge: prefix $PREFIX${ROOT:+, staging root $ROOT}"
    if systemd_running; then
        if [[ -f $R_UNIT_FILE ]]; then
            run systemctl disable --now "$SERVICE.service"
        fi
    elif [[ -n $ROOT ]]; then
        skip "systemctl disable --now $SERVICE.service (--root)"
    else
        skip "systemctl disable --now $SERVICE.service (systemd is not running here)"
    fi
    if [[ -e $R_UNIT_FILE ]]; then run rm -f "$R_UNIT_FILE"; fi
    if [[ -e $R_DROPIN_DIR ]]; then run rm -rf "$R_DROPIN_DIR"; fi
    if systemd_running; then run systemctl daemon-reload; fi
    if [[ -e $R_VENV ]]; then run rm -rf "$R_VENV"; fi
    if [[ -e $R_PREFIX/README-deploy.md ]]; then run rm -f "$R_PREFIX/README-deploy.md"; fi
    # Only an empty prefix is removed: whatever else was put there stays.
    if [[ -d $R_PREFIX ]]; then run rmdir --ignore-fail-on-non-empty "$R_PREFIX"; fi
    if [[ -n $ROOT ]]; then
        skip "userdel $SERVICE_USER (--root)"
    elif user_exists "$SERVICE_USER"; then
        run userdel "$SERVICE_USER"
    fi
    if [[ $PURGE -eq 1 ]]; then
        local d
        for d in "$R_CONF_DIR" "$ROOT$STATE_DIR" "$ROOT$LOGS_DIR"; do
            if [[ -e $d ]]; then run rm -rf "$d"; fi
        done
    else
        note "kept $CONF_DIR, $STATE_DIR and $LOGS_DIR (add --purge to remove them)"
    fi
    if [[ $DRY_RUN -eq 1 ]]; then note "dry run: nothing was changed"; else note "done"; fi
}

main() {
    parse_args "$@"
    set_paths
    if [[ $UNINSTALL -eq 1 ]]; then
        do_uninstall
    else
        do_install
    fi
}

main "$@"
