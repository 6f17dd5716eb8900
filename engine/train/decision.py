"""What happens at each step boundary, decided once, from the step number and pending requests.

Between optimizer steps the loop asks one question: evaluate? save (and why)? pause? stop?
is the run finished? `decide()` answers it from plain facts (the `Boundary`: steps done,
epoch, time since the last checkpoint, whether a time budget is spent), the settings
(`Schedule`) and what people asked for (`Requests`, from the UI's flags and
RUN_DIR/control.jsonl, taken through a `RequestInbox`). It is a pure function, so it is tested
from sequences of requests, and its answer is a handful of ints (`Decision.encode`): under
DDP rank 0 decides and broadcasts them, so ranks can never disagree.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.runs.control_channel import CONTROL_FILE, ControlWatcher, apply_request

SAVE_REASONS = ("", "requested", "epoch", "interval")


@dataclass
class TrainControl:
    """Requests from another thread (the UI's engine runner), honoured at step boundaries."""

    stop: threading.Event = field(default_factory=threading.Event)
    pause: threading.Event = field(default_factory=threading.Event)
    save_now: threading.Event = field(default_factory=threading.Event)
    eval_now: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Requests:
    """What was asked for at one boundary. `stop` and `pause` are states; `save` and `eval`
    are one-shot (taking them clears them)."""

    stop: bool = False
    pause: bool = False
    save: bool = False
    eval: bool = False


@dataclass(frozen=True)
class Schedule:
    """The settings that schedule evaluations, checkpoints and the end of a run."""

    total_steps: int | None  # None: a time budget decides when the run ends
    eval_interval: int = 0
    checkpoint_every_steps: int = 0
    checkpoint_every_s: float = 0.0
    epoch_checkpoints: bool = False


@dataclass(frozen=True)
class Boundary:
    """Facts at the boundary after `step` optimizer steps."""

    step: int
    start_step: int  # where this session started: nothing scheduled fires there again
    epoch: float = 0.0
    previous_epoch: float = 0.0  # at the previous boundary
    since_checkpoint_s: float = 0.0
    out_of_time: bool = False  # a budgeted run: another step would run into the reserve
    revisit: bool = False  # deciding again at the same step (after a pause): only requests count


@dataclass(frozen=True)
class Decision:
    evaluate: bool = False
    save: str = ""  # a checkpoint reason (SAVE_REASONS), "" for none
    pause: bool = False
    stop: bool = False  # stop on request (a checkpoint is written, resume continues)
    finished: bool = False  # the run's last step is done (final evaluation and checkpoint follow)

    def encode(self) -> list[int]:
        """As ints, for a broadcast."""
        return [int(self.evaluate), SAVE_REASONS.index(self.save), int(self.pause), int(self.stop),
                int(self.finished)]

    @classmethod
    def decode(cls, values: list[int]) -> Decision:
        evaluate, save, pause, stop, finished = (int(v) for v in values)
        return cls(bool(evaluate), SAVE_REASONS[save], bool(pause), bool(stop), bool(finished))



def decide(boundary: Boundary, requests: Requests, schedule: Schedule) -> Decision:
    """What happens at `boundary` (see the module docstring). A stopped or finished run gets its
    evaluation and checkpoint after the loop, so nothing else is scheduled for it here."""
    b = boundary
    finished = b.out_of_time or (schedule.total_steps is not None and b.step >= schedule.total_steps)
    stop = requests.stop and not finished
    ending = finished or stop
    scheduled = not b.revisit and b.step > b.start_step and not ending
    evaluate = not ending and (requests.eval or (
        scheduled and bool(schedule.eval_interval) and b.step % schedule.eval_interval == 0))
    save = ""
    if not ending and requests.save:
        save = "requested"
    elif scheduled and schedule.epoch_checkpoints and math.floor(b.epoch) > math.floor(b.previous_epoch):
        save = "epoch"
    elif scheduled and schedule.checkpoint_every_steps and b.step % schedule.checkpoint_every_steps == 0:
        save = "interval"
    elif scheduled and schedule.checkpoint_every_s and b.since_checkpoint_s >= schedule.checkpoint_every_s:
        save = "interval"
    return Decision(evaluate, save, requests.pause and not ending, stop, finished)


class RequestInbox:
    """Collects requests from the UI's TrainControl flags and from RUN_DIR/control.jsonl."""

    def __init__(self, control: TrainControl, watcher: ControlWatcher | None = None,
                 log: Callable[[str], None] = lambda text: None) -> None:
        self.control, self.watcher, self.log = control, watcher, log

    def _poll_file(self) -> None:
        if self.watcher is None:
            return
        for request in self.watcher.poll():
            self.log(f"{request} requested through {CONTROL_FILE}")
            apply_request(request, self.control)

    def take(self) -> Requests:
        """The requests pending now; save and eval are cleared as they are taken."""
        self._poll_file()
        c = self.control
        save, evaluate = c.save_now.is_set(), c.eval_now.is_set()
        c.save_now.clear()
        c.eval_now.clear()
        return Requests(stop=c.stop.is_set(), pause=c.pause.is_set(), save=save, eval=evaluate)
