"""The bootstrap's description, plan, pip progress, commands, stamp and removal."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tilescribe.plugin.bootstrap import installer, plan as plans
from tilescribe.plugin.bootstrap.builds import MachineFacts, choose_build
from tilescribe.plugin.bootstrap.commands import CommandLog, SetupCancelled, SetupError, run_command
from tilescribe.plugin.bootstrap.plan import EnvState, plan, probe
from tilescribe.plugin.bootstrap.progress import BuildProgress, PipProgress, StepProgress
from tilescribe.plugin.bootstrap.spec import SpecError, load_spec, parse_description, parse_requirements

REPO = Path(__file__).resolve().parents[1]
SPEC = load_spec(REPO)
CPU = choose_build(MachineFacts("Linux", "x86_64"), SPEC)


# -- one description for setup.sh and the plugin -------------------------------------------

def test_setup_sh_reads_the_same_description():
    script = f'set -e; . "{REPO / "environment.env"}"; echo "$TORCH_VERSION $LLAMA_VERSION $RASTERIO_REQUIREMENT"'
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [SPEC.torch_version, SPEC.llama_version, SPEC.rasterio_requirement]
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert SPEC.llama_version not in setup and SPEC.torch_version not in setup  # no second copy of a pin
    assert '. "$ROOT/environment.env"' in setup


def test_requirements_are_pins_and_dev_tools_stay_out():
    names = [line.split("=")[0].split("<")[0].split(">")[0] for line in SPEC.requirements]
    assert "sentence-transformers" in names and "sqlite-vec" in names
    assert "pytest" not in names  # requirements-dev.txt's
    assert "-r requirements.txt" in (REPO / "requirements-dev.txt").read_text()


def test_description_errors_name_the_file_and_line():
    with pytest.raises(SpecError, match="env.env, line 2: expected KEY=value"):
        parse_description("# c\nnot a pair\n", "env.env")
    with pytest.raises(SpecError, match="lacks LLAMA_VERSION"):
        parse_description("TORCH_VERSION=1\n", "env.env")
    with pytest.raises(SpecError, match="options such as '-r other.txt'"):
        parse_requirements("numpy<2\n-r other.txt\n")


def test_quoted_values_and_comments_parse_as_bash_reads_them():
    text = "\n".join(f"{key}=x" for key in ("TORCH_VERSION", "LLAMA_VERSION", "LLAMA_WHEEL_INDEX",
                                           "TORCH_CPU_INDEX", "TORCH_CUDA_INDEX"))
    values = parse_description(text + '\nRASTERIO_REQUIREMENT="rasterio>=1.3,<1.5"  # why\n')
    assert values["RASTERIO_REQUIREMENT"] == "rasterio>=1.3,<1.5"


def test_a_changed_pin_changes_the_fingerprint(tmp_path):
    for name in ("requirements.txt", "environment.env"):
        (tmp_path / name).write_text((REPO / name).read_text())
    before = load_spec(tmp_path).fingerprint
    (tmp_path / "requirements.txt").write_text((REPO / "requirements.txt").read_text() + "rich==13.0\n")
    assert load_spec(tmp_path).fingerprint != before


def test_missing_description_says_reinstall(tmp_path):
    with pytest.raises(SpecError, match="reinstall the plugin"):
        load_spec(tmp_path)


# -- plan: only what is missing -------------------------------------------------------------

def step_names(state: EnvState, **kw) -> list:
    return [step.name for step in plan(state, SPEC, CPU, plans.CACHED, **kw)]


def test_a_new_environment_runs_every_step():
    assert step_names(EnvState(False)) == ["venv", "torch", "requirements", "rasterio", "llama", "verify"]


def test_a_complete_environment_is_only_checked():
    state = EnvState(True, True, [], SPEC.torch_version + "+cpu", SPEC.llama_version, True, True)
    assert step_names(state) == ["verify"]
    assert step_names(state, verify=False) == []


def test_repair_runs_only_what_is_missing_or_wrong():
    state = EnvState(True, True, ["sqlite-vec==0.1.9"], "2.0.0", SPEC.llama_version, True, False)
    assert step_names(state) == ["torch", "requirements", "llama", "verify"]


def test_llama_server_is_linked_when_built_before_and_compiled_otherwise():
    complete = EnvState(True, True, [], SPEC.torch_version, SPEC.llama_version, True, True)
    cached = plan(complete, SPEC, CPU, plans.CACHED, server_source=plans.SERVER_CACHED)
    assert [(s.name, s.weight) for s in cached] == [("server", plans.SECONDS["server"]), ("verify", 60)]
    compiled = plan(complete, SPEC, CPU, plans.CACHED, server_source=plans.SERVER_COMPILE)
    assert [(s.name, s.weight) for s in compiled] == [("server", plans.SECONDS["server-compile"]), ("verify", 60)]
    assert compiled[0].title.startswith("Building llama.cpp's llama-server") and "75 MB" in compiled[0].download
    linked = EnvState(True, True, [], SPEC.torch_version, SPEC.llama_version, True, True, llama_server=True)
    assert step_names(linked, server_source=plans.SERVER_COMPILE) == ["verify"]
    assert step_names(complete, server_source=None) == ["verify"]  # no compiler: nothing offered


# -- llama-server from the plugin's own setup: as scripts/setup.sh builds and proves it ----------

AVX512 = "flags: avx avx2 fma f16c bmi2 avx512f avx512cd avx512vl avx512dq avx512bw"


def server_run(tmp_path, monkeypatch, proofs, *, cached=(), compiler="g++", verify=True):
    """The server step with commands replaced by a recorder that leaves what each would (the real
    compile and proof run in test_bootstrap_e2e and test_llama_variants); `proofs`: the child
    process's verdicts in order; `cached`: variants whose llama-server was built before."""
    from tilescribe.plugin.bootstrap import llama_build
    from tilescribe.plugin.bootstrap.installer import Installer, Preparation, SetupOptions

    facts = MachineFacts("Linux", "x86_64", cpu_flags=AVX512, compiler=compiler)
    choice = choose_build(facts, SPEC)
    venv = fake_venv(tmp_path / "profile")
    (venv / "bin" / "cmake").write_text("")  # the environment's cmake: no pip install of it
    cache = tmp_path / "cache"
    for variant in cached:
        binary = llama_build.server_folder(cache, SPEC.llama_version, variant) / "llama-server"
        binary.parent.mkdir(parents=True)
        binary.write_text("cached")
    calls = []

    def fake_run(argv, log, env, on_line, cancelled, cwd=None):
        argv = [str(a) for a in argv]
        calls.append(argv)
        if "download" in argv:  # pip download -d FOLDER: the sources
            folder = Path(argv[argv.index("-d") + 1])
            (folder / f"llama_cpp_python-{SPEC.llama_version}.tar.gz").write_text("")
        if "--build" in argv:  # make's lines, then the binary
            for line in ("[  2%] Building C object ggml.c.o", "[ 50%] Building CXX object llama.cpp.o",
                         "[100%] Linking CXX executable ../../bin/llama-server"):
                on_line(line)
            out = Path(argv[argv.index("--build") + 1]) / "bin"
            out.mkdir(parents=True)
            (out / "llama-server").write_text("compiled")
        return 0

    verdicts = iter(proofs)
    monkeypatch.setattr(installer, "run_command", fake_run)
    monkeypatch.setattr(llama_build, "prove", lambda python, engine, models, env, server=None: next(verdicts))
    options = SetupOptions(REPO, tmp_path / "profile", verify=verify,
                           env={"TILESCRIBE_CACHE": str(cache), "TILESCRIBE_WHEEL_CACHE": str(cache / "wheels")})
    prep = Preparation(SPEC, facts, choice, venv / "bin" / "python", None, EnvState(True), None, [])
    inst = Installer(options)
    inst.log, inst.notes = CommandLog(tmp_path / "setup.log"), []
    reports = []
    inst._server(prep, None, StepProgress({"server": 1}, lambda percent, message: reports.append((percent, message))))
    return calls, choice, venv / "bin" / "llama-server", inst.notes, reports


