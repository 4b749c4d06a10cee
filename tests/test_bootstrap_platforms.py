"""The bootstrap's per-OS rules (interpreter discovery, paths, builds, compilers), on any OS."""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from tilescribe.plugin.bootstrap import builds, platforms
from tilescribe.plugin.bootstrap.builds import MachineFacts, UnsupportedPlatform, choose_build
from tilescribe.plugin.bootstrap.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SPEC = load_spec(REPO)
HOME = Path("/home/ana")


# -- interpreter discovery ----------------------------------------------------------------

def test_windows_osgeo4w_qgis_binary_leads_to_its_python():
    interp = platforms.Interpreter("Windows", r"C:\OSGeo4W\bin\qgis-bin.exe", r"C:\OSGeo4W\apps\Python312",
                                   r"C:\OSGeo4W\apps\Python312", (3, 12))
    found = platforms.python_candidates(interp)
    assert found[0] == PureWindowsPath(r"C:\OSGeo4W\apps\Python312\python.exe")
    assert PureWindowsPath(r"C:\OSGeo4W\bin\python3.exe") in found
    assert not [path for path in found if path.name.lower().startswith("qgis")]


def test_windows_standalone_installer_paths_with_spaces():
    interp = platforms.Interpreter("Windows", r"C:\Program Files\QGIS 3.34.4\bin\qgis-ltr-bin.exe",
                                   r"C:\PROGRA~1\QGIS33~1.4\apps\Python39", r"C:\PROGRA~1\QGIS33~1.4\apps\Python39",
                                   (3, 9))
    assert platforms.python_candidates(interp)[0] == PureWindowsPath(r"C:\PROGRA~1\QGIS33~1.4\apps\Python39\python.exe")


def test_macos_bundle_executable_is_qgis_not_python():
    interp = platforms.Interpreter("Darwin", "/Applications/QGIS.app/Contents/MacOS/QGIS",
                                   "/Applications/QGIS.app/Contents/Frameworks/Python.framework/Versions/3.10",
                                   "/Applications/QGIS.app/Contents/Frameworks/Python.framework/Versions/3.10",
                                   (3, 10))
    found = platforms.python_candidates(interp)
    assert found[0] == PurePosixPath("/Applications/QGIS.app/Contents/Frameworks/Python.framework/Versions/3.10/"
                                     "bin/python3.10")
    assert PurePosixPath("/Applications/QGIS.app/Contents/MacOS/bin/python3") in found  # older bundles
    assert PurePosixPath("/Applications/QGIS.app/Contents/MacOS/QGIS") not in found


def test_relocated_build_is_found_through_bindir():
    """vcpkg-style builds: the interpreter lies in <prefix>/tools/python3, which BINDIR names."""
    interp = platforms.Interpreter("Darwin", "/opt/qgis/QGIS.app/Contents/MacOS/QGIS", "/opt/qgis/Contents",
                                   "/opt/qgis/Contents", (3, 12), "/opt/qgis/Contents/tools/python3/bin")
    assert PurePosixPath("/opt/qgis/Contents/tools/python3/python3.12") in platforms.python_candidates(interp)


def test_linux_inside_a_venv_prefers_the_base_python():
    interp = platforms.Interpreter("Linux", "/work/.venv/bin/python", "/work/.venv", "/usr", (3, 11))
    found = platforms.python_candidates(interp)
    assert found[0] == PurePosixPath("/usr/bin/python3.11")
    assert found.index(PurePosixPath("/work/.venv/bin/python")) > found.index(PurePosixPath("/usr/bin/python3"))


def test_discovery_finds_this_python_with_its_own_version():
    from tilescribe.plugin.bootstrap.installer import find_base_python, python_version

    found = find_base_python({"PATH": "/usr/bin:/bin"})
    assert found is not None
    assert python_version(found, {"PATH": "/usr/bin:/bin"}) == platforms.Interpreter.current().version


