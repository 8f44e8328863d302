#!/usr/bin/env bash
# The project's Soft-RoCE test bed: runs shell commands inside throw-away qemu guests that have a
# software RDMA device (rdma_rxe), so the RDMA suite runs on real verbs and rdma-cm on a machine (or
# CI runner) without RDMA hardware. Linux x86-64 with apt (Debian 12 / Ubuntu), as root or with
# password-less sudo.
#
#   scripts/softroce/softroce.sh one 'command'                    one guest (rxe0 on a dummy NIC)
#   scripts/softroce/softroce.sh two 'command for a' 'command for b'   two guests joined by a wire
#
# Most callers use the wrappers: run.sh (one guest, from the repository root) and two-hosts.sh.
#
# What it does (first run only, then cached under $SOFTROCE_DIR):
#   1. apt-get update, then installs what is missing of: qemu-system-x86 busybox-static cpio kmod
#      python3 rdma-core ibverbs-utils ibverbs-providers rdmacm-utils perftest iproute2
#      (the guest shares this machine's file system, so the host's libibverbs, librdmacm and
#      rdma tools are the guest's);
#   2. `apt-get download`s Debian's kernel package (the linux-image-6.1.0-N-amd64 that
#      linux-image-amd64 depends on: this machine's own kernel may lack RDMA, Debian's has rdma_rxe
#      as a module), unpacks it and extracts an uncompressed vmlinux (qemu boots that ~3 s faster
#      under emulation);
#   3. builds an initramfs: busybox plus the modules the guest needs (virtio, 9p, overlay, rdma_rxe,
#      rdma_ucm, netem and the ingress drop filter used to cut the wire).
# About 1-3 minutes the first time (mostly apt), then a few seconds of boot per guest.
#
# Each guest: 2 GiB, TCG emulation (KVM is not required, nor used), this machine's whole "/" shared
# read-only (writes land in a tmpfs overlay and vanish), the current directory shared READ-WRITE at
# the same path, a fresh tmpfs /tmp. The command runs as root in the current directory with the
# caller's exported environment. So build on the host, keep what the guest needs under the current
# directory, run it in the guest. Inside:
#   SOFTROCE_DEV (rxe0), SOFTROCE_IP, SOFTROCE_NETDEV, SOFTROCE_GID_INDEX (1, the RoCEv2 IPv4 GID)
#   one guest: rxe0 on the dummy NIC rdma0, 10.99.0.1 (rdma-cm does not work on 127.0.0.1). rxe
#     delivers traffic between local addresses inside the driver: nothing can cut it.
#   two guests: a = 10.99.1.1, b = 10.99.1.2, rxe0 on each guest's virtio NIC eth0; the two NICs are
#     joined by qemu's UDP socket netdev between two ports on 127.0.0.1 (nothing else is on that
#     wire, nothing leaves the machine), so `tc` in a guest cuts the wire and
#     `echo o > /proc/sysrq-trigger` makes a host vanish. Also SOFTROCE_HOST (a|b), SOFTROCE_PEER_IP
#     and SOFTROCE_SHARED (a fresh directory both guests see, for barrier files). Each command starts
#     once its guest can ping the other; guest clocks are set from the host's (within ~20 ms), so
#     time stamps from a and b compare. Output lines are prefixed "[a] " / "[b] ".
#   modprobe works in the guest (the kernel's own module tree is mounted).
#
# Exit status: the command's (two guests: a's; if that is 0, b's when b's command failed). 124: the
# run took longer than SOFTROCE_TIMEOUT; 125: a guest failed (did not boot, crashed, reported no
# status); 126: setup failed (the message says why: no apt, not root, download failed, ...).
# When a's command ends, b gets SOFTROCE_GRACE seconds to end, then is powered off; b powering
# itself off is not a failure. One summary line on stderr.
#
# Knobs: SOFTROCE_DIR (cache; default ${XDG_CACHE_HOME:-~/.cache}/rdma-graceful/softroce),
# SOFTROCE_TIMEOUT (seconds for the whole boot+command, default 1800), SOFTROCE_MEM (MiB per guest,
# 2048), SOFTROCE_SMP (vCPUs per guest; default the host's cores, split between two guests),
# SOFTROCE_GRACE (5), SOFTROCE_KVER (guest kernel ABI, e.g. 6.1.0-41-amd64), SOFTROCE_VERBOSE=1
# (progress and timings). The guests' kernel logs are kept in $SOFTROCE_DIR/last-console*.log.
set -euo pipefail

