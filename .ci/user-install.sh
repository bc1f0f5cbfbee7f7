#!/usr/bin/env bash
# CI as a user would install phi-hpc (issue 10): build the wheel, install it non-editable into a fresh
# venv under /tmp owned by an ordinary user, and as that user, from a folder outside the checkout, run
# `phi-hpc demo`, `eval check --task humaneval`, the hostile-program tests and `submit pretrain <packaged
# config> --dry-run`. The venv reuses the already-installed torch/deepspeed (--system-site-packages: a
# site torch, as on a cluster); phi_hpc itself must come from the venv's wheel, which is checked.
# Needs root (creates the user). Usage: .ci/user-install.sh   (from anywhere; PHI_HPC_SHARED_DATA = mirror)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
USER_NAME="${PHI_HPC_CI_USER:-phi-user}"
PY="$(python3 -c 'import sys; print(sys.executable)')"
WORK="$(mktemp -d /tmp/phi-hpc-user.XXXXXX)"
chmod 755 "$WORK"
say() { echo "[ci user-install] $*"; }

# 1. the wheel (no network: the build backend is the installed setuptools)
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$REPO"
WHEEL="$(ls "$WORK"/dist/phi_hpc-*.whl)"
python3 - "$WHEEL" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["phi_hpc/configs/tiny-pretrain.yaml", "phi_hpc/configs/model/phi-1.yaml", "phi_hpc/configs/cluster/a100x8.yaml",
        "phi_hpc/templates/pretrain.sbatch"]
missing = [n for n in need if n not in names]
sys.exit(f"wheel lacks {missing}" if missing else 0)
PY
say "wheel: $WHEEL (configs and templates inside)"

# 2. an ordinary user; it must be able to run the site Python. Here that Python may live in root's
#    private home (pyenv): grant traversal (x, not read) on the folders in the way, restored on exit.
id "$USER_NAME" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$USER_NAME"
restore=()
d="$(dirname "$(readlink -f "$PY")")"
while [ "$d" != "/" ]; do
  if ! runuser -u "$USER_NAME" -- test -x "$d"; then restore+=("$(stat -c %a "$d") $d"); chmod o+x "$d"; fi
  d="$(dirname "$d")"
done
cleanup() {
  for item in "${restore[@]}"; do chmod "${item%% *}" "${item#* }"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/home" && chown -R "$USER_NAME" "$WORK"
as_user() { runuser -u "$USER_NAME" -- env -i HOME="$(getent passwd "$USER_NAME" | cut -d: -f6)" \
  PATH="$WORK/venv/bin:/usr/local/bin:/usr/bin:/bin" PHI_HPC_SHARED_DATA="${PHI_HPC_SHARED_DATA:-}" \
  TERM=dumb bash -c "cd '$WORK/home' && $*"; }

# 3. the venv under /tmp, owned by the user; the wheel installed non-editable, dependencies from the site
as_user "'$PY' -m venv --without-pip --system-site-packages '$WORK/venv'"  # pip: the site's
as_user "python -m pip install -q --no-index --no-build-isolation '$WHEEL'"
as_user "python -c 'import phi_hpc, sys; p = phi_hpc.__file__; print(p); sys.exit(0 if p.startswith(\"$WORK/venv/\") else \"phi_hpc imported from \" + p + \", not the venv wheel\")'"
say "phi_hpc comes from the venv's wheel"

# 4. what a user runs, from a folder outside the checkout
as_user "phi-hpc configs list >/dev/null && phi-hpc demo -o demo --max-steps 10 --limit 3 --max-new-tokens 24 --cluster local"
as_user "phi-hpc eval check --task humaneval"
as_user "phi-hpc submit pretrain tiny-pretrain --profile local --dry-run --set data.paths=[demo/data] | grep -q 'phi-hpc train'"
say "demo, eval check and submit --dry-run passed as $USER_NAME"

# 5. the hostile-program tests, as the user, against the installed package (a copy of tests/, no checkout)
cp -r "$REPO/tests" "$REPO/pytest.ini" "$WORK/home/" && chown -R "$USER_NAME" "$WORK/home"
set +e
as_user "python -m pytest -q -p no:cacheprovider tests/eval/test_hostile.py"
rc=$?
set -e
[ "$rc" -eq 5 ] && { echo "[ci user-install] pytest collected no tests: failing" >&2; exit 1; }
[ "$rc" -eq 0 ] || exit "$rc"
say "hostile-program tests passed as $USER_NAME"
