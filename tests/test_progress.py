"""Progress bars on a terminal and in a log file."""

from __future__ import annotations

import io
import time

from xvision._progress import LOG_INTERVAL, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_written_to_a_log_file_is_redrawn_rarely_and_ends_complete() -> None:
    """Under nohup or a scheduler every redraw stayed in the log: a megabyte-long line for one extraction."""
    log, terminal = io.StringIO(), Terminal()
    bars = [progress_bar(total=40, desc="extract", file=stream) for stream in (log, terminal)]
    assert [bar.mininterval for bar in bars] == [LOG_INTERVAL, 0.1]
    assert bars[0].maxinterval == LOG_INTERVAL  # tqdm's monitor thread would otherwise redraw every 10 s
    for _ in range(40):
        time.sleep(0.005)
        for bar in bars:
            bar.update()
    for bar in bars:
        bar.close()
    drawn = log.getvalue().count("extract:")
    assert drawn <= 3 and "40/40" in log.getvalue()  # the first state, the last, and nothing between
    assert terminal.getvalue().count("extract:") > drawn
    assert progress_bar(range(3), file=io.StringIO(), mininterval=0.5).mininterval == 0.5  # asked for: kept
