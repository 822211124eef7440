"""A small run's commit written straight into the outcome repository: one pack, its index, the branch.

Starting ``git fast-import`` and waiting for it to end costs a run 2-3 ms whatever its size:
more than all the rest of a run of a few nodes. A run that ends with few outcomes (see
:class:`~reprise.run.outcome_repo.OutcomeStream`) is committed here instead, in this process,
in git's own formats: the blobs, the trees of every directory and the commit go into one pack
(``objects/pack/pack-<sha>.pack`` with its version-2 ``.idx``), written under temporary names,
synced and renamed into place (the index last, so git never finds an index without its pack);
then the branch is created the way git creates a loose ref: ``<ref>.lock`` made exclusively,
written, renamed over the ref. So, as with fast-import, nothing is visible before the branch,
and a process killed on the way leaves at most an unreferenced pack (for ``git gc``).

Only where that is exactly what git would do: a repository in the plain format ``git init``
made (format version 0, no extensions, no shared permissions), objects in the repository's own
directory (no ``GIT_OBJECT_DIRECTORY``), no configuration from the environment, paths, a branch
name and an identity git takes as they are (git refuses some that a file could hold: a branch
``x.lock`` or ``a b``, a name with ``<``; written here they made a ref git ignores, or a commit
fsck rejects, where fast-import says what is wrong). Anything else, and any
error, goes to fast-import, which is the general path. The objects are not looked up in the
repository first: a pack may hold objects other packs have (git allows it; the repack that
folds packs keeps one of each).

Differences from fast-import, none visible to git commands: trees, the commit and outcomes
under 128 bytes are stored in their zlib streams without compression (object ids do not
compress, and deflate makes a tiny outcome no smaller), larger outcomes are compressed with a
small window (a few µs each instead of ~35 for zlib's default state), and no reflog entry is
written for the new branch (a run's branch is created once and never moved).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import struct
import zlib
from collections.abc import Iterable, Mapping

from reprise.errors import RunSetupError
from reprise.run.files import _write_all

__all__ = ["PackBuilder", "can_write_directly", "create_branch", "is_plain_branch"]

_COMMIT, _TREE, _BLOB = 1, 2, 3
_TYPE_NAMES = {_COMMIT: b"commit", _TREE: b"tree", _BLOB: b"blob"}
_SEQUENCE = itertools.count()
_STORED = struct.Struct("<HH")
_ADLER = struct.Struct(">I")
#: Objects smaller than this are stored, not compressed (see _deflate).
_STORE_BELOW = 128
# A path with a component left to fast-import: empty, '.', '..', '.git' (any case), NUL or
# newline, found by one search of the whole path. Other names fsck --strict flags (``git~1``,
# ``.git.``) are written as fast-import writes them.
_BAD_PATH = re.compile(r"(?:^|/)(?:|\.|\.\.|\.git)(?:/|$)|[\x00\n]", re.IGNORECASE)
# A branch git takes as it is (a subset of check-ref-format's rules: run ids are of this form).
_PLAIN_BRANCH = re.compile(r"refs/heads/[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
# The only configuration a repository written here may have: what ``git init`` writes.
_PLAIN_CONFIG = {
    "core.repositoryformatversion": "0",
    "core.filemode": None,
    "core.bare": None,
    "core.logallrefupdates": None,
    "core.ignorecase": None,
    "core.precomposeunicode": None,
    "core.symlinks": None,
}
# git dir -> (config file's mtime_ns and size, whether it is plain): read again when it changes.
_PLAIN: dict[str, tuple[tuple[int, int], bool]] = {}


def can_write_directly(git_dir: str) -> bool:
    """Whether a commit of ``git_dir`` may be written here (see the module docstring)."""
    env = os.environ
    if env.get("GIT_OBJECT_DIRECTORY") or env.get("GIT_CONFIG_PARAMETERS") or env.get("GIT_CONFIG_COUNT"):
        return False  # objects elsewhere, or configuration (permissions...) git would apply
    config = os.path.join(git_dir, "config")
    try:
        st = os.stat(config)
    except OSError:
        return False
    key = (st.st_mtime_ns, st.st_size)
    known = _PLAIN.get(git_dir)
    if known is not None and known[0] == key:
        return known[1]
    try:
        with open(config, encoding="utf-8") as fh:
            plain = _is_plain(fh.read())
    except (OSError, UnicodeDecodeError):
        plain = False
    _PLAIN[git_dir] = (key, plain)
    return plain


def _is_plain(text: str) -> bool:
    section = ""
    seen_version = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]") or '"' in line:
                return False  # [extensions], [remote "x"], subsections: not ours to judge
            section = line[1:-1].strip().lower()
            continue
        name, eq, value = line.partition("=")
        key = f"{section}.{name.strip().lower()}"
        if not eq or key not in _PLAIN_CONFIG:
            return False
        wanted = _PLAIN_CONFIG[key]
        if wanted is not None and value.strip() != wanted:
            return False
        seen_version = seen_version or key == "core.repositoryformatversion"
    return seen_version


def _deflate(data: bytes, *, compress: bool = True) -> bytes:
    """``data`` as a zlib stream, which is what a pack holds for every object."""
    if compress and len(data) >= _STORE_BELOW:
        # zlib's default state (32 KiB window, level 6) takes ~35 µs to set up, more than a
        # small outcome takes to compress; a window that fits the data is as good for it.
        small = len(data) <= 4096
        c = zlib.compressobj(1, zlib.DEFLATED, 12 if small else 15, 2 if small else 8)
        return c.compress(data) + c.flush()
    # Stored blocks (no compression): ~1 µs instead of ~4 for a tiny outcome (which deflate
    # would make no smaller) or a tree (object ids do not compress).
    n = len(data)
    if n < 65536:  # one block: the common case, without the loop
        return b"\x78\x01\x01" + _STORED.pack(n, n ^ 0xFFFF) + data + _ADLER.pack(zlib.adler32(data))
    out = [b"\x78\x01"]
    for start in range(0, n, 65535):
        block = data[start : start + 65535]
        last = start + 65535 >= n
        out.append(struct.pack("<BHH", 1 if last else 0, len(block), len(block) ^ 0xFFFF))
        out.append(block)
    out.append(_ADLER.pack(zlib.adler32(data)))
    return b"".join(out)


# b"<type> %d\0": the header git hashes before an object's body.
_HEADS = {kind: name + b" %d\0" for kind, name in _TYPE_NAMES.items()}


def _entry_head(kind: int, size: int) -> bytes:
    """A pack entry's header: the type and the size, 4 bits of it and then 7 bits per byte."""
    if size < 16:
        return bytes(((kind << 4) | size,))
    out = bytearray()
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)