def test_a_proven_cached_llama_server_is_linked_without_compiling(tmp_path, monkeypatch):
    from tilescribe.plugin.bootstrap.llama_variants import Proof, cpu_key, write_record

    choice = choose_build(MachineFacts("Linux", "x86_64", cpu_flags=AVX512), SPEC)
    best = choice.variants[0]
    write_record(tmp_path / "cache" / "wheels" / best.cache_name, cpu_key(AVX512, "x86_64"),
                 Proof("server", True, "captioned with Q4_K_M+Q8_0"))
    calls, _, link, notes, _ = server_run(tmp_path, monkeypatch, proofs=[], cached=[best])
    assert calls == []  # no download, no compile, no proof run: the record says it passed here
    assert link.resolve().read_text() == "cached"
    assert notes == [f"llama-server (several tiles at once): the avx512 build ({best.why}), proven here with "
                     "Q4_K_M and Q8_0 models"]


def test_without_a_cached_llama_server_it_is_compiled_proven_recorded_and_linked(tmp_path, monkeypatch):
    from tilescribe.plugin.bootstrap import llama_build
    from tilescribe.plugin.bootstrap.llama_variants import Proof, cpu_key, read_record

    calls, choice, link, notes, reports = server_run(
        tmp_path, monkeypatch, proofs=[Proof("server", True, "captioned with Q4_K_M+Q8_0")])
    best = choice.variants[0]
    assert [argv[1:4] if "-m" in argv else argv[:2] for argv in calls] == [
        ["-m", "pip", "download"], ["tar", "-xzf"], [calls[2][0], "-S"], [calls[2][0], "--build"]]
    assert all(arg in calls[2] for arg in best.cmake_args) and "-DGGML_AMX_TILE=OFF" in calls[2]
    built = llama_build.server_folder(tmp_path / "cache", SPEC.llama_version, best) / "llama-server"
    assert built.read_text() == "compiled" and link.resolve() == built
    assert (tmp_path / "cache" / "sdist" / f"llama_cpp_python-{SPEC.llama_version}.tar.gz").is_file()
    record = read_record(tmp_path / "cache" / "wheels" / best.cache_name, cpu_key(AVX512, "x86_64"), "server")
    assert record["ok"] is True  # the next setup (or setup.sh) links it without proving it again
    percents = [percent for percent, _ in reports]
    assert percents == sorted(percents) and any(m.endswith("Compiling llama-server: 50 %") for _, m in reports)
    assert notes[0].startswith("llama-server (several tiles at once): the avx512 build")