prog=softroce
usage() {
  echo "usage: $0 one 'command'   |   $0 two 'command for a' 'command for b'" >&2
  exit 2
}
MODE=${1:-}
case "$MODE" in
  one) [ $# -eq 2 ] || usage ;;
  two) [ $# -eq 3 ] || usage ;;
  *) usage ;;
esac
shift
T0=$(date +%s.%N)

D=${SOFTROCE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rdma-graceful/softroce}
MEM=${SOFTROCE_MEM:-2048}
SMP=${SOFTROCE_SMP:-}
if [ -z "$SMP" ]; then
  SMP=$(nproc)
  [ "$MODE" = two ] && SMP=$(( (SMP + 1) / 2 ))
fi
[ "$SMP" -gt 8 ] && SMP=8
TMO=${SOFTROCE_TIMEOUT:-1800}
GRACE=${SOFTROCE_GRACE:-5}
log() { if [ "${SOFTROCE_VERBOSE:-0}" = 1 ]; then echo "[$prog] $*" >&2; fi; }
fail() { echo "$prog: setup failed: $*" >&2; exit 126; }

[ "$(uname -s)" = Linux ] || fail "needs Linux (found $(uname -s))"
[ "$(uname -m)" = x86_64 ] || fail "needs an x86-64 machine (found $(uname -m)): the guest is Debian's amd64 kernel"
mkdir -p "$D" || fail "cannot create the cache directory $D (set SOFTROCE_DIR)"
D=$(cd "$D" && pwd -P)
exec 9>"$D/.lock"      # one run at a time builds the cache
command -v flock >/dev/null || fail "flock (util-linux) is missing"
timeout 900 flock 9 || fail "another run held $D/.lock for 15 minutes"

# ---- 1. host packages ---------------------------------------------------------------------------
SUDO=()
if [ "$(id -u)" != 0 ]; then SUDO=(sudo -n); fi
APT_UPDATED=0
apt_get() {   # apt_get ARGS...: as root, waiting (5 min at most) for another apt to finish
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive timeout 900 apt-get -o DPkg::Lock::Timeout=300 "$@"
}
apt_update_once() {
  [ "$APT_UPDATED" = 1 ] && return 0
  log "apt-get update"
  apt_get update -qq >>"$D/apt.log" 2>&1 || fail "apt-get update failed, see $D/apt.log"
  APT_UPDATED=1
}
PACKAGES=(qemu-system-x86 busybox-static cpio kmod python3 rdma-core ibverbs-utils ibverbs-providers
  rdmacm-utils perftest iproute2)
