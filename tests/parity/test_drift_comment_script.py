"""The posting job's script (drift-comment.yml, actions/github-script) run under Node with a mocked GitHub
API: one comment, created once and edited on each push, rewritten (not deleted) when the drift is gone,
none for a clean pull request; an artifact whose head SHA is not the run's, or a pull request that moved on,
posts nothing; a user's comment that copies the marker is never edited. Skips without node."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from nanobragg_torch.parity.goldens import repo_root
from nanobragg_torch.parity.prreport import MARKER

ROOT = repo_root()
SHA = "a" * 40
HARNESS = r"""
const fs = require('fs');
const state = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const calls = [];
const github = {
  rest: {
    pulls: {get: async ({pull_number}) => {
      calls.push(['get', pull_number]);
      return {data: {head: {sha: state.prHead}}};
    }},
    issues: {
      listComments: 'listComments',
      updateComment: async (p) => { calls.push(['update', p.comment_id, p.body]); },
      createComment: async (p) => { calls.push(['create', p.issue_number, p.body]); },
      deleteComment: async (p) => { calls.push(['delete', p.comment_id]); },
    },
  },
  paginate: async (fn, p) => { calls.push(['list', p.issue_number]); return state.comments; },
};
const context = {repo: {owner: 'o', repo: 'r'}};
const core = {setFailed: (m) => calls.push(['failed', m]), notice: (m) => calls.push(['notice', m])};
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
const run = new AsyncFunction('require', 'github', 'context', 'core', fs.readFileSync(process.argv[3], 'utf8'));
run(require, github, context, core).then(() => console.log(JSON.stringify(calls)));
"""


@pytest.fixture
def post(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed")
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / "drift-comment.yml").read_text())
    step = doc["jobs"]["comment"]["steps"][1]
    (tmp_path / "script.js").write_text(step["with"]["script"])
    (tmp_path / "harness.js").write_text(HARNESS)

    def run(comment: str | None, comments=(), head_sha=SHA, pr_head=SHA, run_sha=SHA, pr_number="7"):
        art = tmp_path / "art"
        shutil.rmtree(art, ignore_errors=True)
        art.mkdir()
        (art / "head_sha").write_text(head_sha + "\n")
        (art / "pr_number").write_text(pr_number + "\n")
        if comment is not None:
            (art / "comment.md").write_text(comment)
        (tmp_path / "state.json").write_text(json.dumps({"prHead": pr_head, "comments": list(comments)}))
        env = {"PATH": "/usr/bin:/bin", "ARTIFACT_DIR": str(art), "RUN_HEAD_SHA": run_sha, "RUN_URL": "https://x/run"}
        out = subprocess.run([node, str(tmp_path / "harness.js"), str(tmp_path / "state.json"),
                              str(tmp_path / "script.js")], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        return [c for c in json.loads(out.stdout) if c[0] not in ("get", "list")]

    return run


DRIFT = f"{MARKER}\n## Drift report\n\nThis branch changes 3 snapshots (3 changed) against `main`.\n"
CLEAN = f"{MARKER}\n## Drift report\n\n**No snapshot or golden changed** against `main`.\n"


def test_one_comment_created_then_edited_then_rewritten(post):
    (call,) = post(DRIFT)
    assert call[0] == "create" and call[1] == 7 and call[2].startswith(DRIFT) and SHA[:12] in call[2]
    mine = {"id": 11, "user": {"type": "Bot", "login": "github-actions[bot]"}, "body": call[2]}
    (call,) = post(DRIFT.replace("3 snapshots", "4 snapshots"), [mine])
    assert call[:2] == ["update", 11] and "4 snapshots" in call[2]
    (call,) = post(CLEAN, [mine])  # the drift is gone: the same comment says so
    assert call[:2] == ["update", 11] and "**No snapshot or golden changed**" in call[2]


def test_a_clean_pull_request_gets_no_comment(post):
    assert post(CLEAN) == []


def test_untrusted_artifact_and_moved_pull_request_post_nothing(post):
    (call,) = post(DRIFT, head_sha="b" * 40)
    assert call[0] == "failed" and "is not the run's" in call[1]
    (call,) = post(DRIFT, pr_head="c" * 40)
    assert call[0] == "notice" and "now at" in call[1]
    (call,) = post(DRIFT, pr_number="7; rm -rf /")
    assert call[0] == "failed"


def test_a_users_comment_with_the_marker_is_left_alone(post):
    theirs = [{"id": 5, "user": {"type": "User", "login": "someone"}, "body": DRIFT},
              {"id": 6, "user": {"type": "Bot", "login": "other-app[bot]"}, "body": DRIFT}]
    (call,) = post(DRIFT, theirs)
    assert call[0] == "create"
