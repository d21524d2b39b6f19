"""Pins from the operator page: a device's category or action, written to the policy file's
``overrides`` (the file stays the single source of truth; the controller's hot reload applies it).

Editing keeps the file as the operator wrote it: only the one entry under ``overrides`` is
added, replaced or removed, in the text (comments, order and layout of everything else stay
byte for byte). Before the new file replaces the old one it is validated
(:func:`~controller_app.policy.parse_policy`) and compared with the old one: it must differ in
that one override and nothing else. It is written to a temporary file beside the policy and
renamed over it (atomic on POSIX), keeping the file's permissions.

**Hand edits are never overwritten.** An operator may edit the file while pins are made:

* every pin holds an advisory lock (``flock``) on ``<policy>.lock`` beside the file, from
  reading the file to renaming the new one over it; an editor run under the same lock
  (``flock /etc/iot/policy.yaml.lock vim /etc/iot/policy.yaml``) and the controller's reload
  (a shared lock, tried without waiting) are serialised with pins;
* an editor that takes no lock is caught by a compare-and-swap at the rename: the new file is
  swapped in with ``renameat2(RENAME_EXCHANGE)`` and the file it displaced is compared with the
  one the pin read (device, inode, mtime, size and SHA-256 of its bytes); if they differ the
  swap is undone, the hand edit stays, and the pin is refused (409, try again). The same
  comparison is made just before the swap, so that the swap (and a reader seeing the pin's
  file for the microseconds before it is undone) happens only for an edit saved in between.
  An editor that rewrites the file in place may have opened it just before the swap and not
  written yet: the swap is undone too while anyone holds the displaced file open for writing
  (a read lease, ``F_SETLEASE``, is refused exactly then; where leases cannot be had, the
  displaced file is looked at again 20 ms later instead).
  Where the exchange is not available (not Linux, a filesystem without it) the comparison
  before an ordinary rename is all there is.

Operators are named by a token file (``--web-token-file``): one ``name:token`` a line (a line
with a token alone names the operator ``operator``); blank lines and ``#`` comments are
ignored; tokens are at least 16 characters. A presented token is compared with every known
one in constant time.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import hashlib
import hmac
import os
import stat
import tempfile
import threading
import time

import yaml

from classifier.capture.packets import mac_to_int, mac_to_str
from classifier.errors import IotClassError
from classifier.capture.labels import CATEGORIES

from controller_app.policy import (UNKNOWN_CATEGORY, Override, PolicyError, decode_policy, parse_policy,
                                   read_policy_bytes)

MIN_TOKEN_LENGTH = 16
PIN_CATEGORIES = tuple(CATEGORIES) + (UNKNOWN_CATEGORY,)


class PinError(IotClassError):
    """A pin that cannot be made. ``status`` is the HTTP status that says why (400: bad input,
    409: the policy file cannot be edited now)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------ operators and their tokens


class TokenError(IotClassError):
    pass


