#!/bin/bash
# Build the two images runc's tests/integration/get-images.sh would download, from this
# machine's own Debian packages, in the format helpers.bash expects (a rootfs tarball that
# `tar --exclude './dev/*' -C rootfs -xf IMAGE` unpacks), under the names get-images.sh
# looks for first (it downloads only when the file is missing):
#   TESTDATA/busybox-<GOARCH>.tar.xz   Debian's busybox-static, one symlink per applet, and
#                                      the /etc/passwd, /etc/group of docker's busybox image
#   TESTDATA/debian-<GOARCH>.tar.xz    a minimal merged-/usr rootfs made of this host's
#                                      binaries (sh, bash, coreutils, grep, ldconfig, ...)
#                                      and their libraries: enough for hooks.bats, the only
#                                      test that uses it (sh, ldconfig, grep in the container)
# usage: make_images.sh TESTDATA_DIR
set -euo pipefail
testdata=${1:?usage: make_images.sh TESTDATA_DIR}
arch=$(go env GOARCH 2>/dev/null || dpkg --print-architecture)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

busybox_image="$testdata/busybox-$arch.tar.xz"
if [ ! -e "$busybox_image" ]; then
	bb=/bin/busybox
	[ -x "$bb" ] || bb=$(command -v busybox)
	file -L "$bb" | grep -q 'statically linked' || { echo "$bb is not static: apt-get install busybox-static" >&2; exit 1; }
	r="$tmp/busybox"
	# no proc/ nor sys/, as in docker's busybox image: mask.bats makes them symlinks
	mkdir -p "$r"/{bin,dev,etc,home,root,tmp,usr/sbin,var/spool/mail,var/www}
	chmod 1777 "$r/tmp"
	chmod 0700 "$r/root"
	cp "$bb" "$r/bin/busybox"
	for applet in $("$bb" --list); do
		[ "$applet" = busybox ] || ln -sf busybox "$r/bin/$applet"
	done
	cat >"$r/etc/passwd" <<-'P'
		root:x:0:0:root:/root:/bin/sh
		daemon:x:1:1:daemon:/usr/sbin:/bin/false
		bin:x:2:2:bin:/bin:/bin/false
		sys:x:3:3:sys:/dev:/bin/false
		sync:x:4:100:sync:/bin:/bin/sync
		mail:x:8:8:mail:/var/spool/mail:/bin/false
		www-data:x:33:33:www-data:/var/www:/bin/false
		operator:x:37:37:Operator:/var:/bin/false
		nobody:x:65534:65534:nobody:/home:/bin/false
	P
	cat >"$r/etc/group" <<-'G'
		root:x:0:
		daemon:x:1:
		bin:x:2:
		sys:x:3:
		adm:x:4:
		tty:x:5:
		disk:x:6:
		lp:x:7:
		mail:x:8:
		kmem:x:9:
		wheel:x:10:root
		cdrom:x:11:
		dialout:x:18:
		floppy:x:19:
		video:x:28:
		audio:x:29:
		tape:x:32:
		www-data:x:33:
		operator:x:37:
		utmp:x:43:
		plugdev:x:46:
		staff:x:50:
		lock:x:54:
		netdev:x:82:
		users:x:100:
		nogroup:x:65534:
	G
	tar --numeric-owner --owner=0 --group=0 -C "$r" -cJf "$busybox_image.tmp" .
	mv "$busybox_image.tmp" "$busybox_image"
	echo "built $busybox_image"
fi

debian_image="$testdata/debian-$arch.tar.xz"
if [ ! -e "$debian_image" ]; then
	r="$tmp/debian"
	mkdir -p "$r"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc/ld.so.conf.d,dev,proc,sys,tmp,root,run,var}
	chmod 1777 "$r/tmp"
	for d in bin sbin lib lib64; do ln -s "usr/$d" "$r/$d"; done
	copy() { # copy a host file to the same path under usr/, following the merged-/usr layout
		local src=$1 real dest
		real=$(readlink -f "$src")
		dest="$r/usr${src#/usr}"
		case $src in /usr/*) ;; *) dest="$r/usr$src" ;; esac
		mkdir -p "$(dirname "$dest")"
		[ -e "$dest" ] || cp -L "$real" "$dest"
	}
	for b in sh dash bash cat ls grep echo true false env id sleep mkdir rm touch mount umount \
		head tail wc sed readlink stat ps; do
		p=$(type -P "$b") || continue
		copy "$p"
		for lib in $(ldd "$(readlink -f "$p")" 2>/dev/null | grep -o '/[^ ]*'); do copy "$lib"; done
	done
	copy /sbin/ldconfig
	cp /etc/ld.so.conf "$r/etc/"
	cp /etc/ld.so.conf.d/libc.conf /etc/ld.so.conf.d/x86_64-linux-gnu.conf "$r/etc/ld.so.conf.d/" 2>/dev/null || true
	printf 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$r/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
	cp /etc/os-release "$r/etc/" 2>/dev/null || true
	tar --numeric-owner --owner=0 --group=0 -C "$r" -cJf "$debian_image.tmp" .
	mv "$debian_image.tmp" "$debian_image"
	echo "built $debian_image"
fi
