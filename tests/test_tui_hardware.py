"""The app, driven with Textual's pilot: the hardware screen shows the real checks."""

from textual.widgets import DataTable, Static

from lightlm_tui.app import make_app
from tui_helpers import wait_for




async def test_hardware_screen_shows_every_check():
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_for(lambda: table.row_count > 0, pilot)
        names = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        assert {"python", "torch", "cpu", "ram", "disk"} <= set(names)
        statuses = {str(table.get_row_at(i)[0]) for i in range(table.row_count)}
        assert statuses <= {"ok", "warn", "FAIL"}
        summary = str(app.screen.query_one("#summary", Static).render())
        assert "Ready to train" in summary or "Fix the failed checks" in summary


async def test_recheck_probes_again_and_q_quits(monkeypatch):
    """r goes back to "checking", runs the probe again and shows its new verdict; q exits with 0."""
    import threading

    from engine.machine.hardware import Check, HardwareReport

    reports = [HardwareReport([Check("cpu", "ok", "2 cores", "2 CPU cores.")]),
               HardwareReport([Check("cpu", "ok", "2 cores", "2 CPU cores."),
                               Check("disk", "warn", "1 GiB free", "Little disk space left.")])]
    second_may_finish = threading.Event()

    def probe(*args, **kwargs):
        report = reports.pop(0)
        if not reports:  # the re-check: held until the test has seen "checking"
            assert second_may_finish.wait(30)
        return report

    monkeypatch.setattr("engine.machine.hardware.probe", probe)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        summary = lambda: str(app.screen.query_one("#summary", Static).render())
        table = app.screen.query_one(DataTable)
        await wait_for(lambda: summary().startswith("Ready to train.  1 ok, 0 warn"), pilot)
        assert table.row_count == 1
        await pilot.press("r")
        await wait_for(lambda: summary().startswith("Checking this machine"), pilot)
        second_may_finish.set()
        await wait_for(lambda: summary().startswith("Ready to train (see the warnings).  1 ok, 1 warn"), pilot)
        assert table.row_count == 2 and str(table.get_row_at(1)[1]) == "disk"
        assert "warn" in str(table.get_row_at(1)[0])
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0 and not reports


async def test_findings_wrap_instead_of_being_cut_off_at_80_columns():
    from engine.machine.hardware import Check, HardwareReport

    long = "A deliberately long finding that cannot fit in the space an 80-column terminal leaves for it."
    report = HardwareReport([Check("gpu", "warn", "none", long), Check("cpu", "ok", "2 cores", "2 CPU cores.")])
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        table = screen.query_one(DataTable)
        await wait_for(lambda: table.row_count > 0, pilot)
        screen.show_report(report)
        await pilot.pause()
        finding = str(table.get_row_at(0)[2])
        assert finding.replace("\n", " ") == long
        assert all(len(line) <= 80 - 6 - 22 - 8 for line in finding.splitlines())
        assert "warn" in str(table.get_row_at(0)[0])


async def test_question_mark_lists_the_screen_keys():
    from lightlm_tui.dialogs.help import HelpDialog

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.screen.query_one(DataTable).row_count > 0, pilot)
        await pilot.press("question_mark")
        await wait_for(lambda: isinstance(app.screen, HelpDialog), pilot)
        text = str(app.screen.query_one("#help-keys", Static).render())
        assert "Continue" in text and "Re-check" in text and "Runs" in text and "Quit" in text
        await pilot.press("escape")
        await wait_for(lambda: not isinstance(app.screen, HelpDialog), pilot)


async def test_enter_pressed_while_checking_continues_once_the_checks_end(monkeypatch):
    """The key is kept, not dropped: the screen says so, and moves on when the probe answers."""
    import threading

    from engine.machine.hardware import Check, HardwareReport
    from lightlm_tui.screens.config import ConfigScreen
    from lightlm_tui.screens.hardware import HardwareScreen

    may_finish = threading.Event()

    def probe(*args, **kwargs):
        assert may_finish.wait(30)
        return HardwareReport([Check("cpu", "ok", "2 cores", "2 CPU cores.")])

    monkeypatch.setattr("engine.machine.hardware.probe", probe)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        summary = lambda: str(app.screen.query_one("#summary", Static).render())
        await wait_for(lambda: summary().startswith("Checking this machine"), pilot)
        await pilot.press("enter")
        await wait_for(lambda: "continues once the checks end" in summary(), pilot)
        assert isinstance(app.screen, HardwareScreen)
        may_finish.set()
        await wait_for(lambda: isinstance(app.screen, ConfigScreen), pilot)
