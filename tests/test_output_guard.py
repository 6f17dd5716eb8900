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
