#!/usr/bin/env bash
# Runs integration tests on a pure cgroup v2 host: a Debian 12 VM under QEMU (software
# emulation, no KVM needed) with systemd, containerd and runc, booted with the unified
# hierarchy only. The build machines are cgroup v1 "hybrid" hosts, so this is how the v2
# branches of the cgroup code are proven. Run as root after `cargo build --workspace
# --all-targets`; takes about 5 minutes (1 to build the VM, the rest to boot and test).
#
#   scripts/cgroup-v2-vm.sh [WORKDIR]   (default WORKDIR: /tmp/berth-v2-vm, reused if present)
#
# Runs ecs::cgroup_files_show_shares_quota_and_limits, ecs::essential_exit_stops_the_sibling_and_oom_is_reported
# (OOM read from memory.events) and every test of tests/tests/security.rs
# inside the VM and exits with their status.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=${1:-/tmp/berth-v2-vm}
[ "$(id -u)" = 0 ] || { echo "cgroup-v2-vm.sh: run as root" >&2; exit 1; }
newest() { ls -t "$repo"/target/debug/deps/"$1"-* 2>/dev/null | grep -v '\.d$' | head -1; }
ecs=$(newest ecs); security=$(newest security)
for f in "$repo/target/debug/berth-agent" "$repo/target/debug/berth-controller" "$repo/target/debug/berth" "$ecs" "$security"; do
  [ -x "$f" ] || { echo "cgroup-v2-vm.sh: missing ${f:-a test binary}: run cargo build --workspace --all-targets" >&2; exit 1; }
done
export DEBIAN_FRONTEND=noninteractive
need=()
for p in qemu-system-x86 debootstrap cpio kmod; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq; apt-get install -y -qq "${need[@]}" >/dev/null; fi
mkdir -p "$work"
cd "$work"
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
kver=${kpkg#linux-image-}
if [ ! -f "kernel/boot/vmlinuz-$kver" ]; then
  rm -rf kernel ./*.deb
  apt-get download "$kpkg" >/dev/null 2>&1
  dpkg-deb -x ./"$kpkg"_*.deb kernel
fi
mirror=$(grep -rhoE 'https?://[^ ]*debian.org/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
if [ ! -x ROOT/usr/bin/containerd ]; then
  rm -rf ROOT
  debootstrap --variant=minbase \
    --include=systemd-sysv,udev,kmod,procps,containerd,runc,busybox-static \
    bookworm ROOT "$mirror" >debootstrap.log 2>&1
  cp -a "kernel/lib/modules" ROOT/lib/
  depmod -b ROOT "$kver"
  chroot ROOT systemd-machine-id-setup >/dev/null 2>&1 || true
  chroot ROOT passwd -d root >/dev/null
fi
# The test binaries find the berth binaries beside them and the image script at the path the
# workspace had when they were built: lay them out the same way inside the VM.
w="ROOT$repo"
rm -rf "$w"
mkdir -p "$w/target/debug/deps" "$w/scripts"
cp "$repo"/target/debug/{berth-agent,berth-controller,berth} "$w/target/debug/"
cp "$ecs" "$w/target/debug/deps/ecs"
cp "$security" "$w/target/debug/deps/security"
cp "$repo/scripts/busybox-image.sh" "$w/scripts/"
cat >ROOT/etc/systemd/system/berth-v2.service <<EOF
[Unit]
Description=Berth tests on cgroup v2
After=multi-user.target

[Service]
Type=oneshot
Environment=CI=true
WorkingDirectory=$repo
ExecStart=/bin/sh -c 'echo "BERTH-V2 controllers: \$\$(cat /sys/fs/cgroup/cgroup.controllers)"; s=0; $repo/target/debug/deps/ecs --test-threads=1 cgroup_files_show_shares_quota_and_limits essential_exit_stops_the_sibling_and_oom_is_reported >/root/tests.log 2>&1 || s=1; $repo/target/debug/deps/security --test-threads=1 >>/root/tests.log 2>&1 || s=1; grep -E "^test |panicked|left:|right:|test result" -A2 /root/tests.log; echo "BERTH-V2-STATUS \$\$s"'
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
ExecStartPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
EOF
chroot ROOT systemctl enable berth-v2.service >/dev/null 2>&1
# A busybox initramfs: Debian's kernel has virtio and ext4 as modules.
rm -rf initrd && mkdir -p initrd/bin initrd/mods initrd/dev initrd/proc initrd/sys initrd/newroot
cp /bin/busybox initrd/bin/
mods="crc16 mbcache jbd2 crc32c_generic crc32c-intel ext4 virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk"
for m in $mods; do
  f=$(find "kernel/lib/modules/$kver" -name "$m.ko*" | head -1)
  [ -n "$f" ] && cp "$f" initrd/mods/
done
cat >initrd/init <<EOF
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in $mods; do /bin/busybox insmod /mods/\$m.ko* 2>/dev/null; done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; /bin/busybox sleep 0.5; done
/bin/busybox mount -t ext4 -o rw /dev/vda /newroot || exec /bin/busybox sh
/bin/busybox umount /proc /sys
/bin/busybox mount --move /dev /newroot/dev
exec /bin/busybox switch_root /newroot /sbin/init
EOF
chmod +x initrd/init
(cd initrd && find . | cpio -o -H newc 2>/dev/null | gzip >../initrd.img)
rm -f root.img && truncate -s 3G root.img && mkfs.ext4 -q -F -d ROOT root.img
echo "booting the VM (output in $work/vm.log)"
timeout 1500 qemu-system-x86_64 -m 2048 -smp 2 -nographic -no-reboot -snapshot \
  -kernel "kernel/boot/vmlinuz-$kver" -initrd initrd.img \
  -drive file=root.img,format=raw,if=virtio \
  -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0 \
  -append 'console=ttyS0 rw quiet panic=-1 systemd.unified_cgroup_hierarchy=1' \
  >vm.log 2>&1 </dev/null || true
tr -d '\033' <vm.log | grep -E '^(BERTH-V2|test |thread|  left|  right)|test result' || true
grep -q 'BERTH-V2-STATUS 0' vm.log
