#!/bin/bash
# Run runc v1.1.5's own integration tests (tests/integration/*.bats) against the real runc
# and against shimledger (through runc-as-shimledger, which translates runc's global flags
# only), then compare. Fetch-free: give it a runc v1.1.5 source tree (with vendor/).
#
#   sudo scripts/runc_suite/run.sh RUNC_SRC [FILE.bats...]
#   RUNC_SRC=/path/to/runc-1.1.5 sudo scripts/runc_suite/run.sh [FILE.bats...]
#
# Environment (all optional):
#   WORK=/tmp/runc-suite          copy of the suite, built helpers, images, temp dirs
#   RESULTS=$WORK/results         TAP output per target and file, summary.{md,json}
#   TARGETS="runc shimledger"     which runtimes to run (a target's results are replaced)
#   REAL_RUNC=/usr/sbin/runc      the baseline runtime
#   SHIMLEDGER=<repo>/.venv/bin/shimledger       (read by runc-as-shimledger)
#   SHIMLEDGER_REV=HEAD           the shimledger commit measured: it is exported (git archive,
#                                 read-only) to $WORK/shimledger-<sha> and put first on
#                                 PYTHONPATH, so the venv's shimledger runs that commit's code
#                                 for the whole run, whatever happens to the work tree
#                                 meanwhile; "live": the work tree as it is, as it changes
#   FILE_TIMEOUT=1500             seconds per .bats file (the whole file is then cut short)
#   BATS_TEST_TIMEOUT=180         seconds per test (bats >= 1.7 honours it; not for files
#                                 with a bare `wait`, which would wait for its timer)
#   ALL_FILES=0                   1: run shimledger on every file, not only on the files
#                                 with at least one test that passes with the real runc
#   SKIP_INSTALL=0                1: do not apt-get install anything
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -gt 0 ] && [ -d "$1" ]; then RUNC_SRC=$1; shift; fi
: "${RUNC_SRC:?usage: run.sh RUNC_SRC [FILE.bats...] (a runc v1.1.5 source tree, or set RUNC_SRC)}"
RUNC_SRC=$(readlink -f "$RUNC_SRC")
WORK=${WORK:-/tmp/runc-suite}
RESULTS=${RESULTS:-$WORK/results}
TARGETS=${TARGETS:-runc shimledger}
REAL_RUNC=${REAL_RUNC:-/usr/sbin/runc}
export SHIMLEDGER=${SHIMLEDGER:-$(cd "$here/../.." && pwd)/.venv/bin/shimledger}
FILE_TIMEOUT=${FILE_TIMEOUT:-1500}
BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-180}
ALL_FILES=${ALL_FILES:-0}
WRAPPER=$here/runc-as-shimledger

[ "$(id -u)" -eq 0 ] || { echo "run.sh: runc's tests run as root here (the rootless ones need a set-up this does not make)" >&2; exit 1; }
[ -f "$RUNC_SRC/tests/integration/helpers.bash" ] || { echo "run.sh: $RUNC_SRC has no tests/integration/helpers.bash" >&2; exit 1; }
[ -d "$RUNC_SRC/vendor" ] || { echo "run.sh: $RUNC_SRC has no vendor/ (needed to build recvtty offline)" >&2; exit 1; }
version=$(cat "$RUNC_SRC/VERSION" 2>/dev/null || echo unknown)
[ "$version" = 1.1.5 ] || echo "run.sh: warning: $RUNC_SRC/VERSION says $version, not 1.1.5" >&2