def test_a_named_program_that_is_not_python_is_refused(tmp_path):
    from tilescribe.plugin.bootstrap.installer import python_version

    assert python_version(Path("/bin/true"), {}) is None
    assert python_version(tmp_path / "missing-python", {}) is None


# -- paths ----------------------------------------------------------------------------------

@pytest.mark.parametrize("system, relative", [("Windows", "Scripts/python.exe"), ("Darwin", "bin/python"),
                                              ("Linux", "bin/python")])
def test_venv_python_per_system(system, relative):
    assert platforms.venv_python(Path("/p/venv"), system) == Path("/p/venv") / relative


def test_only_linux_sees_the_system_packages():
    assert platforms.venv_arguments("Linux") == ["--system-site-packages"]
    assert platforms.venv_arguments("Windows") == platforms.venv_arguments("Darwin") == []


def test_environment_lives_in_the_profile_not_the_plugin_folder():
    profile = HOME / ".local/share/QGIS/QGIS3/profiles/default"
    plugin = profile / "python" / "plugins" / "tilescribe"
    assert platforms.profile_from_plugin_dir(plugin) == profile
    venv = platforms.environment_dir(profile)
    assert venv == profile / "tilescribe" / "venv" and plugin not in venv.parents
    assert platforms.profile_from_plugin_dir(Path("/work/checkout")) is None


def test_default_profile_per_system():
    assert platforms.default_profile_dir("Windows", {"APPDATA": r"C:\Users\ana\AppData\Roaming"}, HOME) == \
        Path(r"C:\Users\ana\AppData\Roaming") / "QGIS/QGIS3/profiles/default"
    assert platforms.default_profile_dir("Darwin", {}, HOME) == \
        HOME / "Library/Application Support/QGIS/QGIS3/profiles/default"
    assert platforms.default_profile_dir("Linux", {}, HOME) == HOME / ".local/share/QGIS/QGIS3/profiles/default"


def test_wheel_cache_per_system_and_override():
    assert platforms.wheel_cache("Linux", {}, HOME) == HOME / ".cache/tilescribe/wheels"  # setup.sh's
    assert platforms.wheel_cache("Linux", {"XDG_CACHE_HOME": "/c"}, HOME) == Path("/c/tilescribe/wheels")
    assert platforms.wheel_cache("Darwin", {}, HOME) == HOME / "Library/Caches/tilescribe/wheels"
    assert platforms.wheel_cache("Windows", {"LOCALAPPDATA": "L"}, HOME) == Path("L/tilescribe/cache/wheels")
    assert platforms.wheel_cache("Windows", {"TILESCRIBE_WHEEL_CACHE": "/w"}, HOME) == Path("/w")


def test_commands_run_without_qgis_python_variables():
    env = platforms.subprocess_environment({"PYTHONHOME": "C:/QGIS/apps/Python312", "PYTHONPATH": "x",
                                            "PIP_USER": "1", "PATH": "p"})
    assert "PYTHONHOME" not in env and "PYTHONPATH" not in env and "PIP_USER" not in env
    assert env["PATH"] == "p" and env["PYTHONNOUSERSITE"] == "1"


# -- builds ---------------------------------------------------------------------------------

def facts(system="Linux", machine="x86_64", **kw) -> MachineFacts:
    return MachineFacts(system, machine, cpu_flags="flags\t\t: fpu sse2 avx2", **kw)


def test_linux_without_gpu_takes_torch_cpu_index():
    choice = choose_build(facts(), SPEC)
    assert (choice.accelerator, choice.torch_index, choice.llama_variant) == ("cpu", SPEC.torch_cpu_index, "cpu")
    # never -march=native (AMX kernels crash on recent Xeons): the first safe variant for these flags
    assert "-DGGML_NATIVE=OFF" in choice.llama_cmake_args and "-DGGML_AMX_INT8=OFF" in choice.llama_cmake_args
    assert choice.cache_folder == choice.variants[0].cache_name and choice.notes == ()