def test_a_llama_server_that_dies_in_its_check_is_recorded_and_the_next_variant_is_built(tmp_path, monkeypatch):
    from tilescribe.plugin.bootstrap.llama_variants import Proof, cpu_key, read_record

    died = Proof("server", False, "llama-server killed by SIGILL", "SIGILL")
    calls, choice, link, notes, _ = server_run(tmp_path, monkeypatch,
                                               proofs=[died, Proof("server", True, "captioned with Q4_K_M+Q8_0")])
    first, second = choice.variants[:2]
    configured = [argv for argv in calls if "-S" in argv]
    assert [all(arg in argv for arg in v.cmake_args) for argv, v in zip(configured, (first, second))] == [True, True]
    record = read_record(tmp_path / "cache" / "wheels" / first.cache_name, cpu_key(AVX512, "x86_64"), "server")
    assert record["ok"] is False and record["signal"] == "SIGILL"
    assert f"{second.cache_name}" in str(link.resolve()) and notes[0].startswith(
        "llama-server (several tiles at once): the avx2 build")
    log = (tmp_path / "setup.log").read_text()
    assert "llama-server avx512 build check: FAILED (llama-server killed by SIGILL)" in log


def test_without_a_compiler_or_a_build_there_is_no_llama_server_and_the_user_is_told(tmp_path, monkeypatch):
    calls, _, link, notes, _ = server_run(tmp_path, monkeypatch, proofs=[], compiler=None)
    assert calls == [] and not link.exists()
    assert notes[0].startswith("llama-server (several tiles at once) is not available: avx512: no C++ compiler")
    assert "build-essential" in notes[0] and "one tile at a time" in notes[0]


