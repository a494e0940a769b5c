#!/usr/bin/env bash
# build-fuse.sh VENV
#
# Idempotent. Gives VENV (e.g. .venv) a pyfuse3 3.5.0 with FUSE passthrough
# (backing_open/backing_close/FileInfo.backing_id/passthrough_supported) and a
# fallocate handler, built against a private libfuse 3.17.2.
#
#  (a) libfuse 3.17.2, from Debian 13 (trixie)'s source package fuse3, built
#      with meson/ninja (pip-installed in a scratch venv) and installed into
#      $LZFS_FUSE_PREFIX (/opt/lzfs-fuse): library, headers and fuse3.pc only
#      (no fusermount3, no udev rules, no init script). The system's libfuse3
#      is not touched; trixie is added as a deb-src source only, so no trixie
#      binary package can ever be installed through it. The private library's
#      soname is libfuse3.so.4, so it can't be mixed up with Debian 12's
#      libfuse3.so.3 either.
#  (b) the pyfuse3 3.5.0 sdist from PyPI (sha256-checked) with
#      pyfuse3-3.5.0-lzfs.patch (beside this script) applied, Cython
#      regenerated (pinned to 3.2.4, the version that generated the sdist's C),
#      installed into VENV linked against $LZFS_FUSE_PREFIX with an rpath.
#
# Needs root for (a) (apt, /opt) and the package registries (Debian, PyPI).
# Without passthrough (kernel < 6.9 or no CONFIG_FUSE_PASSTHROUGH) the result
# still works as a plain pyfuse3: pyfuse3.passthrough_supported() is False.
#
# Env: LZFS_FUSE_PREFIX (default /opt/lzfs-fuse),
#      LZFS_FUSE_WORK (scratch dir, default /var/tmp/lzfs-fuse-build),
#      FORCE=1 to rebuild both.
set -euo pipefail