def test_linux_gpu_with_nvcc_builds_cuda_into_setup_sh_folder():
    choice = choose_build(facts(nvidia_gpu=True, cuda_compiler=True), SPEC)
    assert choice.accelerator == "cuda" and choice.torch_index is None  # PyPI's Linux torch is the CUDA one
    assert "-DGGML_CUDA=ON" in choice.llama_cmake_args and choice.cache_folder.split("-r")[0].endswith("-cuda")


def test_linux_gpu_without_nvcc_keeps_llama_on_cpu_and_says_so():
    choice = choose_build(facts(nvidia_gpu=True), SPEC)
    assert choice.accelerator == "cuda" and "GGML_CUDA" not in choice.llama_cmake_args
    assert "nvcc" in choice.notes[0] and "cuda" not in choice.cache_folder


def test_gpu_not_wanted_or_not_there():
    assert choose_build(facts(nvidia_gpu=True, cuda_compiler=True), SPEC, want_gpu=False).accelerator == "cpu"
    wanted = choose_build(facts(), SPEC, want_gpu=True)
    assert wanted.accelerator == "cpu" and "No usable NVIDIA GPU" in wanted.notes[0]


def test_windows_torch_cpu_is_pypis_cuda_from_torch_index():
    assert choose_build(facts("Windows", "AMD64"), SPEC).torch_index is None
    cuda = choose_build(facts("Windows", "AMD64", nvidia_gpu=True), SPEC)
    assert cuda.torch_index == SPEC.torch_cuda_index and cuda.llama_variant == builds.CUDA_LLAMA_VARIANT


def test_apple_silicon_uses_metal_intel_mac_is_refused():
    choice = choose_build(facts("Darwin", "arm64"), SPEC)
    assert (choice.accelerator, choice.llama_variant, choice.torch_index) == ("metal", "metal", None)
    with pytest.raises(UnsupportedPlatform, match="Intel Macs"):
        choose_build(facts("Darwin", "x86_64"), SPEC)


def test_plugin_setup_and_setup_sh_share_one_build_folder():
    """scripts/setup.sh runs llama_build, which names folders as the plugin's choice does: one cache."""
    from tilescribe.plugin.bootstrap.llama_build import RuntimeBuilder

    flags = "flags\t\t: fpu sse2 avx avx2 fma f16c bmi2 avx512f avx512cd avx512vl avx512dq avx512bw amx_tile"
    choice = choose_build(MachineFacts("Linux", "x86_64", cpu_flags=flags), SPEC)
    builder = RuntimeBuilder(Path("python"), Path("llama_cpp_python-0.3.36.tar.gz"), Path("cache"),
                             cpu_flags=flags, machine="x86_64", gpu_args=[])
    assert [v.cache_name for v in builder.variants()] == [v.cache_name for v in choice.variants]
    assert "setup.sh" in (REPO / "scripts" / "setup.sh").name and \
        "tilescribe.plugin.bootstrap.llama_build" in (REPO / "scripts" / "setup.sh").read_text()


@pytest.mark.parametrize("system, which, ok, expected", [
    ("Linux", {"g++"}, True, "g++"),
    ("Linux", set(), True, None),
    ("Darwin", set(), True, "clang (Xcode Command Line Tools)"),
    ("Darwin", set(), False, None),
    ("Windows", {"cl"}, False, "MSVC (Visual Studio Build Tools)"),
    ("Windows", set(), False, None),
])
def test_compiler_detection(system, which, ok, expected):
    found = builds.find_compiler(system, {}, lambda name: name if name in which else None, lambda argv: ok)
    assert found == expected


@pytest.mark.parametrize("system, hint", [("Linux", "build-essential"), ("Darwin", "xcode-select --install"),
                                          ("Windows", "Build Tools for Visual Studio")])
def test_compiler_advice_names_what_to_install(system, hint):
    assert hint in builds.compiler_advice(system)