# 1. What the suite and its helpers need, from Debian's packages.
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
	need=()
	for p in bats jq golang-go gcc libc6-dev libseccomp-dev pkg-config gawk busybox-static runc \
		containerd util-linux xz-utils iproute2 procps; do
		dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
	done
	if [ ${#need[@]} -gt 0 ]; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
	fi
fi
[ -x "$SHIMLEDGER" ] || { echo "run.sh: $SHIMLEDGER is missing (make demo builds the venv)" >&2; exit 1; }

# The shimledger code measured: one commit for the whole run (see SHIMLEDGER_REV).
repo=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || true)
SHIMLEDGER_REV=${SHIMLEDGER_REV:-HEAD}
shimledger_code="work tree $repo (live)"
if [ "$SHIMLEDGER_REV" != live ] && [[ " $TARGETS " == *" shimledger "* ]]; then
	[ -n "$repo" ] || { echo "run.sh: $here is not in a git tree: set SHIMLEDGER_REV=live" >&2; exit 1; }
	sha=$(git -C "$repo" rev-parse --verify "$SHIMLEDGER_REV^{commit}")
	snap=$WORK/shimledger-$sha
	if [ ! -d "$snap" ]; then
		mkdir -p "$snap.tmp"
		git -C "$repo" archive "$sha" | tar -x -C "$snap.tmp"
		mv "$snap.tmp" "$snap"
	fi
	export PYTHONPATH=$snap${PYTHONPATH:+:$PYTHONPATH}
	shimledger_code="commit $sha (\"$(git -C "$repo" log -1 --format=%s "$sha" | cut -c1-60)...\"), exported to $snap, first on PYTHONPATH"
fi

# 2. A private copy of the source (the suite writes its images into testdata/), the helper
#    binaries helpers.bash expects beside it (contrib/cmd/{recvtty,sd-helper,seccompagent}),
#    and the images, built locally instead of downloaded.
src=$WORK/src
mkdir -p "$WORK"
if [ ! -f "$src/.copied-from" ] || [ "$(cat "$src/.copied-from")" != "$RUNC_SRC" ]; then
	rm -rf "$src"
	mkdir -p "$src"
	cp -a "$RUNC_SRC"/. "$src"/
	echo "$RUNC_SRC" >"$src/.copied-from"
fi
export GOFLAGS=-mod=vendor GOCACHE=$WORK/gocache GOPATH=$WORK/gopath GOTOOLCHAIN=local
(
	cd "$src"
	for c in recvtty sd-helper; do
		[ -x "contrib/cmd/$c/$c" ] || go build -o "contrib/cmd/$c/$c" "./contrib/cmd/$c"
	done
	[ -x contrib/cmd/seccompagent/seccompagent ] ||
		go build -tags seccomp -o contrib/cmd/seccompagent/seccompagent ./contrib/cmd/seccompagent
)
"$here/make_images.sh" "$src/tests/integration/testdata"

# 3. Run each target, one .bats file at a time, under a pty (runc's CI runs the suite under
#    `script` too: `runc run` of the default terminal:true config needs a controlling tty).
cd "$src/tests/integration"
if [ $# -gt 0 ]; then files=("$@"); else files=(*.bats); fi
mkdir -p "$RESULTS"

cleanup_leftovers() { # containers, mounts and temp dirs a file cut short by its timeout left
	local runtime=$1 tmp=$2 state ct
	for state in "$tmp"/bats-run-*/runc.*/state "$tmp"/bats-run-*/runc.*/alt/state; do
		[ -d "$state" ] || continue
		for ct in $("$runtime" --root "$state" list -q 2>/dev/null); do
			"$runtime" --root "$state" delete -f "$ct" >/dev/null 2>&1 || true
		done
	done
	grep -o " $tmp/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	rm -rf "${tmp:?}"/bats-run-* 2>/dev/null || true
	# The cgroups the tests make themselves (set_cgroups_path, update.bats' rt period test,
	# cgroups.bats' frozen cgroup) are removed by runc's delete when the container ran; when
	# it never ran they stay, and a later run's rt-period test then fails with EINVAL (the
	# leftover holds the rt budget). Thaw and remove them, deepest first (empty ones only).
	local c
	for c in /sys/fs/cgroup/runc-cgroups-integration-test /sys/fs/cgroup/*/runc-cgroups-integration-test; do
		[ -d "$c" ] || continue
		find "$c" -depth -type d | while read -r d; do
			[ -f "$d/freezer.state" ] && echo THAWED >"$d/freezer.state" 2>/dev/null
			[ -f "$d/cgroup.freeze" ] && echo 0 >"$d/cgroup.freeze" 2>/dev/null
			rmdir "$d" 2>/dev/null || true
		done
	done
	return 0
}

reap_leaks() { # a test that fails half-way can leave a helper (update.bats' recvtty) holding
	# bats' output pipe open, and bats then waits for it forever: once every planned test has
	# reported and bats is still there 20 s later, kill what still runs from the file's temp
	# dir (not bats itself, not the shims: cleanup_leftovers deletes their containers)
	local bats_pid=$1 tap=$2 tmp=$3 log=$4 done_for=0 plan n d cmd
	while kill -0 "$bats_pid" 2>/dev/null; do
		sleep 5
		plan=$(sed -n '1s/^1\.\.//p' "$tap" 2>/dev/null)
		n=$(grep -cE '^(ok|not ok) [0-9]+ ' "$tap" 2>/dev/null || true)
		if [ -n "$plan" ] && [ "${n:-0}" -ge "$plan" ]; then done_for=$((done_for + 5)); else done_for=0; fi
		[ "$done_for" -ge 20 ] || continue
		for d in /proc/[0-9]*; do
			cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
			case $cmd in *bats-core* | *containerd-shim*) continue ;; *"$tmp/bats-run-"*) ;; *) continue ;; esac
			echo "$(basename "$tap" .tap): killed leftover pid ${d#/proc/}: $cmd" >>"$log"
			kill -9 "${d#/proc/}" 2>/dev/null || true
		done
		done_for=0
	done
}

runc_passing_files() { # files with at least one test that passed (not skipped) with the real runc
	local f
	for f in "${files[@]}"; do
		grep -E '^ok [0-9]+ ' "$RESULTS/runc/${f%.bats}.tap" 2>/dev/null | grep -qv ' # skip' && echo "$f"
	done
	return 0
}

tree_state() { # the shimledger tree being measured: HEAD and its uncommitted changes
	[ -n "$repo" ] || { echo "(not a git tree)"; return; }
	echo "$(git -C "$repo" rev-parse HEAD) modified: $(git -C "$repo" status --short -- . ':!scripts/runc_suite' | awk '{print $2}' | tr '\n' ' ')"
}
write_meta() {
	echo "target: $1 (runtime $2)"
	echo "started: $(date -u +%FT%TZ)"
	echo "kernel: $(uname -r)"
	echo "cgroup: $(stat -f -c %T /sys/fs/cgroup) ($(grep -c ' cgroup ' /proc/self/mounts) v1 hierarchies, $(grep -c ' cgroup2 ' /proc/self/mounts) v2)"
	echo "runc source: $RUNC_SRC ($version)"
	echo "real runc: $($REAL_RUNC --version | head -1)"
	echo "bats: $(bats --version)"
	if [ "$1" != runc ]; then
		echo "shimledger: $SHIMLEDGER ($("$SHIMLEDGER" --version 2>&1 | head -1))"
		echo "shimledger code measured: $shimledger_code"
		echo "work tree at start: $(tree_state)"
	fi
	echo "BATS_TEST_TIMEOUT=$BATS_TEST_TIMEOUT FILE_TIMEOUT=$FILE_TIMEOUT"
}

for target in $TARGETS; do
	cleanup_leftovers true "$WORK/tmp/$target"
	case $target in
	runc) runtime=$REAL_RUNC; target_files=("${files[@]}") ;;
	shimledger)
		runtime=$WRAPPER
		if [ "$ALL_FILES" = 1 ] || [ ! -d "$RESULTS/runc" ]; then
			target_files=("${files[@]}")
		else
			mapfile -t target_files < <(runc_passing_files)
		fi
		;;
	*) echo "run.sh: unknown target $target" >&2; exit 1 ;;
	esac
	out=$RESULTS/$target
	rm -rf "$out"
	mkdir -p "$out"
	tmp=$WORK/tmp/$target
	mkdir -p "$tmp"
	write_meta "$target" "$runtime" >"$out/meta.txt"
	printf 'file\texit\tseconds\n' >"$out/files.tsv"
	for f in "${target_files[@]}"; do
		name=${f%.bats}
		start=$(date +%s)
		rc=0
		# bats implements BATS_TEST_TIMEOUT with a background sleep in the test's shell, which
		# a bare `wait` (events.bats) then waits for: no per-test timeout for such files.
		per_test=$BATS_TEST_TIMEOUT
		grep -qE '^\s*wait\s*(#|$)' "$f" && per_test=
		(
			export BATS_TEST_TIMEOUT=$per_test RUNC=$runtime TMPDIR=$tmp BATS_TMPDIR=$tmp
			exec timeout -k 30 "$FILE_TIMEOUT" \
				script -qec "bats --tap $(printf %q "$f") >$(printf %q "$out/$name.tap") 2>&1" /dev/null \
				</dev/null >/dev/null 2>&1
		) &
		bats_pid=$!
		reap_leaks "$bats_pid" "$out/$name.tap" "$tmp" "$out/leaks.txt" &
		reaper=$!
		wait "$bats_pid" || rc=$?
		kill "$reaper" 2>/dev/null || true
		wait "$reaper" 2>/dev/null || true
		secs=$(($(date +%s) - start))
		printf '%s\t%s\t%s\n' "$f" "$rc" "$secs" >>"$out/files.tsv"
		echo "$target $f: exit $rc, ${secs}s, $(grep -cE '^ok [0-9]+ ' "$out/$name.tap" || true) ok, $(grep -cE '^not ok [0-9]+ ' "$out/$name.tap" || true) not ok"
		cleanup_leftovers "$runtime" "$tmp"
	done
	echo "finished: $(date -u +%FT%TZ)" >>"$out/meta.txt"
	[ "$target" = runc ] || echo "work tree at end: $(tree_state)" >>"$out/meta.txt"
done

# 4. Compare.
python3 "$here/summarize.py" "$RESULTS"
echo "results: $RESULTS/summary.md, $RESULTS/summary.json, $RESULTS/<target>/<file>.tap"
