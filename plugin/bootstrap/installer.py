"""Set up (or repair) the worker environment: the code the QGIS task and the command line both run.

prepare() looks without changing anything (the dialog shows its plan); run() creates the venv
in the QGIS profile's data folder, runs the missing steps with progress, verifies through the
real worker and writes a stamp that marks the environment ready for this plugin version.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from . import platforms
from .builds import BuildChoice, MachineFacts, choose_build, compiler_advice, detect_facts
from .llama_build import RuntimeBuilder, server_folder, server_name
from .llama_variants import Variant, cpu_key, prove, read_record, write_record
from .commands import CommandLog, SetupCancelled, SetupError, run_command
from .plan import (CACHED, PREBUILT_OR_COMPILE, SERVER_CACHED, SERVER_COMPILE, EnvState, Step, imports, plan,
                   probe)
from .progress import BuildProgress, PipProgress, StepProgress
from .spec import EnvironmentSpec, load_spec
from .verify import verify_environment

STAMP = "tilescribe-environment.json"
LOG_NAME = "setup.log"
MIN_PYTHON = (3, 9)
MISSING, INCOMPLETE, READY = "missing", "incomplete", "ready"
PIP = ["-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]

Report = Callable[[float, str], None]


@dataclass
class SetupOptions:
    plugin_dir: Path
    profile_dir: Path
    base_python: Optional[Path] = None  # None: QGIS's own Python, found as platforms.py describes
    want_gpu: Optional[bool] = None     # None: a GPU build where a usable GPU is found
    verify: bool = True
    env: dict = field(default_factory=lambda: dict(os.environ))

    @property
    def venv(self) -> Path:
        return platforms.environment_dir(self.profile_dir)

    @property
    def log_path(self) -> Path:
        return self.venv.parent / LOG_NAME


@dataclass
class Preparation:
    """What a run would do, found without changing anything."""

    spec: EnvironmentSpec
    facts: MachineFacts
    choice: BuildChoice
    python: Path             # the environment's Python (it may not exist yet)
    base_python: Optional[Path]
    state: EnvState
    llama_wheel: Optional[Path]
    steps: list
    llama_server: Optional[Path] = None  # a build for this CPU made before (setup.sh or this setup), if any
    notes: tuple = ()                    # what the user should know before (e.g. no llama-server: why)

    def summary(self) -> str:
        lines = [f"{step.title}: downloads {step.download}" for step in self.steps]
        return "\n".join(lines + list(self.choice.notes) + list(self.notes))


@dataclass
class SetupResult:
    venv: Path
    python: Path
    steps: dict              # step name -> seconds it took
    accelerator: str
    check: Optional[dict]
    seconds: float
    log: Path
    notes: list = field(default_factory=list)  # one line each: which llama-server build runs and why, or why none


def system() -> str:
    return platform.system()


def find_base_python(env: dict, interp: Optional[platforms.Interpreter] = None) -> Optional[Path]:
    """QGIS's real Python: the first candidate that runs with QGIS's own major.minor and has venv."""
    interp = interp or platforms.Interpreter.current()
    for candidate in platforms.python_candidates(interp):
        if Path(str(candidate)).is_file() and python_version(Path(str(candidate)), env) == tuple(interp.version):
            return Path(str(candidate))
    return None


def python_version(python: Path, env: dict) -> Optional[tuple]:
    """(major, minor) of a Python that can make venvs, else None."""
    try:
        run = subprocess.run([str(python), "-c", "import sys, venv; print('%d %d' % sys.version_info[:2])"],
                             capture_output=True, text=True, env=platforms.subprocess_environment(env), timeout=30)
        version = tuple(int(x) for x in run.stdout.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return version if run.returncode == 0 and len(version) == 2 else None  # /bin/true prints nothing


def usable_variants(options: SetupOptions, choice: BuildChoice, facts: MachineFacts) -> list:
    """The builds still worth trying here: those that never failed their check on this CPU."""
    wheels = platforms.wheel_cache(system(), options.env, Path.home())
    key = cpu_key(facts.cpu_flags, facts.machine)
    return [variant for variant in choice.variants
            if not any((read_record(wheels / variant.cache_name, key, engine) or {"ok": True}).get("ok") is False
                       for engine in ("in-process", "server"))]


def cached_llama_wheel(options: SetupOptions, spec: EnvironmentSpec, choice: BuildChoice,
                       facts: Optional[MachineFacts] = None) -> Optional[Path]:
    """A wheel compiled before (by this setup or scripts/setup.sh) of the best build not known to fail here."""
    variants = usable_variants(options, choice, facts) if facts is not None else list(choice.variants)
    for variant in variants[:1]:
        folder = platforms.wheel_cache(system(), options.env, Path.home()) / variant.cache_name
        found = sorted(glob.glob(str(folder / f"llama_cpp_python-{spec.llama_version}-*.whl")))
        if found:
            return Path(found[0])
    return None


def cached_llama_server(options: SetupOptions, spec: EnvironmentSpec, choice: BuildChoice,
                        facts: Optional[MachineFacts] = None) -> Optional[Path]:
    """The llama-server compiled before on this machine (scripts/setup.sh and this setup share the
    folder, llama_build.server_folder) of the best build not known to fail here."""
    variants = usable_variants(options, choice, facts) if facts is not None else list(choice.variants)
    for variant in variants[:1]:
        binary = server_folder(platforms.cache_root(system(), options.env, Path.home()), spec.llama_version,
                               variant) / server_name(system())
        return binary if binary.is_file() else None
    return None


def prepare(options: SetupOptions, spec: Optional[EnvironmentSpec] = None) -> Preparation:
    spec = spec or load_spec(options.plugin_dir)
    facts = detect_facts(system(), platform.machine(), options.env)
    choice = choose_build(facts, spec, options.want_gpu)
    python = platforms.venv_python(options.venv, system())
    state = probe(python, spec, platforms.subprocess_environment(options.env))
    base = options.base_python or find_base_python(options.env)
    wheel = cached_llama_wheel(options, spec, choice, facts)
    source = CACHED if wheel else PREBUILT_OR_COMPILE
    server = cached_llama_server(options, spec, choice, facts)
    notes: tuple = ()
    if server is not None:
        server_source: Optional[str] = SERVER_CACHED
    elif facts.compiler:
        server_source = SERVER_COMPILE
    else:
        server_source = None
        if not state.llama_server:
            notes = ("llama-server (several tiles at once) is not built: no C++ compiler. Captioning runs in the "
                     f"worker, one tile at a time. {compiler_advice(facts.system)}",)
    steps = plan(state, spec, choice, source, options.verify, server_source)
    return Preparation(spec, facts, choice, python, base, state, wheel, steps, server, notes)


class Installer:
    """One run; `report(percent, message)` and `cancelled()` come from the caller (a QgsTask, a CLI)."""

    def __init__(self, options: SetupOptions, report: Optional[Report] = None,
                 cancelled: Optional[Callable[[], bool]] = None):
        self.options = options
        self.report = report or (lambda percent, message: None)
        self.cancelled = cancelled or (lambda: False)
        self.env = platforms.subprocess_environment(options.env)
        self.log: Optional[CommandLog] = None

    def run(self, prep: Optional[Preparation] = None) -> SetupResult:
        start = time.monotonic()
        prep = prep or prepare(self.options)
        self.log = CommandLog(self.options.log_path)
        self.log.section(f"Set up TileScribe in {self.options.venv} ({prep.choice.accelerator})")
        progress = StepProgress({step.name: step.weight for step in prep.steps}, self.report)
        check, timings = None, {}
        self.notes: list = []
        try:
            for step in prep.steps:
                progress.start(step.name, step.title)
                self.log.section(step.title)
                began = time.monotonic()
                check = getattr(self, "_" + step.name)(prep, step, progress)
                timings[step.name] = round(time.monotonic() - began, 1)
                progress.finish(f"{step.title}: done")
            if check is not None:  # the stamp says "checked": --no-verify leaves the environment unstamped
                write_stamp(self.options.venv, prep.spec, prep.choice, check)
        except SetupError as exc:
            if exc.log is None:
                exc.tail, exc.log = exc.tail or list(self.log.tail), self.log.path
            raise
        finally:
            self.log.close()
        return SetupResult(self.options.venv, prep.python, timings, prep.choice.accelerator, check,
                           round(time.monotonic() - start, 1), self.options.log_path, self.notes)

    # -- steps ---------------------------------------------------------------------------

    def _venv(self, prep: Preparation, step: Step, progress: StepProgress) -> None:
        base = prep.base_python
        if base is None:
            looked = ", ".join(str(path) for path in platforms.python_candidates(platforms.Interpreter.current()))
            raise self.log.error("No Python to build the environment from: QGIS's own Python was not found "
                                 f"(looked at {looked}). Name one (3.9 or newer) in Set up TileScribe's "
                                 "'Python' field, or with --python.")
        version = python_version(base, self.options.env)
        if version is None or version < MIN_PYTHON:
            raise self.log.error(f"{base} is not a Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer that can "
                                 "create environments (venv): name another one.")
        # --clear: a folder whose Python no longer runs (its base Python was upgraded away) is made anew
        clear = ["--clear"] if (self.options.venv / "pyvenv.cfg").is_file() and not prep.state.exists else []
        argv = [str(base), "-m", "venv", *platforms.venv_arguments(system()), *clear, str(self.options.venv)]
        if self._run(argv, progress) != 0:
            raise self.log.error(venv_advice(list(self.log.tail), base))

    def _torch(self, prep: Preparation, step: Step, progress: StepProgress) -> None:
        index = ["--extra-index-url", prep.choice.torch_index] if prep.choice.torch_index else []
        self._pip([*index, prep.spec.torch_requirement], step, progress)

    def _requirements(self, prep: Preparation, step: Step, progress: StepProgress) -> None:
        self._pip(["-r", str(prep.spec.requirements_file)], step, progress)

    def _rasterio(self, prep: Preparation, step: Step, progress: StepProgress) -> None:
        if imports(prep.python, "rasterio", self.env):  # Linux: the system's, through --system-site-packages
            self.log.write("rasterio is importable from the system's packages: nothing to install")
            return
        self._pip([prep.spec.rasterio_requirement], step, progress)

    def _llama(self, prep: Preparation, step: Step, progress: StepProgress) -> None:
        """Install a llama-cpp-python build and prove it here (a child process captions with quantized
        models); a build that dies is recorded and the next safer variant is compiled."""
        wheel = prep.llama_wheel
        if wheel is not None and self._install_wheel(prep, wheel, step, progress) and self._prove(prep, None):
            return
        if wheel is None:
            index = f"{prep.spec.llama_wheel_index}/{prep.choice.llama_variant}"
            self.log.write(f"looking for a prebuilt llama-cpp-python wheel in {index}")
            # --force-reinstall: the same version may be installed but fail to import (built for another CPU)
            if self._run([str(prep.python), *PIP, "--retries", "1", "--only-binary", "llama-cpp-python", "--no-deps",
                          "--force-reinstall", "--extra-index-url", index, prep.spec.llama_requirement], progress,
                         PipProgress(step.expected)) == 0 and self._prove(prep, None):
                return
        for variant in usable_variants(self.options, prep.choice, prep.facts):
            wheel = self._compile_llama(prep, progress, variant)
            self._install_wheel(prep, wheel, step, progress, required=True)
            if self._prove(prep, variant):
                return
        raise self.log.error("No llama-cpp-python build runs on this CPU: each one tried died in its check "
                             f"(see {self.log.path}). Use a captioning server instead (Settings).")

    def _prove(self, prep: Preparation, variant: Optional[Variant]) -> bool:
        """True when a child process captioned with Q4_K_M and Q8_0 models; a failure is recorded."""
        if not self.options.verify:
            return True
        models = platforms.cache_root(system(), self.options.env, Path.home()) / "proof-models"
        proof = prove(prep.python, "in-process", models, self._proof_env())
        name = variant.name if variant else "installed"
        self.log.write(f"llama.cpp {name} build check: {'passed' if proof.ok else 'FAILED'} ({proof.detail})")
        if not proof.ok and variant is not None:
            folder = platforms.wheel_cache(system(), self.options.env, Path.home()) / variant.cache_name
            write_record(folder, cpu_key(prep.facts.cpu_flags, prep.facts.machine), proof)
        return proof.ok

    def _proof_env(self) -> dict:
        env = dict(self.env)
        if self.options.plugin_dir.name == "tilescribe":  # a ZIP install: -m tilescribe... from the plugins folder
            env["PYTHONPATH"] = str(self.options.plugin_dir.parent)
        return env

    def _compile_llama(self, prep: Preparation, progress: StepProgress, variant: Variant) -> Path:
        if not prep.facts.compiler:
            raise self.log.error(f"No prebuilt llama-cpp-python {prep.spec.llama_version} wheel for this platform, "
                                 f"and no C++ compiler to build one. {compiler_advice(prep.facts.system)}")
        folder = platforms.wheel_cache(system(), self.options.env, Path.home()) / variant.cache_name
        found = sorted(folder.glob(f"llama_cpp_python-{prep.spec.llama_version}-*.whl"))
        if found:
            return found[0]
        folder.mkdir(parents=True, exist_ok=True)
        note = (f"Compiling llama-cpp-python {prep.spec.llama_version} ({variant.name}: {variant.why}) with "
                f"{prep.facts.compiler}: about 5 minutes on 2 cores, once (the wheel is kept in {folder})")
        self.log.write(note)
        progress.update(0.05, note)
        env = dict(self.env, CMAKE_ARGS=variant.cmake_string)
        # -v: the build tool's "[n/total]" lines reach us, the compile's real progress
        argv = [str(prep.python), "-m", "pip", "wheel", "-v", "--disable-pip-version-check", "--no-deps", "-w",
                str(folder), prep.spec.llama_requirement]
        build = BuildProgress()

        def on_line(line: str) -> None:
            if build.feed(line):
                progress.update(0.05 + 0.85 * build.fraction, build.message)

        if run_command(argv, self.log, env, on_line, self.cancelled) != 0:
            raise self.log.error(f"Compiling llama-cpp-python {prep.spec.llama_version} failed.")
        found = sorted(folder.glob(f"llama_cpp_python-{prep.spec.llama_version}-*.whl"))
        if not found:
            raise self.log.error(f"pip built no llama-cpp-python wheel in {folder}.")
        return found[0]

    def _install_wheel(self, prep: Preparation, wheel: Path, step: Step, progress: StepProgress,
                       required: bool = False) -> bool:
        # --force-reinstall: the same version may be there, built for another CPU; --no-deps keeps
        # the rest as it is, the second call adds dependencies the environment still lacks.
        pip = PipProgress(step.expected)
        for extra in (["--force-reinstall", "--no-deps"], []):
            if self._run([str(prep.python), *PIP, *extra, str(wheel)], progress, pip) != 0:
                if required:
                    raise self.log.error(f"Installing {wheel.name} failed.")
                return False
        return True

    def _server(self, prep: Preparation, step: Step, progress: StepProgress) -> None:
        """llama.cpp's llama-server, built and proven exactly as scripts/setup.sh does (llama_build's
        RuntimeBuilder: the same variants, cache folders, child-process proof and records): a build
        made before on this machine that passed its proof here is linked in seconds; else the best
        variant not known to fail here is compiled once and proven, falling back to the next.
        Not fatal: captioning in the worker runs without it, and the dialogs offer llama-server
        only when it is linked beside the environment's Python."""
        builder = self._builder(prep, progress)
        failures = []
        for variant in usable_variants(self.options, prep.choice, prep.facts):
            binary = builder.cached_server(variant)
            try:
                if binary is None:
                    binary = self._compile_server(prep, builder, variant, progress)
            except SetupCancelled:
                raise
            except SetupError as exc:  # the compile itself failed: no other variant would compile either
                failures.append(f"{variant.name}: {exc}")
                break
            progress.update(0.97, f"checking the {variant.name} llama-server: a caption with Q4_K_M and Q8_0 models")
            proof = builder.proof(variant, "server", binary) if self.options.verify else None
            if proof is not None:
                self.log.write(f"llama-server {variant.name} build check: {'passed' if proof.ok else 'FAILED'} "
                               f"({proof.detail})")
                if not proof.ok:
                    failures.append(f"{variant.name}: {proof.detail}")
                    continue
            self._link_server(prep, binary)
            self.notes.append(f"llama-server (several tiles at once): the {variant.name} build ({variant.why})"
                              + (", proven here with Q4_K_M and Q8_0 models" if proof is not None else ""))
            return
        note = ("llama-server (several tiles at once) is not available: " + ("; ".join(failures) or
                "no build to try") + f". Captioning runs in the worker, one tile at a time (details: {self.log.path}).")
        self.log.write(note)
        self.notes.append(note)

    def _builder(self, prep: Preparation, progress: StepProgress) -> RuntimeBuilder:
        def run(argv: list, env: dict, what: str, on_line=None) -> None:
            if run_command(argv, self.log, env, on_line or (lambda line: None), self.cancelled) != 0:
                raise self.log.error(f"{what[0].upper()}{what[1:]} failed (see {self.log.path}).")

        cache = platforms.cache_root(system(), self.options.env, Path.home())
        return RuntimeBuilder(prep.python, lambda: self._sdist(prep, progress), cache,
                              wheels=platforms.wheel_cache(system(), self.options.env, Path.home()),
                              log=self.log.write, env=self._proof_env(), cpu_flags=prep.facts.cpu_flags,
                              machine=prep.facts.machine, gpu_args=[], version=prep.spec.llama_version, run=run)

    def _compile_server(self, prep: Preparation, builder: RuntimeBuilder, variant: Variant,
                        progress: StepProgress) -> Path:
        if not prep.facts.compiler:
            raise self.log.error(f"no C++ compiler to build llama-server. {compiler_advice(prep.facts.system)}")
        builder.cmake = self._cmake(prep, progress)
        build = BuildProgress(what="llama-server")
        progress.update(0.02, f"compiling llama-server ({variant.name}: {variant.why}): about 10 minutes on 2 cores")

        def on_line(line: str) -> None:
            if build.feed(line):
                progress.update(0.05 + 0.9 * build.fraction, build.message)

        try:
            return builder.compile_server(variant, on_line)
        except SystemExit as exc:  # the builder's own refusal (no binary came out)
            raise self.log.error(str(exc)) from None

    def _sdist(self, prep: Preparation, progress: StepProgress) -> Path:
        """llama-cpp-python's sources (they vendor llama.cpp), downloaded once where setup.sh keeps them."""
        folder = platforms.cache_root(system(), self.options.env, Path.home()) / "sdist"
        sdist = folder / f"llama_cpp_python-{prep.spec.llama_version}.tar.gz"
        if not sdist.is_file():
            progress.update(0.01, f"downloading the llama-cpp-python {prep.spec.llama_version} sources (about 75 MB)")
            folder.mkdir(parents=True, exist_ok=True)
            if self._run([str(prep.python), "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
                          "--no-binary", "llama-cpp-python", "-d", str(folder), prep.spec.llama_requirement],
                         progress) != 0 or not sdist.is_file():
                raise self.log.error(f"Downloading the llama-cpp-python {prep.spec.llama_version} sources failed.")
        return sdist

    def _cmake(self, prep: Preparation, progress: StepProgress) -> str:
        """The system's cmake, else PyPI's, installed into the environment (pip's own llama-cpp-python
        build fetches one for itself alone)."""
        local = prep.python.parent / ("cmake.exe" if system() == platforms.WINDOWS else "cmake")
        found = shutil.which("cmake", path=self.env.get("PATH", "")) if not local.is_file() else str(local)
        if found:
            return found
        progress.update(0.02, "installing cmake (about 30 MB) to build llama-server")
        if self._run([str(prep.python), *PIP, "cmake"], progress) != 0 or not local.is_file():
            raise self.log.error("Installing cmake into the environment failed.")
        return str(local)

    def _link_server(self, prep: Preparation, binary: Path) -> None:
        """Beside the environment's Python, where the worker looks for it (sys.prefix/bin)."""
        target = prep.python.parent / binary.name
        if target.is_symlink() or target.exists():
            target.unlink()
        if system() == platforms.WINDOWS:
            shutil.copy2(binary, target)  # symlinks need privileges there
        else:
            target.symlink_to(binary)
        self.log.write(f"linked {target} -> {binary}")

    def _verify(self, prep: Preparation, step: Step, progress: StepProgress) -> dict:
        def report(fraction: float, message: str) -> None:
            self.log.write(message)
            progress.update(fraction, message)
            if self.cancelled():
                raise self.log.error("Set up was cancelled during the check.", cancelled=True)

        check = verify_environment(prep.python, self.options.plugin_dir, self.options.env, report)
        self.log.write(f"check passed: {json.dumps(check)}")
        return check

    # -- plumbing ------------------------------------------------------------------------

    def _pip(self, args: list, step: Step, progress: StepProgress) -> None:
        python = platforms.venv_python(self.options.venv, system())
        if self._run([str(python), *PIP, *args], progress, PipProgress(step.expected)) != 0:
            raise self.log.error(f"{step.title} failed (pip exited with an error).")

    def _run(self, argv: list, progress: StepProgress, pip: Optional[PipProgress] = None) -> int:
        def on_line(line: str) -> None:
            if pip is not None and pip.feed(line):
                progress.update(pip.fraction, pip.message)

        return run_command(argv, self.log, self.env, on_line, self.cancelled)