need=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || fail "missing packages (${need[*]}) and no apt-get to install them: install them by hand"
  if [ ${#SUDO[@]} -gt 0 ] && ! sudo -n true 2>/dev/null; then
    fail "missing packages (${need[*]}): run as root, or with password-less sudo, or install them first"
  fi
  echo "$prog: installing ${need[*]} (apt-get; once)" >&2
  apt_update_once
  apt_get install -y -qq --no-install-recommends "${need[@]}" >>"$D/apt.log" 2>&1 \
    || fail "apt-get install ${need[*]} failed, see $D/apt.log"
fi
for c in qemu-system-x86_64 busybox cpio depmod modprobe python3 ip tc rdma; do
  command -v "$c" >/dev/null || fail "$c not found after installing the packages"
done
[ -x /bin/busybox ] || fail "/bin/busybox (busybox-static) not found"

# ---- 2. guest kernel ----------------------------------------------------------------------------
kver_from_apt() {
  apt-cache depends linux-image-amd64 2>/dev/null \
    | sed -n 's/.*Depends: linux-image-\([0-9][0-9.]*-[0-9]*-amd64\)$/\1/p' | head -n1
}
KVER=${SOFTROCE_KVER:-$(cat "$D/kernel.ver" 2>/dev/null || true)}
if [ -z "$KVER" ]; then
  KVER=$(kver_from_apt)
  if [ -z "$KVER" ]; then apt_update_once; KVER=$(kver_from_apt); fi
  [ -n "$KVER" ] || fail "cannot tell which kernel linux-image-amd64 depends on (apt-cache depends linux-image-amd64): is this Debian?"
fi
KDIR="$D/kernel-$KVER"
VMLINUX="$KDIR/vmlinux"
MODROOT="$KDIR/root"
if [ ! -f "$VMLINUX" ]; then
  echo "$prog: downloading Debian's kernel linux-image-$KVER (apt-get download; once)" >&2
  rm -rf "$KDIR"; mkdir -p "$KDIR/dl"
  ( cd "$KDIR/dl" && timeout 600 apt-get download "linux-image-$KVER" ) >"$D/kernel-download.log" 2>&1 || {
    apt_update_once
    ( cd "$KDIR/dl" && timeout 600 apt-get download "linux-image-$KVER" ) >>"$D/kernel-download.log" 2>&1 \
      || fail "apt-get download linux-image-$KVER failed, see $D/kernel-download.log"
  }
  dpkg -x "$KDIR"/dl/linux-image-"$KVER"_*.deb "$MODROOT" || fail "cannot unpack the kernel package"
  rm -rf "$KDIR/dl"
  [ -f "$MODROOT/boot/vmlinuz-$KVER" ] || fail "the kernel package has no boot/vmlinuz-$KVER"
  depmod -b "$MODROOT" "$KVER" || fail "depmod for $KVER failed"
  # The uncompressed ELF vmlinux inside the xz bzImage: qemu boots it directly (PVH).
  python3 - "$MODROOT/boot/vmlinuz-$KVER" "$VMLINUX.tmp" <<'PY' || cp "$MODROOT/boot/vmlinuz-$KVER" "$VMLINUX.tmp"
import lzma, sys
data = open(sys.argv[1], 'rb').read()
off = data.find(b'\xfd7zXZ\x00')
assert off > 0, 'no xz stream'
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[off:])
assert elf[:4] == b'\x7fELF', 'not an ELF image'
open(sys.argv[2], 'wb').write(elf)
PY
  mv "$VMLINUX.tmp" "$VMLINUX"
  echo "$KVER" >"$D/kernel.ver"
fi

# ---- 3. initramfs -------------------------------------------------------------------------------
INIT_VERSION=1   # bump when the guest's init below changes
INITRD="$KDIR/initramfs.cpio.gz"
if [ ! -f "$INITRD" ] || [ "$(cat "$INITRD.ver" 2>/dev/null)" != "$INIT_VERSION" ]; then
  log "building $INITRD"
  R="$KDIR/initramfs.tmp"; rm -rf "$R"
  mkdir -p "$R"/{bin,mods,proc,sys,dev,lower,rw,newroot,ctl}
  cp /bin/busybox "$R/bin/busybox"
  # crc32_generic: rxe needs the "crc32" hash; sch_ingress, cls_matchall, act_gact: the ingress
  # drop that makes a cut silent both ways (loaded up front, so a cut takes effect at once).
  for m in virtio_pci 9pnet_virtio 9p overlay crc32_generic rdma_rxe rdma_ucm ib_umad dummy \
           virtio_net sch_netem sch_ingress cls_matchall act_gact; do
    modprobe -d "$MODROOT" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}' \
      || fail "module $m not found in linux-image-$KVER"
  done | awk '!seen[$0]++' >"$R/mods.list"
  while read -r ko; do
    cp "$ko" "$R/mods/" && basename "$ko" >>"$R/mods/order"
  done <"$R/mods.list"
  rm "$R/mods.list"
  cat >"$R/init" <<'INIT'
#!/bin/busybox sh
# The guest's init: mounts the host's root (read-only, tmpfs overlay) and the shared directories,
# sets up the NIC and rxe0, sets the clock, runs the command, reports its status, powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
say() { echo "softroce-init: $*" >/dev/ttyS0; }
die() { say "FATAL: $*"; echo "softroce (guest): $*" >/dev/ttyS1; poweroff -f; }
while read -r m; do insmod "/mods/$m" 2>/dev/ttyS0 || say "insmod $m failed"; done </mods/order
O9="trans=virtio,version=9p2000.L,msize=512000"
mount -t 9p -o $O9 ctl /ctl || die "mount of the ctl share failed"
mount -t 9p -o $O9,ro,cache=loose hostroot /lower || die "mount of the host's root failed"
mount -t tmpfs -o mode=755 tmpfs /rw; mkdir -p /rw/upper /rw/work
if ! mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot 2>/dev/ttyS0; then
  say "overlay failed: read-only root with tmpfs /var/tmp and /root"
  mount --bind /lower /newroot
  for d in /var/tmp /root; do mount -t tmpfs tmpfs /newroot$d; done
