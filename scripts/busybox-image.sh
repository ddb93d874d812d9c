#!/usr/bin/env bash
# Builds an OCI image-layout archive around Debian's busybox-static, for hosts with no registry.
#   scripts/busybox-image.sh OUT.tar [IMAGE-NAME]
# The image has every busybox applet on PATH and /www/index.html for `httpd -f -h /www`, and a
# small /usr/bin/curl (busybox has wget, not curl) so the ECS guide's health check
# `curl -f http://localhost/ || exit 1` runs as written: it takes -f, -s, -S, -L and -o FILE
# and refuses any other option.
#   BERTH_IMAGE_CMD   the image's Cmd as a JSON array (default ["sh"]); the demo's web-app image
#                     serves /www on port 80 as nginx would: ["httpd","-f","-p","80","-h","/www"]
set -euo pipefail
out=${1:?usage: busybox-image.sh OUT.tar [IMAGE-NAME]}
name=${2:-localhost/busybox:latest}
bb=$(command -v busybox || true)
[ -x /bin/busybox ] && bb=/bin/busybox
if [ -z "$bb" ] || ! "$bb" --list >/dev/null 2>&1 || ldd "$bb" >/dev/null 2>&1; then
  echo "busybox-image.sh: a static busybox is needed (apt-get install busybox-static)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/www" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/run"
chmod 1777 "$root/tmp"
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n' > "$root/etc/passwd"
# app is also in staff: the supplementary group a named user gets (container option user).
printf 'root:x:0:\nnogroup:x:65534:\napp:x:1000:\nstaff:x:50:app\n' > "$root/etc/group"
printf '<html><body><h1>Hello from Berth</h1></body></html>\n' > "$root/www/index.html"
mkdir -p "$root/usr/bin"
cat > "$root/usr/bin/curl" <<'CURL'
#!/bin/sh
# curl for a busybox image: the options health checks use, over busybox wget (which fails on
# an HTTP error status, as curl -f does). Any other option is refused.
out=- url=
while [ $# -gt 0 ]; do
  case $1 in
    -o|--output) shift; out=$1 ;;
    --fail|--silent|--show-error|--location) ;;
    -[fsSL]*) rest=${1#-}; [ -z "$(printf %s "$rest" | tr -d fsSL)" ] || { echo "curl: option $1 is not supported by this image's curl" >&2; exit 2; } ;;
    -*) echo "curl: option $1 is not supported by this image's curl" >&2; exit 2 ;;
    *) url=$1 ;;
  esac
  shift
done
[ -n "$url" ] || { echo "curl: no URL specified" >&2; exit 2; }
exec wget -q -O "$out" "$url"
CURL
chmod 755 "$root/usr/bin/curl"
layout=$work/layout
mkdir -p "$layout/blobs/sha256"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$root" -cf "$work/layer.tar" .
put() { # put FILE -> prints "digest size", stores the blob
  local d s
  d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
  cp "$1" "$layout/blobs/sha256/$d"
  echo "$d $s"
}
read -r layer_d layer_s < <(put "$work/layer.tar")
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"berth busybox-image.sh"}]}' \
  "$arch" "${BERTH_IMAGE_CMD:-[\"sh\"]}" "$layer_d" > "$work/config.json"
read -r cfg_d cfg_s < <(put "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
  "$cfg_d" "$cfg_s" "$layer_d" "$layer_s" > "$work/manifest.json"
read -r man_d man_s < <(put "$work/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$man_d" "$man_s" "$name" "$name" > "$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$layout" -cf "$out" .
echo "$out: $name"
