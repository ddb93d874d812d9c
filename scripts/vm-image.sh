#!/usr/bin/env bash
# Builds (or finds in its cache) the VM that scripts/test-vm.sh boots: Debian 12 (bookworm) with
# systemd as PID 1, only cgroup v2 (the kernel command line test-vm.sh gives), containerd, runc,
# busybox-static, tini, an NFS server and an ssh server that lets in the key made here, plus Debian's kernel and a
# busybox initramfs that loads its virtio and ext4 modules. Recipe and pitfalls:
# ../shared/notes/runtime.md ("A real Debian VM on these machines"). As root.
#   scripts/vm-image.sh [CACHE]     (default CACHE: $BERTH_VM_CACHE or /var/cache/berth-vm)
# Prints the image's directory on its last line: vmlinuz, initrd.img, root.img (raw ext4; boot it
# with -snapshot so it stays pristine), id_ed25519 (root's ssh key), inputs (what it was built
# from). The directory is named after a hash of this script, the Debian mirror and the date of
# bookworm's Release file (which changes with each point release), so a second run finds it and
# builds nothing, and a change to any of them builds a new one; the older ones are then removed
# (a tier still running from one keeps its open files and its own copy of the ssh key). Builds are serialised by a lock in CACHE;
# when the mirror cannot be read, the newest cached image is used.
set -euo pipefail
me=vm-image.sh
cache=${1:-${BERTH_VM_CACHE:-/var/cache/berth-vm}}
[ "$(id -u)" = 0 ] || { echo "$me: run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
need=()
for p in qemu-system-x86 debootstrap debian-archive-keyring cpio kmod openssh-client e2fsprogs curl util-linux; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "$me: installing ${need[*]}" >&2
  timeout 600 apt-get update -qq
  timeout 900 apt-get install -y -qq "${need[@]}" >/dev/null
fi

mirror=$(grep -rhoE 'https?://[^ ]*debian.org/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p "$cache"
# One build at a time; a run waiting here then finds the image the other one built.
exec 9>"$cache/.lock"
flock -w 1800 9 || { echo "$me: $cache/.lock is held by another build for 30 minutes" >&2; exit 1; }
# What bookworm's packages are: its Release file's date changes with each point release (and
# only then does bookworm main, the kernel included, change).
release=$(timeout 60 curl -fsS "${mirror%/}/dists/bookworm/InRelease" 2>/dev/null | sed -n 's/^Date: //p' | head -1 || true)
if [ -z "$release" ]; then
  newest=$(ls -td "$cache"/bookworm-*/ 2>/dev/null | head -1 || true)
  if [ -n "$newest" ] && [ -f "$newest/ready" ]; then
    echo "$me: cannot read bookworm's Release date from $mirror; using the cached image ${newest%/}" >&2
    echo "${newest%/}"
    exit 0
  fi
  echo "$me: cannot read ${mirror%/}/dists/bookworm/InRelease, and no image is cached" >&2
  exit 1
fi
key=$( { cat "$0"; echo "$mirror $release"; } | sha256sum | cut -c1-16)
dir=$cache/bookworm-$key
if [ -f "$dir/ready" ]; then
  echo "$me: cached image $dir" >&2
  echo "$dir"
  exit 0
fi
# Left by a build that was killed (none runs: the lock is ours).
rm -rf "$cache"/build.* "$cache"/new.*
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "$me: building the bookworm image ($release) from $mirror (about 2 minutes)" >&2
# minbase + kmod (overlay must load, or containerd cannot mount snapshots), udev, systemd as init,
# containerd + runc, busybox-static (the tasks' image and the initramfs), and an ssh server for
# test-vm.sh to drive the guest through a forwarded loopback port; an NFS server (and the client,
# nfs-common) for the agent's NFS volumes to mount an export of the guest itself.
if ! timeout 1200 debootstrap --variant=minbase \
  --include=systemd-sysv,udev,kmod,procps,containerd,runc,busybox-static,tini,openssh-server,nftables,iproute2,nfs-kernel-server,nfs-common \
  bookworm ROOT "$mirror" >debootstrap.log 2>&1; then
  tail -20 debootstrap.log >&2
  echo "$me: debootstrap failed (log above)" >&2
  exit 1
fi
# The kernel linux-image-amd64 points at in bookworm itself (not this host's release), fetched
# with the new root's own apt; its modules go into the root, its vmlinuz beside it.
cp /etc/resolv.conf ROOT/etc/resolv.conf
if ! timeout 900 chroot ROOT sh -c 'apt-get update -qq && kpkg=$(apt-cache depends linux-image-amd64 | awk "/Depends: linux-image-[0-9]/ { print \$2; exit }") && [ -n "$kpkg" ] && cd /tmp && apt-get download -qq "$kpkg"' >kernel.log 2>&1; then
  cat kernel.log >&2
  echo "$me: fetching bookworm's kernel failed (log above)" >&2
  exit 1
fi
deb=$(ls ROOT/tmp/linux-image-*.deb)
dpkg-deb -x "$deb" kernel
kpkg_version=$(dpkg-deb -f "$deb" Package Version | awk '{ printf "%s ", $2 }')
rm -f ROOT/tmp/*.deb ROOT/etc/resolv.conf
rm -rf ROOT/var/lib/apt/lists/* ROOT/var/cache/apt/*.bin
kver=$(ls kernel/lib/modules)
cp -a kernel/lib/modules ROOT/lib/
depmod -b ROOT "$kver"
# Without it systemd makes a transient id at each boot; nothing here depends on it.
chroot ROOT systemd-machine-id-setup >/dev/null 2>&1 || true
chroot ROOT passwd -d root >/dev/null
echo berth-vm > ROOT/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 berth-vm\n::1 localhost\n' > ROOT/etc/hosts
# QEMU's user network: the guest is 10.0.2.15, the gateway 10.0.2.2 (restrict=on: it reaches
# nothing beyond, and only the forwarded ports reach it). Static, so boot does not wait on DHCP.
mkdir -p ROOT/etc/systemd/network
cat > ROOT/etc/systemd/network/10-qemu.network <<'EOF'
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
EOF
chroot ROOT systemctl enable systemd-networkd.service >/dev/null 2>&1
# The scenarios enable containerd themselves, as a user would.
chroot ROOT systemctl disable containerd.service >/dev/null 2>&1
# A persistent journal: the units' logs survive the reboot scenario, for a failure's diagnosis.
mkdir -p ROOT/var/log/journal
ssh-keygen -q -t ed25519 -N '' -C berth-test-vm -f id_ed25519
install -d -m 0700 ROOT/root/.ssh
install -m 0600 id_ed25519.pub ROOT/root/.ssh/authorized_keys
cat > ROOT/etc/ssh/sshd_config.d/berth-test.conf <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
EOF
cp "kernel/boot/vmlinuz-$kver" vmlinuz

# A busybox initramfs: Debian's kernel has virtio and ext4 as modules.
mkdir -p initrd/bin initrd/mods initrd/dev initrd/proc initrd/sys initrd/newroot
cp ROOT/bin/busybox initrd/bin/
mods="crc16 mbcache jbd2 crc32c_generic crc32c-intel ext4 virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk"
for m in $mods; do
  f=$(find "kernel/lib/modules/$kver" -name "$m.ko*" | head -1)
  [ -n "$f" ] && cp "$f" initrd/mods/
done
cat > initrd/init <<EOF
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in $mods; do /bin/busybox insmod /mods/\$m.ko* 2>/dev/null; done
# The disk appears asynchronously after virtio_blk loads.
for i in \$(/bin/busybox seq 100); do [ -b /dev/vda ] && break; /bin/busybox usleep 100000; done
/bin/busybox mount -t ext4 -o rw /dev/vda /newroot || exec /bin/busybox sh
/bin/busybox umount /proc /sys
/bin/busybox mount --move /dev /newroot/dev
exec /bin/busybox switch_root /newroot /sbin/init
EOF
chmod +x initrd/init
(cd initrd && find . | cpio -o -H newc 2>/dev/null | gzip > ../initrd.img)
truncate -s 4G root.img
mkfs.ext4 -q -F -d ROOT root.img

# Into place atomically; older images of this cache go.
out=$(mktemp -d "$cache/new.XXXXXX")
mv vmlinuz initrd.img root.img id_ed25519 id_ed25519.pub "$out/"
echo "bookworm $release from $mirror; kernel $kpkg_version" > "$out/inputs"
touch "$out/ready"
for old in "$cache"/bookworm-*; do
  [ -e "$old" ] && [ "$old" != "$dir" ] && rm -rf "$old"
done
rm -rf "$dir"
mv "$out" "$dir"
echo "$dir"
