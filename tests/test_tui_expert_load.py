"""The Monitor's expert-load panel: one row per layer, shaded cells, max-violation; it reads at
80x24 for 8 layers x 8 experts and scrolls beyond."""

from textual.widgets import Static

from engine.runs.events import RunFinished, RunStarted, StepMetrics
from engine.runs.run_dir import EventLog
from lightlm_tui.app import make_app
from lightlm_tui.screens.monitor import MonitorScreen
from lightlm_tui.widgets.expert_load import ExpertLoadPanel, render_expert_load, shade
from tui_helpers import wait_for


def skewed_loads(layers: int, experts: int) -> list[list[float]]:
    """Layer i sends a growing share to expert 0; the last expert of odd layers gets nothing."""
    rows = []
    for i in range(layers):
        first = min(0.9, 1.0 / experts + 0.05 * i)
        rest = [(1.0 - first) / (experts - 1)] * (experts - 1)
        if i % 2:
            rest[-1], rest[0] = 0.0, rest[0] + rest[-1]
        rows.append([first, *rest])
    return rows


def write_moe_run(run_dir, layers: int, experts: int) -> None:
    loads = skewed_loads(layers, experts)
    vio = [(max(r) - 1 / experts) * experts for r in loads]
    dead = [sum(1 for x in r if x == 0.0) for r in loads]
    log = EventLog(run_dir)
    log.write(RunStarted(run_dir=str(run_dir), params=1000, total_steps=10, tokens_per_step=64))
    for step in (5, 10):
        log.write(StepMetrics(step=step, epoch=0.1, loss=5.0, lr=1e-3, grad_norm=1.0, tokens_per_s=100.0, mfu=0.1,
                              ram_mb=100.0, run_dir=str(run_dir), aux_loss=0.0213, expert_load=loads,
                              expert_max_violation=vio, expert_dead=dead))
    log.write(RunFinished("completed", 10, 4.9, 1.5, 3.0, run_dir=str(run_dir)))
    log.close()


def panel_text(screen) -> str:
    return str(screen.query_one("#expert-load-text", Static).render())


async def test_expert_load_panel_reads_at_80x24_for_8_layers_of_8_experts(tmp_path):
    write_moe_run(tmp_path / "run", layers=8, experts=8)
    app = make_app(monitor_dir=tmp_path / "run")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, MonitorScreen) and app.screen.view.finished, pilot)
        screen = app.screen
        metrics = str(screen.query_one("#metrics", Static).render())
        assert "+ aux 0.0213" in metrics and "experts   vio" in metrics and "(l)" in metrics
        await pilot.press("l")
        await pilot.pause(0.3)
        panel = screen.query_one("#experts", ExpertLoadPanel)
        assert panel.display and not screen.query_one("#graphs").display
        text = panel_text(screen)
        for layer in range(8):
            assert f"L{layer} " in text
        assert text.count("vio ") == 8 and "dead 1" in text
        # Every row is on screen: heading + 8 layers + legend fit the panel without scrolling,
        # and no row is wider than the panel.
        assert panel.max_scroll_y == 0 and panel.max_scroll_x == 0
        assert panel.region.height >= 10 and panel.region.right <= 80
        await pilot.press("l")  # back to the graphs
        await pilot.pause(0.1)
        assert screen.query_one("#graphs").display and not panel.display


async def test_expert_load_panel_scrolls_beyond_the_screen(tmp_path):
    write_moe_run(tmp_path / "run", layers=24, experts=16)
    app = make_app(monitor_dir=tmp_path / "run")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, MonitorScreen) and app.screen.view.finished, pilot)
        await pilot.press("l")
        await pilot.pause(0.3)
        panel = app.screen.query_one("#experts", ExpertLoadPanel)
        assert "L23 " in panel_text(app.screen)
        assert panel.max_scroll_y > 0  # more layers than rows: it scrolls


async def test_a_dense_run_has_no_expert_panel(tiny_run_config, tmp_path):
    run_dir = tmp_path / "dense"
    log = EventLog(run_dir)
    log.write(RunStarted(run_dir=str(run_dir), params=1000, total_steps=10, tokens_per_step=64))
    log.write(StepMetrics(step=10, epoch=0.1, loss=5.0, lr=1e-3, grad_norm=1.0, tokens_per_s=100.0, mfu=0.1,
                          ram_mb=100.0, run_dir=str(run_dir)))
    log.close()
    app = make_app(monitor_dir=run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, MonitorScreen) and app.screen.view.last, pilot)
        await pilot.press("l")
        await pilot.pause(0.1)
        assert app.screen.query_one("#graphs").display
        assert "experts" not in str(app.screen.query_one("#metrics", Static).render())


def test_cells_are_shaded_by_load_against_the_ideal():
    assert shade(0.0, 0.25)[0] == "·"
    glyphs = [shade(load, 0.25)[0] for load in (0.05, 0.2, 0.25, 0.3, 0.9)]
    assert glyphs == ["░", "▒", "▓", "█", "█"]
    text = render_expert_load([[0.25] * 4, [1.0, 0.0, 0.0, 0.0]], [0.0, 3.0], [0, 3], width=40).plain
    assert "L0 ▓▓▓▓▓▓▓▓▓▓▓▓  vio 0.00" in text
    assert "L1 ███·········  vio 3.00  dead 3" in text


def test_config_side_panel_shows_total_and_active_parameters():
    import dataclasses

    from engine.config import RunConfig
    from engine.model.estimates import active_parameter_count, parameter_count
    from lightlm_tui.screens.config import ConfigScreen

    config = RunConfig()
    moe = dataclasses.replace(config, model=dataclasses.replace(config.model, use_moe=True, moe_num_experts=8,
                                                                moe_active_experts=2))
    text = ConfigScreen(moe).side_text()
    assert f"  {parameter_count(moe.model):,}\n  {active_parameter_count(moe.model):,} active" in text
    assert "active" not in ConfigScreen(config).side_text()