class Tokens:
    """The operators' tokens (name -> token) from a token file."""

    def __init__(self, tokens: dict[str, str]):
        self._tokens = [(name, tok.encode()) for name, tok in tokens.items()]

    @classmethod
    def load(cls, path: str) -> "Tokens":
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except OSError as exc:
            raise TokenError(f"{path}: cannot read the token file: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise TokenError(f"{path}: the token file is not UTF-8 text") from None
        tokens: dict[str, str] = {}
        for i, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, tok = line.rpartition(":")
            name = name.strip() if sep else "operator"
            tok = tok.strip()
            if not name or any(c.isspace() for c in name):
                raise TokenError(f"{path}:{i}: expected `name:token` (a name without spaces)")
            if len(tok) < MIN_TOKEN_LENGTH:
                raise TokenError(f"{path}:{i}: the token of {name!r} is {len(tok)} characters; at least "
                                 f"{MIN_TOKEN_LENGTH} are needed")
            if name in tokens:
                raise TokenError(f"{path}:{i}: operator {name!r} is named twice")
            tokens[name] = tok
        if not tokens:
            raise TokenError(f"{path}: no token in the token file (one `name:token` a line)")
        return cls(tokens)

    def who(self, presented: str | None) -> str | None:
        """The operator whose token this is, or None. Every token is compared, in constant time."""
        if not presented:
            return None
        p = presented.encode()
        found = None
        for name, tok in self._tokens:
            if hmac.compare_digest(p, tok) and found is None:
                found = name
        return found

    def __len__(self) -> int:
        return len(self._tokens)


def world_readable(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


# ------------------------------------------------------------------ what a pin asks for


def pin_from_request(body, mac: int) -> dict:
    """The override a request asks for, validated: ``{"category": NAME}`` or ``{"action": A}``
    with A ``allow``, ``block``, a mapping of action keys, or that mapping as YAML text.
    Returns the override as it goes into the file (plain YAML-able values)."""
    if not isinstance(body, dict):
        raise PinError("expected a JSON object with `category` or `action`")
    extra = sorted(set(body) - {"category", "action"})
    if extra:
        raise PinError(f"unknown field(s) {', '.join(extra)}: expected `category` or `action`")
    have = [k for k in ("category", "action") if body.get(k) not in (None, "")]
    if len(have) != 1:
        raise PinError("expected exactly one of `category` and `action`")
    key = have[0]
    value = body[key]
    if key == "category":
        if not isinstance(value, str) or value not in PIN_CATEGORIES:
            raise PinError(f"category: {value!r} is not one of {', '.join(PIN_CATEGORIES)}")
    elif isinstance(value, str) and value.strip() not in ("allow", "block"):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise PinError(f"action: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
        if not isinstance(value, dict):
            raise PinError("action: expected allow, block or a mapping like {rate_limit_kbps: 64}")
    elif isinstance(value, str):
        value = value.strip()
    elif not isinstance(value, dict):
        raise PinError("action: expected allow, block or a mapping like {rate_limit_kbps: 64}")
    override = {key: value}
    text = yaml.safe_dump({"overrides": {mac_to_str(mac): override}}, default_flow_style=False)
    try:
        parse_policy(text, "pin")
    except PolicyError as exc:
        # "pin:3:22: overrides.<mac>.action.rate_limit_kbps: expected ..." -> without the position
        raise PinError("; ".join(p.split(": ", 1)[1] if p.startswith("pin:") else p for p in exc.problems)) from None
    return override


def describe_override(ov: Override | None) -> str | None:
    if ov is None:
        return None
    return f"category={ov.category}" if ov.category is not None else f"action={ov.action.describe()}"


# ------------------------------------------------------------------ editing the policy file


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()


def _key_text(mac: int) -> str:
    return f'"{mac_to_str(mac)}"'


def _content_end(text: str, start: int, end: int) -> int:
    """End of a node's own text: PyYAML's end mark of a block collection runs on over the
    line break and the next line's indentation."""
    while end > start and text[end - 1] in " \t\r\n":
        end -= 1
    return end


def _line_end(text: str, pos: int) -> int:
    nl = text.find("\n", pos)
    return len(text) if nl < 0 else nl


def _entries(vnode) -> list:
    out = []
    for k, v in vnode.value:
        try:
            out.append((mac_to_int(k.value), k, v))
        except (ValueError, AttributeError):
            out.append((None, k, v))
    return out


def edit_overrides(text: str, mac: int, override: dict | None) -> str:
    """``text`` with ``overrides[mac]`` set to ``override`` (None: removed), everything else
    unchanged. ``text`` must be a valid policy (:class:`PinError` otherwise)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        raise PinError("the policy file is not a mapping", 409)
    found = [(k, v) for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "overrides"]
    entry = None if override is None else f"{_key_text(mac)}: {_flow(override)}"
    if not found:
        if override is None:
            return text
        if root.flow_style:
            raise PinError("the policy file is one flow mapping ({...}); pins need a block-style file", 409)
        return text + ("" if text.endswith("\n") or not text else "\n") + f"overrides:\n  {entry}\n"
    knode, vnode = found[0]
    if not isinstance(vnode, yaml.MappingNode):
        raise PinError("`overrides` in the policy file is not a mapping", 409)
    entries = _entries(vnode)
    idx = next((i for i, (m, _, _) in enumerate(entries) if m == mac), None)
    if vnode.flow_style:
        if override is not None and idx is not None:               # replace the value
            _, k, v = entries[idx]
            return text[:v.start_mark.index] + _flow(override) + text[v.end_mark.index:]
        if override is not None:                                   # add
            if not entries:
                return text[:vnode.start_mark.index] + "{" + entry + "}" + text[vnode.end_mark.index:]
            last_v = entries[-1][2]
            return text[:last_v.end_mark.index] + ", " + entry + text[last_v.end_mark.index:]
        if idx is None:
            return text
        if len(entries) == 1:
            return text[:vnode.start_mark.index] + "{}" + text[vnode.end_mark.index:]
        if idx + 1 < len(entries):                                 # "key: value, " up to the next key
            return text[:entries[idx][1].start_mark.index] + text[entries[idx + 1][1].start_mark.index:]
        return text[:entries[idx - 1][2].end_mark.index] + text[entries[idx][2].end_mark.index:]
    # block style: one entry a line (or a few lines for a block value)
    if override is not None and idx is not None:
        _, k, v = entries[idx]
        end = _content_end(text, v.start_mark.index, v.end_mark.index)
        return text[:k.end_mark.index] + ": " + _flow(override) + text[end:]
    if override is not None:
        _, k0, _ = entries[0]
        last_v = entries[-1][2]
        at = _line_end(text, _content_end(text, last_v.start_mark.index, last_v.end_mark.index))
        return text[:at] + "\n" + " " * k0.start_mark.column + entry + text[at:]
    if idx is None:
        return text
    _, k, v = entries[idx]
    start = k.start_mark.index - k.start_mark.column
    end = _line_end(text, _content_end(text, v.start_mark.index, v.end_mark.index))
    end = min(len(text), end + 1)
    out = text[:start] + text[end:]
    if len(entries) == 1:                                          # nothing left: `overrides: {}`
        colon = out.index(":", knode.end_mark.index)
        out = out[:colon + 1] + " {}" + out[colon + 1:]
    return out


@dataclasses.dataclass
class PinChange:
    mac: str
    before: str | None          #: the override in the file before (describe_override), or None
    after: str | None           #: after, or None (released)
    digest_before: str
    digest: str                 #: the new file's policy digest (the controller reports it once applied)
    changed: bool


def lock_path(policy_path: str) -> str:
    """The advisory lock file of a policy file: ``<policy>.lock`` beside it (of a symlinked
    policy, beside its target)."""
    return os.path.realpath(policy_path) + ".lock"


@contextlib.contextmanager
def policy_lock(policy_path: str, shared: bool = False, timeout: float = 5.0, create: bool = True):
    """Hold the policy's advisory lock (exclusive to write, ``shared`` to read). Yields True once
    held; False when it could not be had within ``timeout`` (0: one try), or when there is no
    lock file and ``create`` is false (nobody has locked it, so there is nothing to wait for:
    the caller goes on, unlocked)."""
    path = lock_path(policy_path)
    flags = (os.O_RDWR | os.O_CREAT if create else os.O_RDONLY) | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ENOENT and not create:
            yield True
            return
        raise PinError(f"{path}: cannot open the policy's lock file: {exc.strerror or exc}", 409) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.02)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclasses.dataclass(frozen=True)
class FileState:
    """What a pin read: the file's identity and its bytes' hash (compared before the rename)."""
    dev: int
    ino: int
    mtime_ns: int
    size: int
    sha256: str

    @classmethod
    def of(cls, path: str) -> "FileState | None":
        """The state of the file at ``path`` now (None: none there, or unreadable)."""
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read(MAX_STATE_BYTES)
        except OSError:
            return None
        return cls(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, hashlib.sha256(data).hexdigest())


MAX_STATE_BYTES = 1 << 20          # beyond the policy size limit: a larger file never compares equal
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2()


_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)


def _open_for_writing(path: str) -> bool | None:
    """Whether any process (this one included) holds ``path`` open for writing: a read lease
    (``F_SETLEASE``) is refused exactly then. None when leases cannot be had here (not Linux,
    a filesystem without them, a file of another owner without CAP_LEASE)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        try:
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
        except OSError:
            pass
        return False
    finally:
        os.close(fd)


def exchange(a: str, b: str) -> bool:
    """Swap the files at paths ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``).
    False when the system or the filesystem cannot; OSError on other failures."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


class PolicyEditor:
    """Pins and releases in one policy file (one edit at a time, under the policy's lock, the
    rename a compare-and-swap with what was read)."""

    def __init__(self, path: str, lock_timeout: float = 5.0, grace: float = 0.02):
        self.path = os.path.realpath(path)     # a symlinked policy: its target is edited
        self._lock = threading.Lock()
        self.lock_timeout = lock_timeout
        self.grace = grace              #: seconds the displaced file is watched after the swap
        #: hand edits a pin found in its way at the rename and left in place (pin refused)
        self.conflicts = 0
        #: of them, those found only after the swap (undone)
        self.undone = 0

    def _read(self) -> tuple[str, FileState]:
        try:   # bounded, and never waiting on a FIFO or device put at the policy's path
            data = read_policy_bytes(self.path)
            state = FileState.of(self.path)
            if state is None or state.sha256 != hashlib.sha256(data).hexdigest():
                raise PinError("the policy file changed while it was being read; nothing written, try again", 409)
            return decode_policy(data, self.path), state
        except PolicyError as exc:
            raise PinError(f"cannot read the policy file: {exc.problems[0]}", 409) from None

    def set(self, mac: int, override: dict | None) -> PinChange:
        """Pin (``override`` a dict as :func:`pin_from_request` returns) or release (None)."""
        with self._lock, policy_lock(self.path, timeout=self.lock_timeout) as held:
            if not held:
                raise PinError(f"the policy file is locked for editing ({lock_path(self.path)}); nothing "
                               "written, try again when the edit is done", 409)
            text, state = self._read()
            try:
                old = parse_policy(text, self.path)
            except PolicyError as exc:
                raise PinError(f"the policy file is invalid now, so it is not edited (fix it first): "
                               f"{exc.problems[0]}", 409) from None
            new_text = edit_overrides(text, mac, override)
            if new_text == text:
                return PinChange(mac_to_str(mac), describe_override(old.overrides.get(mac)),
                                 describe_override(old.overrides.get(mac)), old.digest, old.digest, False)
            try:
                new = parse_policy(new_text, self.path)
            except PolicyError as exc:
                raise PinError(f"the edited policy would not be valid, nothing written: {exc.problems[0]}",
                               409) from None
            want = dict(old.overrides)
            if override is None:
                want.pop(mac, None)
            else:
                want[mac] = parse_policy(yaml.safe_dump({"overrides": {mac_to_str(mac): override}}), "pin"
                                         ).overrides[mac]
            same = lambda p, ov: dataclasses.replace(p, overrides=ov, source="", digest="")  # noqa: E731
            if same(new, new.overrides) != same(old, want):
                raise PinError("the edit would change more than this device's override; nothing written "
                               "(edit the policy file by hand)", 409)
            self._replace(new_text, state)
            return PinChange(mac_to_str(mac), describe_override(old.overrides.get(mac)),
                             describe_override(new.overrides.get(mac)), old.digest, new.digest, True)

    def _changed(self) -> PinError:
        self.conflicts += 1
        return PinError("the policy file changed while it was being edited (by hand?); it is kept as it is, "
                        "nothing written, try again", 409)

    def _replace(self, text: str, read: FileState) -> None:
        """Put ``text`` in place of the file, which must still be the one read (``read``)."""
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
        except OSError:
            mode = 0o600
        fd, tmp = tempfile.mkstemp(prefix=".pin-", suffix=".yaml", dir=folder)   # 0600 until renamed
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            ours = os.stat(tmp).st_ino
            if FileState.of(self.path) != read:      # most hand edits show here, before anything moves
                raise self._changed()
            if exchange(tmp, self.path):
                # the policy path holds ours; tmp holds what it displaced: the file read, or a hand edit.
                # An editor that rewrites the file in place may have opened it just before the swap
                # and not written yet: nobody may hold the displaced file open for writing (a read
                # lease says so at once), or, where leases are not to be had, it is looked at again
                # a moment later
                writer = _open_for_writing(tmp)
                if writer is None:
                    time.sleep(self.grace)
                if writer or FileState.of(tmp) != read:
                    self.undone += 1
                    self._undo(tmp, ours)
                    raise self._changed()
            else:
                if FileState.of(self.path) != read:
                    raise self._changed()
                os.replace(tmp, self.path)
        except OSError as exc:
            raise PinError(f"{self.path}: cannot write the policy file: {exc.strerror or exc}", 409) from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        try:
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass

    def _undo(self, tmp: str, ours: int) -> None:
        """Swap back: the displaced file to the policy path, ours to ``tmp``. If yet another file
        was renamed over ours meanwhile, that newest one goes to the policy path (it replaced
        whatever was there, as it would have without the pin)."""
        exchange(tmp, self.path)
        try:
            if os.stat(tmp).st_ino == ours:
                return
        except OSError:
            return
        exchange(tmp, self.path)        # tmp held a file written over ours: the newest goes back
