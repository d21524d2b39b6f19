"""Identity records per device stream, read from the decoded captures (training and evaluation share it)."""

from __future__ import annotations


def capture_records(lc) -> object | None:
    """The identity table of a decoded capture, if the pipeline gave it one."""
    return getattr(lc, "identity", None)


class RecordSource:
    """Identity records per stream, from the captures' identity tables (``table_of(lc)``)."""

    def __init__(self, data, table_of=None):
        self.data = data
        self.table_of = table_of or (lambda lc: capture_records(lc))
        self._tables: dict[str, object] = {}

    def __call__(self, i: int) -> list:
        st = self.data.streams[i]
        if st.capture not in self._tables:
            lc = self.data.cache.get([st.capture])[0]
            self._tables[st.capture] = self.table_of(lc)
        table = self._tables[st.capture]
        if table is None:
            return []
        return list(table.for_mac(st.mac))