def test_probe_of_a_missing_or_broken_python(tmp_path):
    assert probe(tmp_path / "nope", SPEC, {}).exists is False
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    assert probe(broken, SPEC, {}).exists is False


def test_probe_of_a_bare_venv_lists_every_pin(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "v")], check=True, timeout=120)
    state = probe(tmp_path / "v" / "bin" / "python", SPEC, {"PATH": "/usr/bin:/bin"})
    assert state.exists and not state.pip and state.unmet == list(SPEC.requirements)
    assert step_names(state)[0] == "venv"


def test_the_dialog_summary_says_what_is_downloaded():
    steps = plan(EnvState(False), SPEC, CPU, plans.PREBUILT_OR_COMPILE)
    text = "\n".join(step.download for step in steps)
    assert "about 200 MB" in text and "about 5 minutes on 2 cores" in text and "C++ compiler" in text


# -- pip's output as progress ----------------------------------------------------------------

PIP_LINES = """Looking in indexes: https://pypi.org/simple, https://download.pytorch.org/whl/cpu
Collecting sentence-transformers==6.2.0
  Downloading sentence_transformers-6.2.0-py3-none-any.whl (512 kB)
Requirement already satisfied: numpy<2 in /usr/lib/python3/dist-packages (from -r requirements.txt (line 5)) (1.24.2)
Collecting transformers==5.24.0
  Building wheel for diskcache (pyproject.toml): started
Installing collected packages: tokenizers, transformers, sentence-transformers
Successfully installed sentence-transformers-6.2.0 tokenizers-0.22.1 transformers-5.24.0""".splitlines()