fi
N=/newroot
mount -t proc proc $N/proc; mount -t sysfs sysfs $N/sys; mount -t devtmpfs devtmpfs $N/dev
mkdir -p $N/dev/pts $N/dev/shm; mount -t devpts devpts $N/dev/pts; mount -t tmpfs tmpfs $N/dev/shm
mount -t tmpfs -o mode=755 tmpfs $N/run; mkdir -p $N/run/softroce $N/run/lock
mount -t tmpfs -o mode=1777 tmpfs $N/tmp
cp /ctl/cmd.sh /ctl/env.sh /ctl/cwd $N/run/softroce/
# The guest kernel's module tree, for modprobe and the kernel's module autoloading (tc).
KV=$(uname -r); MR="/lower$(cat /ctl/modroot)/lib/modules/$KV"
if [ -d "$MR" ] && mkdir -p "$N/lib/modules/$KV" && mount --bind "$MR" "$N/lib/modules/$KV"; then
  printf '#!/bin/sh\nexec chroot /newroot /sbin/modprobe "$@"\n' >/bin/modprobe-newroot
  chmod +x /bin/modprobe-newroot; echo /bin/modprobe-newroot >/proc/sys/kernel/modprobe
fi
# Guest clock := host clock. The host stamps the mtime of a file created between two readings of
# the guest's clock; `date -s "D seconds"` adds D to the guest's now.
gt() { adjtimex | awk '/tv_sec/ {s = $2} /tv_usec/ {u = $2} END {printf "%d.%06d", s, u}'; }
g1=$(gt); : >/ctl/clock; g2=$(gt)
D=$(stat -c '%Y %y' /ctl/clock | awk -v a="$g1" -v b="$g2" '{split($3, f, "."); printf "%.6f", $1 + ("0." f[2]) - (a + b) / 2}')
chroot $N /bin/date -s "$D seconds" >/dev/null 2>&1 || say "clock not set"
CWD=$(cat /ctl/cwd)
if [ "$CWD" != / ]; then
  mkdir -p "$N$CWD" && mount -t 9p -o $O9 cwd "$N$CWD" || die "mount of the working directory at $CWD failed"
fi
hostname softroce
ip link set lo up
HOST=; PEER_IP=
if [ -f /ctl/host ]; then   # two hosts: the virtio NIC is wired to the other guest
  read -r HOST DEV_IP PEER_IP </ctl/host
  NDEV=; for i in /sys/class/net/*; do [ -e "$i/device" ] && NDEV=${i##*/}; done
  [ -n "$NDEV" ] || die "no network card"
  hostname "softroce-$HOST"
  mkdir -p $N/run/softroce/shared && mount -t 9p -o $O9 shared $N/run/softroce/shared || die "mount of the shared directory failed"
  ip addr add $DEV_IP/24 dev $NDEV && ip link set $NDEV up || die "$NDEV setup failed"
else
  ip link add rdma0 type dummy && ip addr add 10.99.0.1/24 dev rdma0 && ip link set rdma0 up || die "dummy NIC setup failed"
  DEV_IP=10.99.0.1; NDEV=rdma0
fi
chroot $N /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin rdma link add rxe0 type rxe netdev $NDEV >/dev/ttyS0 2>&1 \
  || die "rdma link add rxe0 type rxe netdev $NDEV failed"
printf 'export SOFTROCE_DEV=rxe0 SOFTROCE_IP=%s SOFTROCE_NETDEV=%s SOFTROCE_GID_INDEX=1\n' "$DEV_IP" "$NDEV" >>$N/run/softroce/env.sh
if [ -n "$HOST" ]; then
  printf 'export SOFTROCE_HOST=%s SOFTROCE_PEER_IP=%s SOFTROCE_SHARED=/run/softroce/shared\n' "$HOST" "$PEER_IP" >>$N/run/softroce/env.sh
  t0=$(cut -d. -f1 /proc/uptime)
  until ping -c1 -W1 "$PEER_IP" >/dev/null 2>&1; do   # wait (60 s at most) for the other guest
    [ $(($(cut -d. -f1 /proc/uptime) - t0)) -lt 60 ] || { say "peer $PEER_IP does not answer"; break; }
    sleep 0.2
  done
  say "PEER $(cut -d' ' -f1 /proc/uptime)"
