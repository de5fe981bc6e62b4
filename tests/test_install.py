"""Bring your own torch: pyproject.toml declares ranges, and the README's install into an existing
environment keeps that environment's torch. Checked offline with pip's own resolver: a throw-away
environment holds fake installed distributions (a torch of the range, and every other dependency at
its locked version), a local folder of fake wheels offers a newer torch and the torchvisions that
pin each torch, and `pip install --dry-run --report` says what the documented command would do."""

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OLD_TORCH = "2.4.1"
NGC_TORCH = "2.6.0a0+ecf3bae40a.nv25.1"  # how an NGC container's torch calls itself


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _requirements(extra: str | None = None) -> list[Requirement]:
    lines = PYPROJECT["dependencies"] if extra is None else PYPROJECT["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def _metadata(name: str, version: str, requires: list[str]) -> str:
    return "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                    *(f"Requires-Dist: {r}\n" for r in requires)])


def _fake_installed(site: Path, name: str, version: str) -> None:
    info = site / f"{re.sub(r'[-.]+', '_', name)}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(_metadata(name, version, []))
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def _fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    stem = f"{re.sub(r'[-.]+', '_', name)}-{version}"
    with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{stem}.dist-info/METADATA", _metadata(name, version, requires))
        whl.writestr(f"{stem}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{stem}.dist-info/RECORD", "")


def test_the_lock_is_inside_the_declared_ranges():
    """CI and the demo run the lock: it must be one of the environments pyproject.toml allows."""
    lock = _lock()
    for extra in (None, *PYPROJECT["optional-dependencies"]):
        for req in _requirements(extra):
            name = canonicalize_name(req.name)
            if name in lock:
                assert req.specifier.contains(lock[name], prereleases=True), (req, lock[name])
            else:
                assert extra == "imagenet-hard", f"{req} is neither in requirements.lock nor an optional extra"


def test_every_imported_package_is_declared():
    """A module the package imports (scipy!) is a dependency or in an extra; test-only ones are not."""
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    declared = {canonicalize_name(r.name) for extra in (None, *PYPROJECT["optional-dependencies"])
                for r in _requirements(extra)}
    base = {canonicalize_name(r.name) for r in _requirements()}
    imported = set()
    for path in (ROOT / "beyond_imagenet").rglob("*.py"):
        for match in re.finditer(r"^\s*(?:from (\w+)[\w.]* import |import (\w+))", path.read_text(), re.MULTILINE):
            imported.add(match.group(1) or match.group(2))
    stdlib = set(sys.stdlib_module_names) | {"beyond_imagenet", "__future__"}
    missing = []
    for module in sorted(imported - stdlib):
        # Not installed here (pyarrow): its distribution is named like the module.
        names = {canonicalize_name(d) for d in dists.get(module, [module])}
        if module == "imagecorruptions":  # installed --no-deps from requirements-nodeps.txt (README)
            continue
        if not names & declared:
            missing.append(f"{module} ({', '.join(sorted(names)) or 'not installed here'})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    # Test-only packages stay out of the dependencies.
    assert "scikit-learn" not in base and "pytest" not in base


@pytest.fixture(scope="module")
def project_wheel(tmp_path_factory):
    """The project built as pip would build it (setuptools, from a copy: nothing written here)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "beyond_imagenet", src / "beyond_imagenet",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(out), str(src)], check=True, capture_output=True, text=True)
    return next(out.glob("beyond_imagenet-*.whl"))


def _environment(tmp_path: Path, torch_version: str, project_wheel: Path) -> tuple[Path, Path]:
    """A bare environment with `torch_version` and every other dependency but torchvision
    installed (fakes), and a wheel folder offering a newer torch and a torchvision for each."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next((env / "lib").glob("python3*/site-packages"))
    lock = _lock()
    _fake_installed(site, "torch", torch_version)
    for req in _requirements():
        name = canonicalize_name(req.name)
        if name not in ("torch", "torchvision"):
            _fake_installed(site, name, lock[name])
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    shutil.copy(project_wheel, wheels)
    base = torch_version.split("+")[0]
    _fake_wheel(wheels, "torch", lock["torch"], [])
    _fake_wheel(wheels, "torchvision", lock["torchvision"], [f"torch=={lock['torch']}"])
    # The torchvision built for the installed torch (PyPI's pin exactly; NGC's matches the base).
    _fake_wheel(wheels, "torchvision", "0.19.1" if base == OLD_TORCH else "0.21.0a0",
                [f"torch=={OLD_TORCH}" if base == OLD_TORCH else f"torch=={torch_version}"])
    return env, wheels


def _dry_run(env: Path, wheels: Path, tmp_path: Path, *options: str) -> dict[str, str]:
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "--dry-run",
         "--quiet", "--report", str(report), "--no-index", "--find-links", str(wheels), *options,
         "beyond-imagenet"],
        check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
            for i in json.loads(report.read_text())["install"]}


@pytest.mark.parametrize("torch_version", [OLD_TORCH, NGC_TORCH])
def test_documented_install_keeps_the_environments_torch(tmp_path, project_wheel, torch_version):
    env, wheels = _environment(tmp_path, torch_version, project_wheel)
    # README: python -m beyond_imagenet.keep_torch > keep-torch.txt (run inside the environment).
    keep = subprocess.run([str(env / "bin" / "python"), "-m", "beyond_imagenet.keep_torch"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    assert f"torch=={torch_version}" in keep.splitlines()
    (tmp_path / "keep-torch.txt").write_text(keep)
    planned = _dry_run(env, wheels, tmp_path, "-c", str(tmp_path / "keep-torch.txt"))
    assert "torch" not in planned, f"the documented install would replace torch {torch_version}: {planned}"
    assert planned["beyond-imagenet"] == PYPROJECT["version"]
    assert planned["torchvision"] != _lock()["torchvision"]  # the one built for the installed torch


def test_without_the_constraint_pip_would_replace_torch(tmp_path, project_wheel):
    """Why the README's constraint is there: a plain install takes the newest torchvision, which
    pins another torch, and pip swaps the environment's torch for it."""
    env, wheels = _environment(tmp_path, OLD_TORCH, project_wheel)
    planned = _dry_run(env, wheels, tmp_path)
    assert planned.get("torch") == _lock()["torch"]


def test_a_torch_below_the_range_is_not_kept(tmp_path, project_wheel):
    """The range is enforced: with torch 2.1 installed and no other torch on offer, pip refuses."""
    env, wheels = _environment(tmp_path, "2.1.2", project_wheel)
    for whl in wheels.glob("torch-*.whl"):
        whl.unlink()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "--dry-run", "--quiet",
         "--no-index", "--find-links", str(wheels), "beyond-imagenet"], check=False, capture_output=True, text=True)
    assert result.returncode != 0 and "torch" in result.stderr
