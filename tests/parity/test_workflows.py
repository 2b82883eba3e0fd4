"""The GitHub workflows (.github/workflows/) are data for GitHub; here we hold them to what they promise:
every command they run exists in this repository (tox envs, tools), actions are pinned to commit SHAs, the
test jobs hold no write permission, and the posting workflow_run job never checks out or runs the pull
request's code (no checkout, no run step; the artifact read as data, its head SHA checked). With zizmor
installed (the lint extra), its only finding is the documented workflow_run trigger."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from nanobragg_torch.parity.goldens import repo_root
from nanobragg_torch.parity.prreport import MARKER

ROOT = repo_root()
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _load(path):
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def _tox_envs() -> set[str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    return {"py"} | {s.split(":", 1)[1] for s in ini.sections() if s.startswith("testenv:")}


def _commands(script: str) -> list[list[str]]:
    """The simple commands of a run script (continuations joined; split at ;, &&, ||, |, if/then)."""
    text = re.sub(r"\\\n\s*", " ", script)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        line = line.split(" #", 1)[0]
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
            words = shlex.split(part, posix=True) if part else []
            while words and words[0] in ("if", "then", "elif", "else", "fi", "do", "done", "!"):
                words = words[1:]
            if words:
                out.append(words)
    return out


def _steps():
    for wf in WORKFLOWS:
        doc = _load(wf)
        for job_id, job in doc["jobs"].items():
            for step in job.get("steps", []):
                yield wf.name, doc, job_id, job, step


def test_there_are_the_two_workflows():
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "drift-comment.yml"}


def test_every_command_a_workflow_runs_exists_here():
    envs, seen = _tox_envs(), set()
    for name, _, job_id, _, step in _steps():
        for words in _commands(step.get("run", "")):
            where = f"{name}:{job_id}: {' '.join(words)}"
            if words[0] == "tox":
                assert "-e" in words, where
                for env in words[words.index("-e") + 1].split(","):
                    assert env in envs, f"{where}: no tox env {env}"
                    seen.add(f"tox -e {env}")
            for w in words:
                if re.match(r"^(tools|tests|nanobragg_torch)/", w):
                    assert (ROOT / w).exists(), f"{where}: {w} does not exist"
                    seen.add(w)
                m = re.match(r"^\.tox/([\w.-]+)/bin/python$", w)
                if m:
                    assert m.group(1) in envs, f"{where}: no tox env {m.group(1)}"
    for must in ("tox -e lint", "tox -e py", "tox -e cuda", "tools/pr_report.py", "tools/snapshot_patch.py",
                 "tools/ci_annotate.py"):
        assert must in seen, f"no workflow runs {must}"


def test_lint_env_checks_every_workflow():
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    cmds = ini["testenv:lint"]["commands"]
    assert "zizmor --offline .github/workflows" in cmds
    schema = next(line for line in cmds.splitlines() if "check-jsonschema" in line)
    assert "--builtin-schema vendor.github-workflows" in schema
    for wf in WORKFLOWS:
        assert f".github/workflows/{wf.name}" in schema, wf.name


def test_actions_are_pinned_to_commit_shas():
    for name, _, job_id, _, step in _steps():
        if "uses" in step:
            assert re.match(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$", step["uses"]), f"{name}:{job_id}: {step['uses']}"


def test_jobs_that_run_pull_request_code_hold_no_write_permission():
    ci = _load(ROOT / ".github" / "workflows" / "ci.yml")
    assert set(ci["on"]) == {"pull_request", "push"}
    assert ci["permissions"] == {"contents": "read"}
    for job_id, job in ci["jobs"].items():
        assert "write" not in json.dumps(job.get("permissions", {})), job_id
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, job_id
    test = ci["jobs"]["test"]
    assert test["strategy"]["matrix"]["python"] == ["3.11", "3.12", "3.13"]
    names = [s.get("uses", "") for s in test["steps"]]
    upload = test["steps"][next(i for i, u in enumerate(names) if u.startswith("actions/upload-artifact@"))]
    assert upload["if"] == "${{ !cancelled() }}" and "drift-report/" in upload["with"]["path"]
    assert ".tox/drift/py/" in upload["with"]["path"]
    assert ci["jobs"]["cuda"]["if"] == "${{ vars.NB_GPU_RUNNER == 'true' }}"
    assert ci["jobs"]["cuda-skipped"]["if"] == "${{ vars.NB_GPU_RUNNER != 'true' }}"


def test_the_posting_job_never_checks_out_or_runs_the_pull_request():
    doc = _load(ROOT / ".github" / "workflows" / "drift-comment.yml")
    ci = _load(ROOT / ".github" / "workflows" / "ci.yml")
    assert set(doc["on"]) == {"workflow_run"} and doc["on"]["workflow_run"]["workflows"] == [ci["name"]]
    assert doc["permissions"] == {}
    (job,) = doc["jobs"].values()
    assert job["permissions"] == {"pull-requests": "write", "actions": "read"}
    uses = [s.get("uses", "").split("@")[0] for s in job["steps"]]
    assert uses == ["actions/download-artifact", "actions/github-script"]
    assert not any("run" in s for s in job["steps"])  # no shell at all
    download, script = job["steps"]
    assert download["with"]["path"].startswith("${{ runner.temp }}/")
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    # the artifact it downloads is the one ci.yml uploads for the comment's Python
    assert download["with"]["name"] == f"drift-report-{ci['env']['COMMENT_PYTHON']}"
    js = script["with"]["script"]
    assert "${{" not in js  # no expression is pasted into the script: inputs come through env
    assert set(re.findall(r"require\('([^']+)'\)", js)) == {"fs", "path"}
    for forbidden in ("child_process", "eval(", "Function(", "exec", "import("):
        assert forbidden not in js, forbidden
    assert "process.env.RUN_HEAD_SHA" in js and "pr.head.sha !== headSha" in js
    assert MARKER in js and "updateComment" in js and "createComment" in js and "deleteComment" not in js


@pytest.mark.skipif(shutil.which("zizmor") is None, reason="zizmor not installed (pip install .[lint])")
def test_zizmor_finds_only_the_documented_trigger():
    out = subprocess.run(["zizmor", "--offline", "--no-ignores", "--format", "json", ".github/workflows"],
                         capture_output=True, text=True, cwd=ROOT)
    findings = json.loads(out.stdout)

    def where(f) -> str:  # the workflow file of a finding's first location (the key's layout varies by version)
        return re.findall(r"[\w.-]+\.yml", json.dumps(f["locations"][0]["symbolic"]["key"]))[0]

    serious = {(f["ident"], where(f)) for f in findings if f["determinations"]["severity"] in ("Medium", "High")}
    assert serious == {("dangerous-triggers", "drift-comment.yml")}