VENV=${1:?usage: $0 VENV (e.g. .venv)}
VENV=$(cd "$VENV" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=${LZFS_FUSE_PREFIX:-/opt/lzfs-fuse}
WORK=${LZFS_FUSE_WORK:-/var/tmp/lzfs-fuse-build}
FORCE=${FORCE:-0}

FUSE_UPSTREAM=3.17.2
PYFUSE3_VERSION=3.5.0
PYFUSE3_SHA256=88399a9494b88603230bba300f4ba9ad63fece5ed514ca3633d555a0c6a42b24
CYTHON_VERSION=3.2.4
PATCH=$HERE/pyfuse3-$PYFUSE3_VERSION-lzfs.patch
LOCAL_VERSION=$PYFUSE3_VERSION+lzfs4
STAMP=$PREFIX/.lzfs-libfuse-$FUSE_UPSTREAM

log() { echo "build-fuse [${SECONDS}s]: $*" >&2; }

[ -x "$VENV/bin/python" ] || { log "$VENV is not a virtualenv"; exit 1; }
[ -f "$PATCH" ] || { log "missing $PATCH"; exit 1; }
PATCH_SUM=$(sha256sum < "$PATCH" | cut -d' ' -f1)
MARKER=$VENV/.lzfs-pyfuse3-patch   # sha256 of the patch the venv's pyfuse3 was built with
mkdir -p "$WORK"

# ---------------------------------------------------------------- (a) libfuse
build_libfuse() {
  [ "$(id -u)" = 0 ] || { log "building libfuse into $PREFIX needs root"; exit 1; }
  local need=()
  for p in build-essential dpkg-dev pkgconf python3-venv; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  local src=/etc/apt/sources.list.d/lzfs-trixie-src.sources
  local update=0
  if [ ! -f "$src" ]; then
    log "adding $src (deb-src only)"
    cat > "$src" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    update=1
  fi
  if [ $update = 1 ] || [ ${#need[@]} -gt 0 ] || ! apt-cache showsrc fuse3 2>/dev/null | grep -q "^Version: $FUSE_UPSTREAM-"; then
    apt-get update -qq
  fi
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi

  local d=$WORK/libfuse
  rm -rf "$d" && mkdir -p "$d"
  log "apt-get source fuse3/trixie"
  (cd "$d" && apt-get source -qq -o APT::Sandbox::User=root fuse3/trixie)   # unpacks and applies debian/patches
  local srcdir=$d/fuse3-$FUSE_UPSTREAM
  [ -f "$srcdir/meson.build" ] || { log "trixie's fuse3 is not $FUSE_UPSTREAM: $(ls "$d")"; exit 1; }

  log "meson + ninja into $d/venv"
  python3 -m venv "$d/venv"
  "$d/venv/bin/pip" install -q meson ninja
  PATH=$d/venv/bin:$PATH meson setup "$d/build" "$srcdir" \
    --prefix="$PREFIX" --libdir=lib --buildtype=release \
    -Ddefault_library=shared -Dutils=false -Dexamples=false -Dtests=false \
    -Duseroot=false -Dinitscriptdir=
  PATH=$d/venv/bin:$PATH ninja -C "$d/build"
  rm -rf "$PREFIX"
  PATH=$d/venv/bin:$PATH meson install -C "$d/build" --quiet
  ls "$d"/*.dsc | xargs -n1 basename > "$STAMP"
  log "libfuse $(PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig pkg-config --modversion fuse3) in $PREFIX"
}

if [ "$FORCE" = 1 ] || [ ! -f "$STAMP" ] || [ ! -f "$PREFIX/lib/pkgconfig/fuse3.pc" ]; then
  build_libfuse
else
  log "libfuse $FUSE_UPSTREAM already in $PREFIX ($(cat "$STAMP"))"
fi

# ---------------------------------------------------------------- (b) pyfuse3
have_pyfuse3() {
  [ "$(cat "$MARKER" 2>/dev/null)" = "$PATCH_SUM" ] || return 1
  "$VENV/bin/python" - "$PREFIX" "$LOCAL_VERSION" <<'EOF' 2>/dev/null
import sys, subprocess, importlib.metadata as md
import pyfuse3
assert md.version('pyfuse3') == sys.argv[2]
assert all(hasattr(pyfuse3, n) for n in ('backing_open', 'backing_close', 'passthrough_supported', 'fast_read_map'))
assert hasattr(pyfuse3.Operations, 'fallocate')
ldd = subprocess.run(['ldd', pyfuse3.__file__], capture_output=True, text=True).stdout
assert sys.argv[1] + '/lib/libfuse3.so' in ldd, ldd
EOF
}

if [ "$FORCE" != 1 ] && have_pyfuse3; then
  log "patched pyfuse3 $LOCAL_VERSION already in $VENV"
  exit 0
fi

d=$WORK/pyfuse3
rm -rf "$d" "$MARKER" && mkdir -p "$d"
log "downloading pyfuse3 $PYFUSE3_VERSION sdist"
"$VENV/bin/pip" download -q --no-binary :all: --no-deps -d "$d" "pyfuse3==$PYFUSE3_VERSION"
echo "$PYFUSE3_SHA256  $d/pyfuse3-$PYFUSE3_VERSION.tar.gz" | sha256sum -c --quiet
tar -xzf "$d/pyfuse3-$PYFUSE3_VERSION.tar.gz" -C "$d"
src=$d/pyfuse3-$PYFUSE3_VERSION
patch -d "$src" -p1 --forward --quiet < "$PATCH"
rm -f "$src/src/pyfuse3/__init__.c"   # generated from the unpatched .pyx: make Cython redo it

echo "Cython==$CYTHON_VERSION" > "$d/constraints.txt"
log "building and installing pyfuse3 $LOCAL_VERSION into $VENV"
PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig \
LDFLAGS="-Wl,-rpath,$PREFIX/lib" \
PIP_CONSTRAINT=$d/constraints.txt \
SETUPTOOLS_SCM_PRETEND_VERSION_FOR_PYFUSE3=$LOCAL_VERSION \
  "$VENV/bin/pip" install -q --no-cache-dir --force-reinstall --no-deps "$src"
"$VENV/bin/pip" install -q 'trio >= 0.15'   # pyfuse3's only dependency (a no-op if present)

echo "$PATCH_SUM" > "$MARKER"
have_pyfuse3 || { log "installed pyfuse3 failed its check"; exit 1; }
log "done: $("$VENV/bin/python" -c 'import pyfuse3; print(pyfuse3.__version__, pyfuse3.__file__)')"