fi
stty -F /dev/ttyS1 raw -echo 2>/dev/null
say "READY $(cut -d' ' -f1 /proc/uptime)"
echo 125 >$N/run/softroce/rc
chroot $N /bin/bash -c '. /run/softroce/env.sh; cd "$(cat /run/softroce/cwd)" || exit 125; /bin/bash /run/softroce/cmd.sh </dev/null; echo $? >/run/softroce/rc' 2>&1 </dev/null | cat >/dev/ttyS1
rc=$(cat $N/run/softroce/rc)
say "DONE rc=$rc $(cut -d' ' -f1 /proc/uptime)"
echo "$rc" >/ctl/rc
sync
umount "$N$CWD" 2>/dev/null; umount /ctl
poweroff -f
INIT
  chmod +x "$R/init"
  ( cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 ) >"$INITRD.tmp" || fail "cannot build the initramfs"
  mv "$INITRD.tmp" "$INITRD"; echo "$INIT_VERSION" >"$INITRD.ver"
  rm -rf "$R"
fi
flock -u 9

# ---- 4. per-run control directories --------------------------------------------------------------
mkdir -p "$D/runs"
RUN=$(mktemp -d "$D/runs/run.XXXXXX")
QPIDS=()
cleanup() {
  local p
  for p in "${QPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# The caller's exported environment, minus what must not leak into the guest.
ENV_SH=$(export -p | grep -v -E '^declare -x (PWD|OLDPWD|SHLVL|_|TERM|TMPDIR|DISPLAY|XDG_RUNTIME_DIR|SSH_[A-Z_]*|SOFTROCE_[A-Z_]*)(=|$)' || true)
ctl_dir() {   # ctl_dir DIR CMD: what the guest's init reads from its "ctl" share
  mkdir -p "$1"
  printf '%s\n' "$2" >"$1/cmd.sh"
  printf '%s\n' "$ENV_SH" >"$1/env.sh"
  pwd -P >"$1/cwd"
  readlink -f "$MODROOT" >"$1/modroot"
}
QEMU=(timeout -k 10 "$TMO" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp "$SMP" -m "$MEM"
  -machine q35 -nodefaults -no-user-config -display none -no-reboot
  -kernel "$VMLINUX" -initrd "$INITRD"
  -append "console=ttyS0 loglevel=4 panic=-1 oops=panic mitigations=off"
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
  -virtfs "local,path=$(pwd -P),mount_tag=cwd,security_model=none,multidevs=remap")
guest_args() {   # guest_args DIR: kernel log to DIR/console.log, the command's output to stdout
  GA=(-serial "file:$1/console.log" -chardev stdio,id=out,signal=off -serial chardev:out
      -virtfs "local,path=$1,mount_tag=ctl,security_model=none")
}
ready() { grep -a -q 'softroce-init: READY' "$1/console.log" 2>/dev/null; }
timings() { grep -a -o -E 'softroce-init: (READY|PEER|DONE).*' "$1/console.log" 2>/dev/null | cut -d' ' -f2- | tr '\n' ' '; }

# ---- 5a. one guest ------------------------------------------------------------------------------
if [ "$MODE" = one ]; then
  ctl_dir "$RUN" "$1"
  guest_args "$RUN"
  log "booting one guest (smp $SMP, ${MEM} MiB, kernel $KVER)"
  T1=$(date +%s.%N)
  set +e
  "${QEMU[@]}" -nic none "${GA[@]}" </dev/null 2>"$RUN/qemu.err" &
  QPIDS=($!)
  wait "${QPIDS[0]}"; qrc=$?
  QPIDS=()
  set -e
  T2=$(date +%s.%N)
  cp "$RUN/console.log" "$D/last-console.log" 2>/dev/null || true
  grep -v -e '^$' -e 'terminating on signal' "$RUN/qemu.err" >&2 || true
  log "$(awk -v a="$T0" -v b="$T1" -v c="$T2" 'BEGIN {printf "setup %.1f s, guest %.1f s", b - a, c - b}'); guest uptime at $(timings "$RUN")"
  if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then echo "$prog: timeout: the guest ran past SOFTROCE_TIMEOUT=${TMO}s" >&2; exit 124; fi
  if [ -f "$RUN/rc" ]; then exit "$(cat "$RUN/rc")"; fi
  echo "$prog: the guest reported no exit status (qemu exit $qrc); end of its console log ($D/last-console.log):" >&2
  tail -n 30 "$RUN/console.log" >&2 || true
  exit 125
fi

# ---- 5b. two guests -----------------------------------------------------------------------------
# The wire: qemu's UDP socket netdev, one 127.0.0.1 port per end.
read -r PORT_A PORT_B < <(python3 -c 'import socket
s = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for i in (0, 1)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])') || fail "cannot find two free UDP ports on 127.0.0.1"
ctl_dir "$RUN/a" "$1"; echo "a 10.99.1.1 10.99.1.2" >"$RUN/a/host"
ctl_dir "$RUN/b" "$2"; echo "b 10.99.1.2 10.99.1.1" >"$RUN/b/host"
mkdir "$RUN/shared"
start_guest() {   # start_guest NAME MAC LOCAL_PORT PEER_PORT
  local g=$RUN/$1
  guest_args "$g"; mkfifo "$g/out"
  sed -u "s/^/[$1] /" <"$g/out" &
  "${QEMU[@]}" "${GA[@]}" -virtfs "local,path=$RUN/shared,mount_tag=shared,security_model=none" \
    -netdev "socket,id=n0,udp=127.0.0.1:$4,localaddr=127.0.0.1:$3" \
    -device "virtio-net-pci,netdev=n0,mac=$2" </dev/null >"$g/out" 2>"$g/qemu.err" &
  QPIDS+=($!)
}
log "booting two guests (smp $SMP and ${MEM} MiB each, kernel $KVER, wire 127.0.0.1:$PORT_A <-> $PORT_B)"
T1=$(date +%s.%N); S1=$SECONDS
set +e
start_guest a 52:54:00:99:01:01 "$PORT_A" "$PORT_B"
start_guest b 52:54:00:99:01:02 "$PORT_B" "$PORT_A"
QA=${QPIDS[0]}; QB=${QPIDS[1]}
astop=0
while kill -0 "$QA" 2>/dev/null; do
  # b ended before its command started: a would wait for its peer in vain
  if ! kill -0 "$QB" 2>/dev/null && ! ready "$RUN/b"; then kill "$QA"; astop=1; fi
  sleep 0.2