def test_pip_lines_drive_progress_forward_only():
    progress = PipProgress(expected=4)
    seen = []
    for line in PIP_LINES:
        if progress.feed(line):
            seen.append((round(progress.fraction, 2), progress.message))
    fractions = [fraction for fraction, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    messages = [message for _, message in seen]
    assert "Downloading sentence_transformers-6.2.0-py3-none-any.whl (512 kB)" in messages
    assert "Installing 3 packages" in messages and messages[-1].startswith("Installed sentence-transformers")
    assert progress.resolved == 3 and not PipProgress().feed("WARNING: something unrelated")


def test_compile_lines_drive_progress():
    build = BuildProgress()
    lines = ["  -- Configuring done", "  [1/4] Building C object vendor/llama.cpp/ggml/src/ggml.c.o",
             "  [3/4] Building CXX object src/llama.cpp.o", "  [2/4] Linking (out of order)", "  [4/4] Linking"]
    seen = [(build.fraction, build.message) for line in lines if build.feed(line)]
    assert [fraction for fraction, _ in seen] == [0.25, 0.75, 1.0]
    assert seen[-1][1] == "Compiling llama.cpp: 4 of 4 build steps"


def test_step_progress_is_weighted():
    reports = []
    steps = StepProgress({"a": 1, "b": 3}, lambda percent, message: reports.append(percent))
    steps.start("a", "")
    steps.update(0.5, "")
    steps.finish()
    steps.start("b", "")
    steps.update(0.5, "")
    assert reports == [0.0, 12.5, 25.0, 25.0, 62.5]


def test_the_bar_follows_the_steps_measured_seconds_through_the_compile():
    """A first setup that compiles llama.cpp: the bar moves with the time spent (it sat at 79-87 %
    for the 7 minutes of the compile when the weights were guesses), and one estimate is given."""
    steps = plan(EnvState(False), SPEC, CPU, plans.PREBUILT_OR_COMPILE)
    seconds = {step.name: step.weight for step in steps}
    assert seconds == {"venv": 10, "torch": 60, "requirements": 60, "rasterio": 15, "llama": 330, "verify": 60}
    with_server = plan(EnvState(False), SPEC, CPU, plans.PREBUILT_OR_COMPILE, server_source=plans.SERVER_COMPILE)
    assert plans.estimate(with_server) == "about 19 minutes, most of it compiling llama.cpp for this CPU"
    assert plans.first_setup_estimate() == plans.estimate(with_server)  # the dock's offer counts both compiles
    reports = []
    progress = StepProgress(seconds, lambda percent, message: reports.append((percent, message)))
    build = BuildProgress()
    elapsed = 0.0
    for step in steps:
        progress.start(step.name, step.title)
        if step.name == "llama":  # the compile's own "[n/total]" lines, as in the installer
            for done in (1, 100, 200):
                build.feed(f"[{done}/200] Building CXX object ggml-cpu.c.o")
                progress.update(0.05 + 0.85 * build.fraction, build.message)
                time_spent = elapsed + step.weight * (0.05 + 0.85 * done / 200)
                assert abs(reports[-1][0] - 100 * time_spent / sum(seconds.values())) < 1
            assert reports[-1][1].endswith("Compiling llama.cpp: 200 of 200 build steps")
        elapsed += step.weight
        progress.finish(f"{step.title}: done")
    assert 25 < reports[[m for _, m in reports].index(
        next(s.title for s in steps if s.name == "llama"))][0] < 30  # the compile starts at a quarter
    assert reports[-1][0] == 100
    assert plans.estimate(steps) == "about 9 minutes, most of it compiling llama.cpp for this CPU"
    cached = plan(EnvState(False), SPEC, CPU, plans.CACHED)
    assert plans.estimate(cached) == "about 4 minutes"  # a wheel compiled before: nothing dominates
    assert plans.estimate([s for s in cached if s.name == "verify"]) == \
        "about 1 minute, most of it the check (a tiny caption and search)"


def test_step_progress_says_which_step_a_pip_line_belongs_to():
    messages = []
    steps = StepProgress({"torch": 1, "check": 1}, lambda percent, message: messages.append(message))
    steps.start("torch", "Installing torch 2.13.0 (CPU)")
    steps.update(0.5, "Requirement already satisfied networkx>=2.5.1")
    steps.finish("Installing torch 2.13.0 (CPU): done")
    steps.start("check", "Checking")
    steps.update(0.1, "")
    assert messages == ["Installing torch 2.13.0 (CPU)",
                        "Installing torch 2.13.0 (CPU): Requirement already satisfied networkx>=2.5.1",
                        "Installing torch 2.13.0 (CPU): done", "Checking", "Checking"]


# -- commands, the log, cancel ---------------------------------------------------------------

def test_command_lines_reach_the_log_and_the_callback(tmp_path):
    log = CommandLog(tmp_path / "setup.log")
    lines = []
    script = "print('one'); import sys; print('two', file=sys.stderr); sys.exit(4)"
    code = run_command([sys.executable, "-u", "-c", script], log, {}, lines.append, lambda: False)
    log.close()
    assert code == 4 and [line.strip() for line in lines] == ["one", "two"]
    text = (tmp_path / "setup.log").read_text()
    assert "one\ntwo\n" in text and text.startswith("$ ")


def test_cancel_stops_the_command_and_what_it_started(tmp_path):
    log = CommandLog(tmp_path / "setup.log")
    pid_file = tmp_path / "child.pid"
    script = (f"import subprocess, sys, time; p = subprocess.Popen(['sleep', '60']); "
              f"open({str(pid_file)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)")
    start = time.monotonic()
    with pytest.raises(SetupCancelled) as caught:
        run_command([sys.executable, "-c", script], log, {"PATH": "/usr/bin:/bin"}, lambda line: None,
                    lambda: pid_file.exists() and time.monotonic() - start > 0.5)
    assert time.monotonic() - start < 20
    assert caught.value.log == tmp_path / "setup.log" and "started" in caught.value.tail
    child = int(pid_file.read_text())
    for _ in range(50):  # the grandchild (a compiler, in real life) is gone too
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the command's child survived the cancel")


def test_failure_details_hold_the_tail_and_the_log_path(tmp_path):
    error = SetupError("Installing torch failed.", ["ERROR: No matching distribution found for torch==9"],
                       tmp_path / "setup.log")
    details = error.details()
    assert "Installing torch failed." in details and "No matching distribution" in details
    assert str(tmp_path / "setup.log") in details


def test_debian_python_without_venv_gets_the_apt_command():
    advice = installer.venv_advice(["The virtual environment was not created successfully because ensurepip is "
                                    "not available.  On Debian/Ubuntu systems, you need to install the "
                                    "python3-venv package"], Path("/usr/bin/python3"))
    assert "sudo apt install python3-venv" in advice


# -- the stamp and removal --------------------------------------------------------------------

def fake_venv(root: Path) -> Path:
    venv = root / "tilescribe" / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return venv


def test_state_missing_incomplete_ready_and_outdated(tmp_path):
    venv = tmp_path / "tilescribe" / "venv"
    assert installer.environment_state(venv, SPEC, "Linux") == installer.MISSING
    fake_venv(tmp_path)
    assert installer.environment_state(venv, SPEC, "Linux") == installer.INCOMPLETE
    installer.write_stamp(venv, SPEC, CPU, {"tiles": 4})
    assert installer.environment_state(venv, SPEC, "Linux") == installer.READY
    changed = load_spec(REPO).__class__(**{**SPEC.__dict__, "fingerprint": "other"})  # a plugin update
    assert installer.environment_state(venv, changed, "Linux") == installer.INCOMPLETE


def test_remove_deletes_an_environment_and_nothing_else(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(SetupError, match="not a Python environment"):
        installer.remove_environment(tmp_path / "data")
    assert (tmp_path / "data").is_dir()
    venv = fake_venv(tmp_path)
    installer.remove_environment(venv)
    assert not venv.exists() and (tmp_path / "tilescribe").is_dir()


def test_the_bootstrap_needs_only_the_standard_library():
    """QGIS's own Python runs it before any environment exists."""
    import ast

    stdlib = set(sys.stdlib_module_names)
    outside = {}
    for path in (REPO / "plugin" / "bootstrap").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            bad = [name for name in names if name.split(".")[0] not in stdlib | {"__future__"}]
            if bad:
                outside[path.name] = bad
    assert outside == {}


# -- where llama-cpp-python comes from: the cache, a prebuilt wheel, else compiled here ------

def llama_run(tmp_path, monkeypatch, compiler, prebuilt_ok, proofs=None, flags="flags: avx2"):
    """The llama step with pip replaced by a recorder (pip itself runs in the end-to-end test);
    `proofs`: the build checks' outcomes in order (None: no check, as with --no-verify)."""
    from tilescribe.plugin.bootstrap.installer import Installer, Preparation, SetupOptions

    calls = []

    def fake_run(argv, log, env, on_line, cancelled, cwd=None):
        calls.append((list(argv), env.get("CMAKE_ARGS")))
        if "wheel" in argv:  # what `pip wheel -w FOLDER` leaves behind
            folder = Path(argv[argv.index("-w") + 1])
            (folder / f"llama_cpp_python-{SPEC.llama_version}-py3-none-linux_x86_64.whl").write_text("")
        return 0 if prebuilt_ok or "--only-binary" not in argv else 1

    monkeypatch.setattr(installer, "run_command", fake_run)
    if proofs is not None:
        outcomes = iter(proofs)
        monkeypatch.setattr(installer, "prove", lambda python, engine, models, env, server=None: next(outcomes))
    facts = MachineFacts("Linux", "x86_64", cpu_flags=flags, compiler=compiler)
    choice = choose_build(facts, SPEC)
    options = SetupOptions(REPO, tmp_path / "profile", verify=proofs is not None,
                           env={"TILESCRIBE_WHEEL_CACHE": str(tmp_path / "wheels"), "TILESCRIBE_CACHE": str(tmp_path)})
    prep = Preparation(SPEC, facts, choice, tmp_path / "python", None, EnvState(True), None, [])
    steps = plan(EnvState(True, True), SPEC, choice, plans.PREBUILT_OR_COMPILE, verify=False)
    inst = Installer(options)
    inst.log = CommandLog(tmp_path / "setup.log")
    inst._llama(prep, steps[-1], StepProgress({"llama": 1}, lambda *a: None))
    return calls, choice, tmp_path / "wheels" / choice.cache_folder


def test_a_prebuilt_wheel_ends_the_llama_step(tmp_path, monkeypatch):
    calls, choice, _ = llama_run(tmp_path, monkeypatch, None, prebuilt_ok=True)
    [(argv, _)] = calls
    assert f"{SPEC.llama_wheel_index}/cpu" in argv and "--only-binary" in argv


def test_without_prebuilt_wheel_it_compiles_once_into_the_shared_cache(tmp_path, monkeypatch):
    calls, choice, folder = llama_run(tmp_path, monkeypatch, "g++", prebuilt_ok=False)
    kinds = [("wheel" if "wheel" in argv else "prebuilt" if "--only-binary" in argv else "install", cmake)
             for argv, cmake in calls]
    assert kinds == [("prebuilt", None), ("wheel", choice.llama_cmake_args), ("install", None), ("install", None)]
    assert calls[2][0][-1].startswith(str(folder))  # the wheel it built, kept for the next setup
    note = f"Compiling llama-cpp-python {SPEC.llama_version} ({choice.variants[0].name}: "
    assert note in (tmp_path / "setup.log").read_text()


def test_a_build_that_dies_in_its_check_is_recorded_and_the_next_variant_is_compiled(tmp_path, monkeypatch):
    from tilescribe.plugin.bootstrap.llama_variants import Proof, cpu_key, read_record

    flags = "flags: avx avx2 fma f16c bmi2 avx512f avx512cd avx512vl avx512dq avx512bw amx_tile"
    died = Proof("in-process", False, "killed by SIGILL: tilezero", "SIGILL")
    calls, choice, _ = llama_run(tmp_path, monkeypatch, "g++", prebuilt_ok=False, flags=flags,
                                 proofs=[died, Proof("in-process", True, "captioned with Q4_K_M+Q8_0")])
    compiled = [cmake for argv, cmake in calls if "wheel" in argv]
    assert compiled == [choice.variants[0].cmake_string, choice.variants[1].cmake_string]
    assert [v.name for v in choice.variants[:2]] == ["avx512", "avx2"]
    record = read_record(tmp_path / "wheels" / choice.variants[0].cache_name, cpu_key(flags, "x86_64"),
                         "in-process")
    assert record["ok"] is False and record["signal"] == "SIGILL"
    assert "avx512 build check: FAILED (killed by SIGILL" in (tmp_path / "setup.log").read_text()
    # the next setup on this CPU starts from the build that passed, never the one that died
    options = installer.SetupOptions(REPO, tmp_path / "profile",
                                     env={"TILESCRIBE_WHEEL_CACHE": str(tmp_path / "wheels")})
    facts = MachineFacts("Linux", "x86_64", cpu_flags=flags, compiler="g++")
    assert [v.name for v in installer.usable_variants(options, choice, facts)] == ["avx2", "baseline"]


def test_without_prebuilt_wheel_or_compiler_it_says_what_to_install(tmp_path, monkeypatch):
    with pytest.raises(SetupError, match="no C\\+\\+ compiler to build one.*build-essential"):
        llama_run(tmp_path, monkeypatch, None, prebuilt_ok=False)


def test_an_unchecked_run_leaves_no_ready_stamp(tmp_path):
    from tilescribe.plugin.bootstrap.installer import Installer, Preparation, SetupOptions

    options = SetupOptions(REPO, tmp_path / "profile", verify=False)
    venv = fake_venv(tmp_path / "profile")
    prep = Preparation(SPEC, MachineFacts("Linux", "x86_64"), CPU, venv / "bin" / "python", None,
                       EnvState(True, True), None, [])
    result = Installer(options).run(prep)
    assert result.check is None and result.log.is_file()
    assert installer.environment_state(venv, SPEC, "Linux") == installer.INCOMPLETE