def venv_advice(tail: list, base: Path) -> str:
    text = "\n".join(tail)
    if "ensurepip" in text or "python3-venv" in text:
        return (f"{base} cannot create environments: its venv module lacks pip. On Debian/Ubuntu run "
                "`sudo apt install python3-venv`, then Set up TileScribe again.")
    return f"Creating the environment with {base} failed."


# -- the stamp: what the plugin checks without starting anything ---------------------------

def write_stamp(venv: Path, spec: EnvironmentSpec, choice: BuildChoice, check: Optional[dict]) -> None:
    data = {"fingerprint": spec.fingerprint, "accelerator": choice.accelerator, "check": check,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (Path(venv) / STAMP).write_text(json.dumps(data, indent=1), encoding="utf-8")


def environment_state(venv: Path, spec: EnvironmentSpec, system_name: Optional[str] = None) -> str:
    """missing: no environment; incomplete: a failed/cancelled setup, or pins changed since (a
    plugin update): Repair; ready: set up and checked for these pins."""
    if not platforms.venv_python(Path(venv), system_name or system()).is_file():
        return MISSING
    try:
        stamp = json.loads((Path(venv) / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return INCOMPLETE
    return READY if stamp.get("fingerprint") == spec.fingerprint else INCOMPLETE


def remove_environment(venv: Path) -> None:
    """Delete the environment folder, only if it is one (pyvenv.cfg): never an arbitrary folder."""
    venv = Path(venv)
    if not (venv / "pyvenv.cfg").is_file():
        raise SetupError(f"{venv} is not a Python environment: nothing was removed.")
    shutil.rmtree(venv)
