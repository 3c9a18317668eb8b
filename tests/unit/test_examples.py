"""Every example takes --help, fails with one line on missing or bad arguments, and passes
mypy --strict; the Kubernetes manifest is a well-formed Indexed Job that shards the scan."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py") if not path.name.startswith("_"))
BLOCK = "198.19.0.0/24:80"  # the lab's many block; never reached: the arguments are refused
# Arguments each example refuses. No arguments at all is demo.py's normal run (it brings the
# lab up), so it is tried with an argument it does not take instead.
BAD_ARGUMENTS = {
    "library_syn.py": [[], ["127.0.0.1"], ["127.0.0.1", "0"], ["127.0.0.1", "http"],
                       ["127.0.0.1", "80", "--count", "0"], ["127.0.0.1", "80", "--bogus"]],
    "demo.py": [["extra"], ["--bogus"]],
    "library_timewait.py": [[], ["198.18.0.18"], ["198.18.0.18", "0"], ["198.18.0.18", "80x"],
                            ["198.18.0.18", "80", "--bogus"]],
    "library_scan.py": [[], [BLOCK, "--rate", "0"], [BLOCK, "--rate", "x"],
                        [BLOCK, "--shard", "0/4"], [BLOCK, "--shard", "5/4"],
                        [BLOCK, "--wait", "-1"], [BLOCK, "--seed", "1.5"], [BLOCK, "--bogus"]],
    "library_monitor.py": [[], ["198.18.0.18"], ["198.18.0.18:80", "--rounds", "0"],
                           ["198.18.0.18:80", "--bogus"]],
}
K8S = EXAMPLES / "k8s"


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                          text=True, timeout=60)


def test_every_example_is_covered() -> None:
    assert set(SCRIPTS) == set(BAD_ARGUMENTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script: str) -> None:
    done = run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script}")
    assert done.stderr == ""


@pytest.mark.parametrize(("script", "args"),
                         [(s, a) for s, cases in BAD_ARGUMENTS.items() for a in cases])
def test_bad_arguments_are_one_line(script: str, args: list[str]) -> None:
    done = run(script, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), done.stderr


def test_examples_pass_mypy_strict() -> None:
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    if mypy is None and importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    argv = [mypy] if mypy else [sys.executable, "-m", "mypy"]
    done = subprocess.run([*argv, "--strict", "--no-error-summary", *sorted(
        str(path) for path in EXAMPLES.glob("*.py"))], capture_output=True, text=True,
        timeout=300, cwd=EXAMPLES.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_k8s_manifest_is_an_indexed_job_that_shards() -> None:
    text = (K8S / "scan-job.yaml").read_text()
    assert "\t" not in text  # YAML indents with spaces only
    # Without a YAML parser (no dependency for it), the lines that make it a sharded scan:
    for needed in ("kind: Job", "completionMode: Indexed", "JOB_COMPLETION_INDEX + 1",
                   "--shard", "--seed", "NET_RAW", "NET_ADMIN", "hostNetwork:", "--format jsonl"):
        assert needed in text, needed
    completions = re.search(r"^\s*completions: (\d+)", text, re.MULTILINE)
    shards = re.search(r"name: SHARDS\s+value: \"(\d+)\"", text)
    assert completions and shards and completions[1] == shards[1]
    assert (K8S / "README.md").read_text().count("cat /results/") >= 1


def test_k8s_manifest_parses() -> None:
    import yaml  # a test dependency (pyproject.toml), so CI parses the manifest for real
    documents = [d for d in yaml.safe_load_all((K8S / "scan-job.yaml").read_text()) if d]
    job = next(d for d in documents if d["kind"] == "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    container = spec["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert int(env["SHARDS"]) == spec["completions"]
    assert "--shard" in " ".join(container["args"])
    assert set(container["securityContext"]["capabilities"]["add"]) == {"NET_RAW", "NET_ADMIN"}
    kinds = {d["kind"] for d in documents}
    assert {"ConfigMap", "Job", "PersistentVolumeClaim"} <= kinds
