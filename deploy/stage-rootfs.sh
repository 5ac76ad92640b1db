#!/bin/sh
# Stages the root filesystem of a distroless image of one `ensemble` binary
# built on this machine: the binary, the shared libraries it loads (this
# machine's, so they match it), a non-root user and its directories.
# deploy/Containerfile.prebuilt makes it an image without pulling anything:
#
#   cargo build --release -p ensemble-runner
#   deploy/stage-rootfs.sh target/release/ensemble /tmp/ensemble-rootfs
#   buildah bud -f deploy/Containerfile.prebuilt -t ensemble:0.1.0 /tmp/ensemble-rootfs
#   (or podman build / docker build with the same arguments)
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 BINARY ROOTFS_DIR" >&2
  exit 2
fi
bin=$1
root=$2
rm -rf "$root"
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$root/var/lib/ensemble/data" "$root/var/lib/ensemble/cache"
chmod 1777 "$root/tmp"
cp "$bin" "$root/usr/local/bin/ensemble"
# Debug info is most of a debug build's size; the image does without it.
strip --strip-debug "$root/usr/local/bin/ensemble" 2>/dev/null || true
# The libraries the dynamic loader resolves for it, and the loader itself.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nensemble:x:10001:10001:ensemble:/var/lib/ensemble:/sbin/nologin\n' \
  > "$root/etc/passwd"
printf 'root:x:0:\nensemble:x:10001:\n' > "$root/etc/group"