class PackBuilder:
    """The objects of one commit, in memory until :meth:`write`."""

    __slots__ = ("_objects", "_seen")

    def __init__(self) -> None:
        self._objects: list[tuple[bytes, bytes]] = []  # (binary sha, packed entry)
        self._seen: set[bytes] = set()

    def _add(self, kind: int, body: bytes) -> bytes:
        size = len(body)
        digest = hashlib.sha1(_HEADS[kind] % size + body).digest()
        if digest not in self._seen:
            self._seen.add(digest)
            self._objects.append((digest, _entry_head(kind, size) + _deflate(body, compress=kind == _BLOB)))
        return digest

    def blob(self, data: bytes) -> bytes:
        """Add a blob; its binary id."""
        return self._add(_BLOB, data)

    def tree(self, files: Mapping[str, bytes]) -> str | None:
        """Add the trees of ``files`` (repository path -> binary blob id, each file mode
        100644); the root tree's id, or ``None`` if a path is not one git takes as it is."""
        root: dict[str, object] = {}
        for path, blob in files.items():
            if _BAD_PATH.search(path):
                return None
            *dirs, name = path.split("/")
            node = root
            for part in dirs:
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                elif type(child) is not dict:
                    return None  # a file and a directory of the same name
                node = child
            if name in node:
                return None
            node[name] = blob
        return self._tree(root).hex()

    def _tree(self, entries: Mapping[str, object]) -> bytes:
        items: list[tuple[bytes, bytes]] = []
        for name, value in entries.items():
            raw = name.encode()
            if type(value) is dict:
                # git orders a directory as if its name ended in "/".
                items.append((raw + b"/", b"40000 %s\0%s" % (raw, self._tree(value))))
            else:
                assert isinstance(value, bytes)
                items.append((raw, b"100644 %s\0%s" % (raw, value)))
        if len(items) > 1:
            items.sort()  # by name: names are unique, so the entries are never compared
        return self._add(_TREE, b"".join([entry for _, entry in items]))

    def commit(self, tree: str, ident: bytes, message: bytes, parents: Iterable[str] = ()) -> str:
        """Add a commit (``ident``: ``name <email> time +zone``, for author and committer);
        its id."""
        head = b"tree %s\n" % tree.encode()
        head += b"".join(b"parent %s\n" % p.encode() for p in parents)
        body = head + b"author " + ident + b"\ncommitter " + ident + b"\n\n" + message
        return self._add(_COMMIT, body).hex()

    def write(self, git_dir: str) -> str:
        """Write the pack and its index into ``git_dir``; the pack's name (its id)."""
        pack_dir = os.path.join(git_dir, "objects", "pack")
        objects = self._objects
        header = b"PACK" + struct.pack(">II", 2, len(objects))
        pack_sha = hashlib.sha1(header)
        entries: list[tuple[bytes, int, int]] = []
        offset = len(header)
        for digest, packed in objects:
            pack_sha.update(packed)
            entries.append((digest, zlib.crc32(packed), offset))
            offset += len(packed)
        if offset >= 1 << 31:
            raise RunSetupError("a commit this large is left to git fast-import")  # 64-bit offsets
        trailer = pack_sha.digest()
        name = trailer.hex()
        final = os.path.join(pack_dir, f"pack-{name}")
        if os.path.exists(final + ".idx"):
            return name  # the same objects, already there
        entries.sort()
        fanout = [0] * 256
        for digest, _, _ in entries:
            fanout[digest[0]] += 1
        running = list(itertools.accumulate(fanout))
        idx = b"".join(
            [
                b"\xfftOc",
                struct.pack(">I", 2),
                struct.pack(">256I", *running),
                b"".join(e[0] for e in entries),
                struct.pack(f">{len(entries)}I", *(e[1] for e in entries)),
                struct.pack(f">{len(entries)}I", *(e[2] for e in entries)),
                trailer,
            ]
        )
        idx += hashlib.sha1(idx).digest()
        tag = f"{os.getpid()}_{next(_SEQUENCE)}"
        tmp_pack = os.path.join(pack_dir, f"tmp_pack_reprise_{tag}")
        tmp_idx = os.path.join(pack_dir, f"tmp_idx_reprise_{tag}")
        try:
            _write_synced(tmp_pack, [header, *(packed for _, packed in objects), trailer])
            _write_synced(tmp_idx, [idx])
            # The pack first: git finds packs by their index, and must find the pack with it.
            os.rename(tmp_pack, final + ".pack")
            os.rename(tmp_idx, final + ".idx")
        except BaseException:
            for tmp in (tmp_pack, tmp_idx):
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            raise
        return name


