"""Small runs committed without git fast-import (reprise.run.git_pack), checked by git itself."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import git
import pytest

from reprise import FlowDefinition, FlowRunner, Initial, Ref, RunContext
from reprise.errors import RunSetupError
from reprise.run import outcome_repo
from reprise.run.git_pack import PackBuilder, can_write_directly, create_branch
from reprise.run.outcome_repo import OutcomeFile, OutcomeRepository, OutcomeSettings

REAL_GIT = shutil.which("git")


@pytest.fixture
def git_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``git`` first on PATH that logs each call, then hands over to the real one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "git-calls.log"
    script = bin_dir / "git"
    script.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {REAL_GIT} "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([REAL_GIT, "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def _chain(n: int) -> FlowDefinition:
    flow = FlowDefinition().node("n0", lambda x: x, inputs={"x": Initial("x")})
    for i in range(1, n):
        flow.node(f"n{i}", lambda v: v + 1, inputs={"v": Ref(f"n{i - 1}")})
    return flow


FILES = {
    # Names that sort differently as files and as directories ("a" < "a-b" < "a.b" < "a/"...).
    "root/a/outcome.json": b'{"v": 1}\n',
    "root/a-b/outcome.json": b"2\n",
    "root/a.b": b"a file named like a directory's neighbour\n",
    "root/a0/outcome.json": b"",
    "root/deep/er/still/outcome.json": bytes(range(256)) * 3,  # binary
    "root/big/outcome.json": b'{"text": "%s"}\n' % (b"x" * 50_000),  # the large-window branch
    "root/\u00e9t\u00e9/outcome.json": "caf\u00e9\n".encode(),
    "top.txt": b"beside the root\n",
}


def _files(tmp_path: Path) -> list[OutcomeFile]:
    out = []
    for i, (path, data) in enumerate(FILES.items()):
        if i % 2:  # half from disk, as declared outcome files are
            source = tmp_path / "src" / f"f{i}"
            source.parent.mkdir(exist_ok=True)
            source.write_bytes(data)
            out.append(OutcomeFile(source, path))
        else:
            out.append(OutcomeFile("", path, data=data))
    return out


def test_a_direct_commit_has_the_tree_fast_import_makes_and_passes_fsck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, git_calls: Path
) -> None:
    repo = OutcomeRepository(tmp_path / "repo")
    files = _files(tmp_path)
    direct = repo.commit_run("direct", files, message="run direct: completed\n\nroot: root")
    assert not [c for c in _calls(git_calls) if "fast-import" in c]
    monkeypatch.setattr(outcome_repo, "_DIRECT_MAX", 0)
    by_git = repo.commit_run("by-git", files, message="m")
    assert [c for c in _calls(git_calls) if "fast-import" in c]  # the comparison is real
    work = tmp_path / "repo"
    assert _git(work, "rev-parse", f"{direct}^{{tree}}") == _git(work, "rev-parse", f"{by_git}^{{tree}}")
    assert _git(work, "rev-parse", "refs/heads/run/direct").strip() == direct
    for path, data in FILES.items():
        shown = subprocess.run([REAL_GIT, "-C", str(work), "show", f"run/direct:{path}"], capture_output=True)
        assert shown.stdout == data, path
    commit = git.Repo(work).commit("run/direct")
    assert commit.parents == ()
    assert commit.message == "run direct: completed\n\nroot: root"
    assert (commit.author.name, commit.author.email) == ("reprise", "reprise@localhost")
    assert (commit.committer.name, commit.committer.email) == ("reprise", "reprise@localhost")
    fsck = subprocess.run([REAL_GIT, "-C", str(work), "fsck", "--strict", "--full"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert "dangling" not in fsck.stdout
    assert not list((work / ".git" / "objects" / "pack").glob("tmp_*"))


def test_a_small_run_starts_no_git_and_a_large_one_does(tmp_path: Path, git_calls: Path) -> None:
    small = FlowRunner(_chain(5), RunContext("root", tmp_path, initial_inputs={"x": 1})).run_sync()
    assert not [c for c in _calls(git_calls) if "fast-import" in c]
    repo = git.Repo(tmp_path / "runs" / "outcome" / tmp_path.name)
    tree = repo.commit(f"run/{small.run_id}").tree
    assert (tree / "root/n4/outcome.json").data_stream.read() == (small.run_dir / "root/n4/outcome.json").read_bytes()
    assert small.run_dir.joinpath(".trace/metadata.json").read_text().count(repo.commit(f"run/{small.run_id}").hexsha)
    large = FlowRunner(_chain(110), RunContext("root", tmp_path, initial_inputs={"x": 1})).run_sync()
    assert [c for c in _calls(git_calls) if "fast-import" in c]
    tree = repo.commit(f"run/{large.run_id}").tree
    assert len([b for b in tree.traverse() if b.type == "blob"]) == 110
    # A re-run of the small one (a parent: git from the start) keeps what it reused.
    again = FlowRunner(
        _chain(5), RunContext("root", tmp_path, previous_run_id=small.run_id, start_hierarchy_path="root.n3")
    ).run_sync()
    tree = repo.commit(f"run/{again.run_id}").tree
    assert sorted(b.path for b in tree.traverse() if b.type == "blob") == [f"root/n{i}/outcome.json" for i in range(5)]
    assert repo.commit(f"run/{again.run_id}").parents == (repo.commit(f"run/{small.run_id}"),)
    fsck = subprocess.run([REAL_GIT, "-C", repo.working_dir, "fsck", "--strict"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_a_repository_not_in_the_plain_format_is_left_to_fast_import(tmp_path: Path, git_calls: Path) -> None:
    repo = OutcomeRepository(tmp_path / "repo")
    git_dir = repo.git_dir()
    assert can_write_directly(git_dir)
    _git(tmp_path / "repo", "config", "core.sharedRepository", "group")
    assert not can_write_directly(git_dir)  # read again: the file changed
    commit = repo.commit_run("r1", [OutcomeFile("", "root/a/outcome.json", data=b"1\n")], message="m")
    assert [c for c in _calls(git_calls) if "fast-import" in c]
    assert repo.head_of("r1") == commit


def test_an_object_directory_from_the_environment_is_left_to_fast_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = OutcomeRepository(tmp_path / "repo")
    assert can_write_directly(repo.git_dir())
    monkeypatch.setenv("GIT_OBJECT_DIRECTORY", str(tmp_path / "elsewhere"))
    assert not can_write_directly(repo.git_dir())


def test_a_path_git_must_be_asked_about_is_left_to_fast_import(tmp_path: Path, git_calls: Path) -> None:
    repo = OutcomeRepository(tmp_path / "repo")
    files = [OutcomeFile("", "root/a/outcome.json", data=b"1\n"), OutcomeFile("", "root/.GIT/x", data=b"2\n")]
    assert PackBuilder().tree({f.repo_path: b"\0" * 20 for f in files}) is None
    repo.commit_run("r1", files, message="m")
    assert [c for c in _calls(git_calls) if "fast-import" in c]


@pytest.mark.parametrize(
    "path", ["", "/a", "a/", "a//b", ".", "a/./b", "a/../b", "..", ".git", "a/.Git/b", "a\nb", "a/b\0"]
)
def test_a_path_with_a_component_git_refuses_has_no_direct_tree(path: str) -> None:
    assert PackBuilder().tree({"ok/outcome.json": b"\0" * 20, path: b"\1" * 20}) is None


@pytest.mark.parametrize("path", ["a/.gitx", "a/..b", "a/.b", "x.git/y", "...", "a/b.git"])
def test_names_that_only_look_like_refused_components_are_written_directly(path: str) -> None:
    assert PackBuilder().tree({path: b"\1" * 20}) is not None


def test_a_branch_is_created_under_its_lock_and_never_moved(tmp_path: Path) -> None:
    repo = OutcomeRepository(tmp_path / "repo")
    git_dir = repo.git_dir()
    first = repo.commit_run("r1", [OutcomeFile("", "a", data=b"1")], message="m")
    with pytest.raises(RunSetupError, match="exists already"):
        create_branch(git_dir, "refs/heads/run/r1", "0" * 40)
    assert repo.head_of("r1") == first
    # A branch that git packed into packed-refs counts as existing too.
    _git(tmp_path / "repo", "pack-refs", "--all")
    assert not Path(git_dir, "refs/heads/run/r1").exists()
    with pytest.raises(RunSetupError, match="exists already"):
        create_branch(git_dir, "refs/heads/run/r1", "0" * 40)
    assert repo.head_of("r1") == first
    # Another writer holding the lock: refused, and its lock left alone.
    lock = Path(git_dir, "refs/heads/run/r2.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    with pytest.raises(RunSetupError, match=r"r2\.lock exists"):
        create_branch(git_dir, "refs/heads/run/r2", first)
    assert lock.exists()
    assert repo.head_of("r2") is None
    assert not list(Path(git_dir, "refs/heads/run").glob("r1.lock"))


def test_a_direct_commit_whose_branch_exists_fails_and_makes_nothing_visible(tmp_path: Path) -> None:
    repo = OutcomeRepository(tmp_path / "repo")
    first = repo.commit_run("r1", [OutcomeFile("", "a", data=b"1")], message="m")
    with pytest.raises(RunSetupError):
        repo.commit_run("r1", [OutcomeFile("", "a", data=b"2")], message="m")
    assert repo.head_of("r1") == first


def test_direct_packs_are_folded_like_any_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reprise.run import compaction

    monkeypatch.setattr(compaction, "MAX_PACKS", 2)
    repo = OutcomeRepository(tmp_path / "repo")
    commits = [repo.commit_run(f"r{i}", [OutcomeFile("", "root/x", data=b"%d" % i)], message="m") for i in range(6)]
    # Commits this fast end while the fold they started still runs (they start no other): the
    # next commit's fold takes what is left.
    compaction.wait_for_compactions()
    repo._maybe_compact(repo.git_dir())
    compaction.wait_for_compactions()
    packs = list(Path(repo.git_dir(), "objects", "pack").glob("*.pack"))
    assert len(packs) <= 2
    for i, commit in enumerate(commits):
        assert _git(tmp_path / "repo", "show", f"{commit}:root/x") == str(i)
    fsck = subprocess.run([REAL_GIT, "-C", str(tmp_path / "repo"), "fsck", "--strict"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_a_file_gone_before_a_direct_commit_is_left_out_of_it(tmp_path: Path, git_calls: Path) -> None:
    repo = OutcomeRepository(tmp_path / "repo")
    kept = tmp_path / "kept.txt"
    kept.write_text("here")
    files = [
        OutcomeFile(kept, "root/a/kept.txt"),
        OutcomeFile(tmp_path / "gone.txt", "root/a/gone.txt"),
        OutcomeFile("", "root/a/outcome.json", data=b"1\n"),
    ]
    stream = repo.open_stream("run_x")
    commit = stream.finish(files, message="m")
    assert not [c for c in _calls(git_calls) if "fast-import" in c]
    assert commit is not None
    assert stream.committed_paths(files) == ["root/a/kept.txt", "root/a/outcome.json"]
    tree = git.Repo(tmp_path / "repo").commit(commit).tree
    assert sorted(b.path for b in tree.traverse() if b.type == "blob") == ["root/a/kept.txt", "root/a/outcome.json"]


def test_many_bytes_are_left_to_git(tmp_path: Path, git_calls: Path) -> None:
    # Outcomes over 256 KiB are read from their files by the commit; past 4 MiB in all, git
    # (another core) compresses them, not this process.
    repo = OutcomeRepository(tmp_path / "repo")
    files = []
    for i in range(3):
        source = tmp_path / f"big{i}.json"
        source.write_bytes(b'"%s"\n' % (b"%d" % i * (2 * 1024 * 1024)))
        files.append(OutcomeFile(source, f"root/n{i}/outcome.json"))
    commit = repo.commit_run("r1", files, message="m")
    assert [c for c in _calls(git_calls) if "fast-import" in c]
    assert _git(tmp_path / "repo", "show", f"{commit}:root/n2/outcome.json").startswith('"222')
    # Held while the run goes on, they start git as soon as they pass 4 MiB.
    stream = repo.open_stream("r2")
    for i in range(30):
        stream.add(f"root/m{i}/outcome.json", b"x" * 200_000)
        if stream._proc is not None:
            break
    assert i == 20  # 21 x 200,000 bytes > 4 MiB
    stream.abort()


@pytest.mark.parametrize("size", [0, 1, 127, 128, 4096, 4097, 65535, 65536, 131071, 200_000])
def test_objects_are_zlib_streams_of_any_size(size: int) -> None:
    import zlib

    from reprise.run.git_pack import _deflate

    data = bytes(i % 251 for i in range(size))
    assert zlib.decompress(_deflate(data)) == data
    assert zlib.decompress(_deflate(data, compress=False)) == data


@pytest.mark.parametrize("run_id", ["x.lock", "a b", "a..b", "../../../../escaped", "ok~1"])
def test_a_run_id_git_refuses_as_a_branch_name_is_left_to_fast_import(
    tmp_path: Path, git_calls: Path, run_id: str
) -> None:
    # Written directly, these made a ref file git ignores (or one outside the repository) and
    # reported a commit no branch holds; fast-import refuses them, and says why.
    repo = OutcomeRepository(tmp_path / "repo")
    with pytest.raises(RunSetupError, match="conform"):
        repo.commit_run(run_id, [OutcomeFile("", "root/a/outcome.json", data=b"1\n")], message="m")
    assert [c for c in _calls(git_calls) if "fast-import" in c]
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [".git"]
    assert not Path(repo.git_dir(), "refs", "heads", "run").exists()
    with pytest.raises(RunSetupError, match="not a branch"):
        create_branch(repo.git_dir(), f"refs/heads/run/{run_id}", "0" * 40)


@pytest.mark.parametrize(("name", "email"), [("a<b", "e@x"), ("a\nb", "e@x"), ("ok", "e>x")])
def test_an_identity_git_refuses_is_left_to_fast_import(
    tmp_path: Path, git_calls: Path, name: str, email: str
) -> None:
    # Written directly, it made a commit fsck --strict rejects; fast-import refuses it.
    repo = OutcomeRepository(tmp_path / "repo", OutcomeSettings(author_name=name, author_email=email))
    with pytest.raises(RunSetupError, match="ident"):
        repo.commit_run("r1", [OutcomeFile("", "root/a/outcome.json", data=b"1\n")], message="m")
    assert [c for c in _calls(git_calls) if "fast-import" in c]
    assert repo.head_of("r1") is None


def test_configuration_from_the_environment_is_left_to_fast_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # git reads GIT_CONFIG_COUNT's settings as it reads GIT_CONFIG_PARAMETERS' (e.g. a
    # core.sharedRepository that gives the branch and the pack other permissions).
    repo = OutcomeRepository(tmp_path / "repo")
    assert can_write_directly(repo.git_dir())
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.sharedRepository")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "0660")
    assert not can_write_directly(repo.git_dir())


def test_a_path_fast_import_refuses_is_refused_the_same_way(tmp_path: Path) -> None:
    # A direct commit of it would succeed, and the re-run of that run (fast-import, from its
    # tree) would fail: one behaviour, whatever the size of the run.
    repo = OutcomeRepository(tmp_path / "repo")
    with pytest.raises(RunSetupError, match="cannot commit a file named"):
        repo.commit_run("r1", [OutcomeFile("", '"quoted"/outcome.json', data=b"1")], message="m")
    assert repo.head_of("r1") is None


def test_a_repository_deleted_between_two_runs_is_made_again(tmp_path: Path) -> None:
    first = FlowRunner(_chain(2), RunContext("root", tmp_path, initial_inputs={"x": 1})).run_sync()
    work = tmp_path / "runs" / "outcome" / tmp_path.name
    assert git.Repo(work).commit(f"run/{first.run_id}")
    shutil.rmtree(work)  # this process knew it: it must not take it for granted
    second = FlowRunner(_chain(2), RunContext("root", tmp_path, initial_inputs={"x": 2})).run_sync()
    meta = (second.run_dir / ".trace" / "metadata.json").read_text()
    assert "outcome_commit_error" not in meta
    assert git.Repo(work).commit(f"run/{second.run_id}").hexsha in meta


def _rerun(tmp_path: Path, parent: str, start: str) -> str:
    ctx = RunContext("root", tmp_path, initial_inputs={"x": 1}, previous_run_id=parent, start_hierarchy_path=start)
    return FlowRunner(_chain(5), ctx).run_sync().run_id


def test_a_small_reruns_commit_is_written_directly_with_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, git_calls: Path
) -> None:
    first = FlowRunner(_chain(5), RunContext("root", tmp_path, initial_inputs={"x": 1})).run_sync().run_id
    again = _rerun(tmp_path, first, "root.n3")
    assert not [c for c in _calls(git_calls) if "fast-import" in c or "ls-tree" in c]
    monkeypatch.setattr(outcome_repo, "_DIRECT_MAX", 0)
    by_git = _rerun(tmp_path, first, "root.n3")
    assert [c for c in _calls(git_calls) if "fast-import" in c]  # the comparison is real
    repo = git.Repo(tmp_path / "runs" / "outcome" / tmp_path.name)
    c1, c2, c3 = (repo.commit(f"run/{r}") for r in (first, again, by_git))
    assert c2.parents == (c1,) and c3.parents == (c1,)
    assert c2.tree == c3.tree == c1.tree  # the same outcomes: reused ones kept, n3 and n4 the same
    fsck = subprocess.run([REAL_GIT, "-C", repo.working_dir, "fsck", "--strict"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_a_rerun_whose_reused_outcome_is_gone_is_left_to_fast_import(tmp_path: Path, git_calls: Path) -> None:
    # Written directly, the commit would lack the outcome; fast-import keeps it from the
    # parent's tree, as it always has.
    first = FlowRunner(_chain(5), RunContext("root", tmp_path, initial_inputs={"x": 1})).run_sync()
    stream_files = outcome_repo.listed_outcome_files

    def losing_one(*args: object, **kwargs: object) -> list[OutcomeFile]:
        files = stream_files(*args, **kwargs)  # type: ignore[arg-type]
        gone = "root/n0/outcome.json"
        return [OutcomeFile(tmp_path / "gone", f.repo_path, f.node_path) if f.repo_path == gone else f for f in files]

    import reprise.run.context as context_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(context_module, "listed_outcome_files", losing_one)
        again = _rerun(tmp_path, first.run_id, "root.n3")
    assert [c for c in _calls(git_calls) if "fast-import" in c]
    repo = git.Repo(tmp_path / "runs" / "outcome" / tmp_path.name)
    assert repo.commit(f"run/{again}").tree == repo.commit(f"run/{first.run_id}").tree


@pytest.mark.parametrize("direct_max", [outcome_repo._DIRECT_MAX, 0])
def test_a_path_sent_again_too_large_to_stream_commits_the_later_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct_max: int
) -> None:
    # The large version is not streamed (the commit reads it); the small one sent before it
    # was committed in its place, directly and through fast-import alike.
    monkeypatch.setattr(outcome_repo, "_DIRECT_MAX", direct_max)
    repo = OutcomeRepository(tmp_path / "repo")
    stream = repo.open_stream("r")
    stream.add("root/a/outcome.json", b"old\n")
    big = b"n" * (outcome_repo._STREAM_BLOB_MAX + 1)
    stream.add("root/a/outcome.json", big)
    commit = stream.finish([OutcomeFile("", "root/a/outcome.json", data=big)], message="m")
    assert commit is not None
    shown = subprocess.run(
        [REAL_GIT, f"--git-dir={repo.git_dir()}", "cat-file", "blob", f"{commit}:root/a/outcome.json"],
        capture_output=True,
        check=True,
    )
    assert shown.stdout == big
