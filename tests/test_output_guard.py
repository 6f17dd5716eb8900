"""What libraries and child processes write to fds 1 and 2 never reaches the app's terminal."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import textwrap

CHILD = textwrap.dedent("""
    import os, subprocess, sys
    from pathlib import Path
    from lightlm_tui.output_guard import caught_summary, stray_output_to

    with stray_output_to(Path(sys.argv[1])) as log:
        os.write(1, b"C-level stdout\\n")
        os.write(2, b"C-level stderr\\n")
        subprocess.run([sys.executable, "-c", "print('from a child process')"], check=True)
        sys.__stderr__.write("drawn by the app\\n")  # where Textual's driver writes
        sys.__stderr__.flush()
        import shutil
        sys.__stderr__.write(f"size {tuple(shutil.get_terminal_size())}\\n")  # read from the terminal
        sys.__stderr__.flush()
    sys.stderr.write(caught_summary(log))
""")


def test_stray_output_goes_to_the_log_and_the_app_keeps_the_terminal(tmp_path):
    log = tmp_path / "app-output.log"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # rows, columns
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(log)], stdin=slave, stdout=slave, stderr=slave,
                             env=env, close_fds=True)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the pty
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert child.wait(30) == 0
    screen = seen.decode()
    assert "drawn by the app" in screen
    assert "size (120, 40)" in screen  # the app still reads the terminal's real size
    for stray in ("C-level stdout", "C-level stderr", "from a child process"):
        assert stray not in screen.split("libraries wrote")[0]
        assert stray in log.read_text()
    assert f"libraries wrote 3 line(s) of output while the app ran; they are in {log}" in screen


def test_nothing_changes_without_a_terminal(tmp_path, capfd):
    from lightlm_tui.output_guard import stray_output_to

    with stray_output_to(tmp_path / "log") as log:
        os.write(2, b"visible\n")
    assert log is None and "visible" in capfd.readouterr().err


APP_SIZE_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from textual.app import App
    import lightlm_tui.app as app_module

    class SizeProbe(App):
        def on_mount(self):
            self.set_timer(0.2, self.record)

        def record(self):
            Path(sys.argv[1]).write_text(f"{self.size.width}x{self.size.height}")
            self.exit()

    app_module.make_app = lambda *args, **kwargs: SizeProbe()
    sys.exit(app_module.run_app())
""")


def test_the_app_follows_the_terminal_not_stale_columns_and_lines(tmp_path):
    """A resized SSH session leaves COLUMNS/LINES behind; run_app drops them, so the app takes
    the terminal's real size (120 x 40 here), not the stale 50 x 10."""
    import select
    import time

    size_file = tmp_path / "size"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # rows, columns
    env = {**os.environ, "COLUMNS": "50", "LINES": "10", "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "TERM": "xterm-256color"}
    child = subprocess.Popen([sys.executable, "-c", APP_SIZE_CHILD, str(size_file)], stdin=slave, stdout=slave,
                             stderr=slave, env=env, close_fds=True)
    os.close(slave)
    deadline = time.monotonic() + 60
    while child.poll() is None and time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            try:
                os.read(master, 65536)  # keep the terminal drained so the app never blocks on it
            except OSError:  # the child closed the pty
                break
    os.close(master)
    assert child.wait(30) == 0
    assert size_file.read_text() == "120x40"
