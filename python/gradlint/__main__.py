"""``python -m gradlint``: runs the ``gradlint`` binary installed with this package."""

from __future__ import annotations

import os
import sys
import sysconfig


def find_gradlint_bin() -> str:
    """The path of the installed ``gradlint`` executable.

    Looks in the scripts directory of this environment's install schemes (the
    one pip used: default, user, or a ``--target``/``--prefix`` next to the
    package), and raises ``FileNotFoundError`` when it is in none of them.
    """
    exe = "gradlint" + (sysconfig.get_config_var("EXE") or "")
    candidates = [sysconfig.get_path("scripts")]
    user_scheme = {"nt": "nt_user", "posix": "posix_user"}.get(os.name)
    if user_scheme and user_scheme in sysconfig.get_scheme_names():
        candidates.append(sysconfig.get_path("scripts", scheme=user_scheme))
    # pip install --target DIR puts the package in DIR and the script in DIR/bin.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates.append(os.path.join(package_parent, "bin"))
    candidates.append(os.path.dirname(sys.executable))
    for directory in candidates:
        path = os.path.join(directory, exe)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"the {exe} executable was not found in {', '.join(candidates)}; reinstall gradlint"
    )


def main() -> None:
    """Replaces this process with ``gradlint`` and its arguments."""
    gradlint = find_gradlint_bin()
    if sys.platform == "win32":
        import subprocess

        sys.exit(subprocess.run([gradlint, *sys.argv[1:]]).returncode)
    os.execv(gradlint, [gradlint, *sys.argv[1:]])


if __name__ == "__main__":
    main()