done
wait "$QA"; qa=$?
t=$((SECONDS + GRACE))
while kill -0 "$QB" 2>/dev/null && [ $SECONDS -lt $t ]; do sleep 0.2; done
bstop=0; if kill -0 "$QB" 2>/dev/null; then kill "$QB"; bstop=1; fi
wait "$QB"; qb=$?
QPIDS=()
wait   # the output prefixers
set -e
T2=$(date +%s.%N)
gstat() {   # gstat NAME QEMU_RC STOPPED: the guest's command's exit status, or what became of it
  local g=$RUN/$1
  if { [ "$2" = 124 ] || [ "$2" = 137 ]; } && [ $((SECONDS - S1)) -ge "$TMO" ]; then echo timeout
  elif [ -f "$g/rc" ]; then cat "$g/rc"
  elif [ "$3" = 1 ]; then echo stopped
  elif ! ready "$g"; then echo boot-failed
  elif [ "$2" != 0 ] || grep -a -q 'Kernel panic' "$g/console.log"; then echo crashed
  else echo powered-off
  fi
}
sa=$(gstat a "$qa" "$astop"); sb=$(gstat b "$qb" "$bstop")
for h in a b; do
  cp "$RUN/$h/console.log" "$D/last-console-$h.log" 2>/dev/null || true
  grep -v -e '^$' -e 'terminating on signal' "$RUN/$h/qemu.err" | sed "s/^/[$h] /" >&2 || true
done
log "$(awk -v a="$T0" -v b="$T1" -v c="$T2" 'BEGIN {printf "setup %.1f s, guests %.1f s", b - a, c - b}'); uptime of a at $(timings "$RUN/a")b at $(timings "$RUN/b")"
case "$sa" in [0-9]*) rc=$sa ;; timeout) rc=124 ;; *) rc=125 ;; esac
if [ "$rc" = 0 ]; then
  case "$sb" in 0|stopped|powered-off) ;; [0-9]*) rc=$sb ;; timeout) rc=124 ;; *) rc=125 ;; esac
fi
word() {
  case "$1" in
    [0-9]*) echo "exit $1" ;;
    timeout) echo "timeout after ${TMO}s" ;;
    stopped) if [ "$2" = a ]; then echo "powered off, as b's guest failed"; else echo "still running ${GRACE}s after a ended, powered off"; fi ;;
    boot-failed) echo "the guest failed before its command started" ;;
    crashed) echo "the guest crashed" ;;
    powered-off) echo "powered off without an exit status" ;;
  esac
}
echo "$prog two hosts: a: $(word "$sa" a); b: $(word "$sb" b); exit status $rc" >&2
for h in a b; do
  st=$sa; [ "$h" = a ] || st=$sb
  case "$st" in boot-failed|crashed)
    echo "$prog: end of guest $h's console log ($D/last-console-$h.log):" >&2
    tail -n 30 "$RUN/$h/console.log" >&2 || true ;;
  esac
done
exit "$rc"