def _write_synced(path: str, chunks: list[bytes]) -> None:
    # Read-only, as git makes its pack files; synced, as git syncs packs by default.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    try:
        _write_all(fd, b"".join(chunks))
        os.fsync(fd)
    finally:
        os.close(fd)


def is_plain_branch(ref: str) -> bool:
    """Whether :func:`create_branch` may create ``ref``: a branch whose name git takes as it is
    (anything else is left to git, which checks it)."""
    return _PLAIN_BRANCH.fullmatch(ref) is not None


def create_branch(git_dir: str, ref: str, commit: str) -> None:
    """Create ``ref`` (``refs/heads/...``) at ``commit`` as git creates a loose ref: under
    ``<ref>.lock``, taken exclusively. A ref that exists already is an error: a run's branch
    is made once."""
    if not is_plain_branch(ref):
        # git would ignore such a ref file (a space, "x.lock"), or it would lie outside refs/.
        raise RunSetupError(f"cannot create {ref!r} in {git_dir}: not a branch name written without git")
    path = os.path.join(git_dir, *ref.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lock = path + ".lock"
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise RunSetupError(f"cannot create {ref} in {git_dir}: {lock} exists (another git is writing it)") from None
    try:
        try:
            os.write(fd, commit.encode() + b"\n")
        finally:
            os.close(fd)
        if os.path.exists(path) or _in_packed_refs(git_dir, ref):
            raise RunSetupError(f"cannot create {ref} in {git_dir}: it exists already")
        os.rename(lock, path)
    except BaseException:
        try:
            os.unlink(lock)
        except OSError:
            pass
        raise


def _in_packed_refs(git_dir: str, ref: str) -> bool:
    try:
        with open(os.path.join(git_dir, "packed-refs"), "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return False
    return (b" " + ref.encode() + b"\n") in data
