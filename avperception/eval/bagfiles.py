"""Raw rosbag2 access: open a bag for its CDR bytes, write serialized messages into a new bag (no ROS needed).

The bag player publishes what :func:`open_rosbag2` reads without decoding it, and the recorder hands
:class:`BagRecorder` the CDR bytes a subscription received; both leave the messages exactly as they were on the
wire. Message types are those of :func:`avperception.eval.bagio.typestore` (ROS 2's standard types and
``avperception_msgs``); any other type is registered from its ``.msg`` file in an installed ROS package
(``$AMENT_PREFIX_PATH/share/<pkg>/msg/<Name>.msg``). ``rosbags`` is imported lazily.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from .bagio import BagError, _require_rosbags, msg_file, storage_plugin, typestore


def open_rosbag2(path: str | Path):
    """The rosbag2 directory ``path`` (mcap or sqlite3; any directory name, ``x.bag`` included) opened with
    ``rosbags.rosbag2.Reader``, as a context manager that closes it: ``with open_rosbag2(p) as reader:``;
    ``reader.messages(connections, start)`` yields ``(connection, log_time_ns, cdr_bytes)``."""
    _require_rosbags()
    from rosbags.rosbag2 import Reader

    p = Path(path).expanduser()
    if not p.exists():
        raise BagError(f"bag not found: {p}")
    if p.is_file() and p.suffix in (".mcap", ".db3") and (p.parent / "metadata.yaml").is_file():
        p = p.parent  # the storage file of a bag: its directory
    if not (p.is_dir() and (p / "metadata.yaml").is_file()):
        raise BagError(f"{p} is not a rosbag2: a rosbag2 is a directory with metadata.yaml and its .mcap or .db3 "
                       "files (ROS 1 .bag files are not supported)")
    try:
        reader = Reader(p)
        reader.open()
    except Exception as e:  # rosbags raises its own error classes for every kind of unreadable bag
        raise BagError(f"cannot read {p} as a rosbag2: {e}") from None
    return closing(reader)


def register_msgtype(ts, msgtype: str) -> None:
    """Make ``msgtype`` (``pkg/msg/Name``) and every type it nests known to ``ts``, from the installed ``.msg``
    files; a :class:`BagError` names the type when one cannot be found."""
    from rosbags.typesys import get_types_from_msg
    from rosbags.typesys.base import Nodetype

    todo, found = [msgtype], {}
    while todo:
        t = todo.pop()
        if t in ts.fielddefs or t in found:
            continue
        if t.count("/") != 2:
            raise BagError(f"cannot record {msgtype}: {t!r} is not a pkg/msg/Name message type")
        f = msg_file(t)
        if f is None:
            raise BagError(f"cannot record {msgtype}: no definition of {t} (looked for share/{t}.msg under "
                           "AMENT_PREFIX_PATH and this Python's prefix); install its package")
        found.update(get_types_from_msg(f.read_text(), t))
        for _, fields in (found[t][1],):
            for _, (kind, arg) in fields:
                sub = arg if kind == Nodetype.NAME else (arg[0][1] if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE)
                                                        and arg[0][0] == Nodetype.NAME else None)
                if sub is not None:
                    todo.append(sub)
    if found:
        ts.register(found)


class BagRecorder:
    """Writes serialized (CDR) messages into a new rosbag2 directory ``out``; one connection per topic.

    ``add(topic, msgtype, log_time_ns, cdr)`` in any order of topics; ``close()`` (or leaving the ``with`` block)
    finishes the bag and returns ``{topic: count}``. ``storage``: ``mcap`` (default) or ``sqlite3``.
    """

    def __init__(self, out: str | Path, storage: str = "mcap", ts=None) -> None:
        _require_rosbags()
        from rosbags.rosbag2 import Writer

        self.out = Path(out)
        if self.out.exists():
            raise BagError(f"{self.out} exists; a bag is written to a new directory")
        if not self.out.parent.is_dir():
            raise BagError(f"cannot write {self.out}: {self.out.parent} is not a directory")
        self.ts = ts if ts is not None else typestore()
        self.counts: dict[str, int] = {}
        self.types: dict[str, str] = {}
        self._conns: dict[str, object] = {}
        self._writer = Writer(self.out, version=9, storage_plugin=storage_plugin(storage))
        self._writer.open()

    def add(self, topic: str, msgtype: str, log_time_ns: int, cdr: bytes) -> None:
        conn = self._conns.get(topic)
        if conn is None:
            register_msgtype(self.ts, msgtype)
            conn = self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.ts)
            self.types[topic], self.counts[topic] = msgtype, 0
        elif self.types[topic] != msgtype:
            raise BagError(f"{topic} was recorded as {self.types[topic]}, now carries {msgtype}")
        self._writer.write(conn, int(log_time_ns), bytes(cdr))
        self.counts[topic] += 1

    def close(self) -> dict[str, int]:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return dict(self.counts)

    def __enter__(self) -> "BagRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["open_rosbag2", "register_msgtype", "BagRecorder"]
