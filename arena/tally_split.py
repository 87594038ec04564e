"""`arena ratings` reads a big battles file from both ends: `start_tally` starts the read
beside the caller (a forked process folds blocks from the front while the CLI imports the
fits), and the caller, once it asks for the result, decodes blocks from the back until the
two meet. The result is exactly `arena.tally.tally_file`'s."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from arena import tally
from arena.files import file_format
from arena.tally import _FAILED, Tally, _block_reader, _Columns, _Folder, _Vote, tally_file

#: Blocks of a split read the calling process keeps as columns at most (~1.3 MB each):
#: beyond them the forked reader reads on alone, so memory stays bounded.
BACK_BLOCKS = 32


def start_tally(path: str | Path, *, elo: bool = True) -> Callable[[], Tally | None]:
    """Start `tally_file(path, elo=elo)` beside the caller and return a function that gives
    its result: the caller works meanwhile (the CLI imports the fits).

    With a second CPU the file is read in a forked process. A JSON Lines file or a JSON
    array of objects (`_block_reader`) bigger than two blocks is read from both ends: the child folds blocks (~4 MB of lines) from the
    front; the caller, once it asks for the result, decodes blocks from the back into
    columns (`_Folder.columns`, at most `BACK_BLOCKS`) until the two meet, then folds them
    after the child's, in file order and renumbered as the child numbered models
    (`_Folder.adopt`). So the result is exactly `tally_file`'s, and the caller's import
    time is not added to the read. A file whose times go backwards (with Elo) is read
    again by `tally_file`, which keeps every battle's columns for the sorted replay."""
    from evaluators._parallel import in_background, worker_count

    path = Path(path)
    if worker_count(None) < 2:
        return lambda: tally_file(path, elo=elo)
    block = tally.CHUNK_LINES * 100
    try:
        size = path.stat().st_size
        read = _block_reader(path) if size > 2 * block else None
    except OSError:
        read = None
    if read is None:
        return in_background(lambda: tally_file(path, elo=elo))
    import multiprocessing

    context = multiprocessing.get_context("fork")
    # Blocks [ends[0], ends[1]) are not taken yet: the child takes from the front, the caller from the back.
    ends, lock = context.RawArray("q", [0, -(-size // block)]), context.Lock()
    front = in_background(lambda: _read_front(path, read, elo, block, size, ends, lock))

    def result() -> Tally | None:
        with front:  # an error here (or ^C) kills the forked reader
            back = _read_back(path, read, block, size, ends, lock)
        folder = front()
        if folder is None or back is None:  # a JSON array may still decode at once
            return tally_file(path, elo=elo) if file_format(path) == "json" else None
        numbering, chunks = back
        for columns in chunks:
            if not folder.ordered:
                break
            folder.fold(folder.adopt(numbering, columns))
        return folder.finish() if folder.ordered else tally_file(path, elo=elo)

    return result


def _claimed(path: Path, read, block: int, size: int, ends, lock, *, front: bool) -> Iterator[tuple[int, list[_Vote]]]:
    """(k, its votes) for each block this process claims from the untaken ones [ends[0],
    ends[1]): from the front or from the back, one at a time, until none is left (a block
    is claimed only when the next one is asked for). `read`: `_block_reader`'s function."""
    with path.open("rb") as handle:
        while True:
            with lock:
                if ends[0] >= ends[1]:
                    return
                if front:
                    k = ends[0]
                    ends[0] = k + 1
                else:
                    k = ends[1] = ends[1] - 1
            yield k, read(handle.fileno(), k * block, (k + 1) * block, size)


def _read_front(path: Path, read, elo: bool, block: int, size: int, ends, lock) -> _Folder | None:
    """The forked reader: folds blocks from the front until it meets the caller's."""
    folder = _Folder(elo)
    try:
        for _, votes in _claimed(path, read, block, size, ends, lock, front=True):
            if not folder.add(votes):
                return None
            if not folder.ordered:  # time order broke: `start_tally` reads again
                break
    except _FAILED:
        return None
    return folder


def _read_back(path: Path, read, block: int, size: int, ends, lock) -> tuple[_Folder, list[_Columns]] | None:
    """The caller's share: blocks from the back, as columns numbered by a folder of its
    own, returned in file order (None: a record needs the validating reader)."""
    numbering = _Folder(elo=False)
    chunks: dict[int, _Columns] = {}
    try:
        for k, votes in _claimed(path, read, block, size, ends, lock, front=False):
            if votes:
                columns = numbering.columns(votes)
                if columns is None:
                    return None
                chunks[k] = columns
            if len(chunks) >= BACK_BLOCKS:
                break
    except _FAILED:
        return None
    return numbering, [chunks[k] for k in sorted(chunks)]
